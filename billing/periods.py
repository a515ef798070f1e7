"""Calendar periods (day, ISO week from Monday, calendar month) in the office's time zone.

Budgets, rollups and reports all cut time the same way, here. Periods are half-open:
[start, end), with local midnights as boundaries.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from django.conf import settings

PERIODS = ("day", "week", "month")


def office_tz() -> tzinfo:
    """The time zone days, weeks and months are counted in (ROSTER_TIME_ZONE)."""
    return ZoneInfo(settings.TIME_ZONE)


def local_day(at: datetime, tz: tzinfo | None = None) -> date:
    """The local calendar date of an aware datetime."""
    return at.astimezone(tz or office_tz()).date()


def period_days(*, period: str, day: date) -> tuple[date, date]:
    """The first local day of the period containing `day`, and the first day after it.

    Raises ValueError for an unknown period.
    """
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        first = day - timedelta(days=day.weekday())
        return first, first + timedelta(weeks=1)
    if period == "month":
        first = day.replace(day=1)
        return first, (first + timedelta(days=32)).replace(day=1)
    raise ValueError(f"Unknown period {period!r}; expected one of {', '.join(PERIODS)}.")


def period_bounds(*, period: str, now: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The [start, end) of the day, ISO week (from Monday) or month containing `now`.

    Boundaries are local midnights in `tz`, returned as aware datetimes; a period spanning
    a daylight-saving change is an hour shorter or longer, as the calendar says. Raises
    ValueError for an unknown period.
    """
    first, after = period_days(period=period, day=local_day(now, tz))
    return local_midnight(first, tz), local_midnight(after, tz)


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The aware datetime of a local day's start."""
    # Built from the date, not by adding timedeltas to an aware datetime, so that DST
    # shifts land on the right wall-clock midnight.
    return datetime.combine(day, time.min, tzinfo=tz)
