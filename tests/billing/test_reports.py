"""Spend reports and `manage.py cost summary`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command

from billing.models import UsageStatus
from billing.periods import period_bounds
from billing.reports import RoleSpend, spend_by_role
from tests.factories import RoleFactory, TaskFactory, UsageFactory

NOW = datetime(2026, 6, 17, 15, 30, tzinfo=UTC)  # a Wednesday
# An OpenRouter-style price with more digits than a float or a 28-digit context keeps.
THIRD = Decimal("0.00000008333333333333334")


def usage(role, *, cost: Decimal, at: datetime = NOW, **fields):
    return UsageFactory(task=TaskFactory(role=role), cost=cost, created_at=at, **fields)


@pytest.fixture
def ledger():
    """Two roles' calls in June 2026, and rows that must not count."""
    coder = RoleFactory(slug="coder", name="Coder")
    writer = RoleFactory(slug="writer", name="Writer")
    for _ in range(3):
        usage(coder, cost=THIRD, input_tokens=1_000, output_tokens=10)
    usage(
        coder,
        cost=Decimal("1.5"),
        input_tokens=500_000,
        output_tokens=2_000,
        status=UsageStatus.ESTIMATED,
    )
    usage(writer, cost=Decimal("0.25"), input_tokens=40, output_tokens=4)
    # Not billed, or not in June:
    usage(coder, cost=Decimal("100"), status=UsageStatus.FAILED)
    usage(coder, cost=Decimal("100"), status=UsageStatus.PENDING)
    usage(writer, cost=Decimal("100"), at=datetime(2026, 7, 1, tzinfo=UTC))
    usage(writer, cost=Decimal("100"), at=datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC))
    return coder, writer


JUNE = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))


@pytest.mark.django_db
def test_spend_by_role_sums_exactly_and_counts_only_billed_rows_in_period(ledger) -> None:
    report = spend_by_role(start=JUNE[0], end=JUNE[1])

    assert report == [
        RoleSpend(
            role_slug="coder",
            role_name="Coder",
            calls=4,
            input_tokens=503_000,
            output_tokens=2_030,
            cost=Decimal("1.50000025000000000000002"),
        ),
        RoleSpend(
            role_slug="writer",
            role_name="Writer",
            calls=1,
            input_tokens=40,
            output_tokens=4,
            cost=Decimal("0.25"),
        ),
    ]


@pytest.mark.django_db
def test_spend_by_role_is_empty_without_billed_calls() -> None:
    assert spend_by_role(start=JUNE[0], end=JUNE[1]) == []


# --- period_bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("day", datetime(2026, 6, 17), datetime(2026, 6, 18)),
        ("week", datetime(2026, 6, 15), datetime(2026, 6, 22)),  # Monday to Monday
        ("month", datetime(2026, 6, 1), datetime(2026, 7, 1)),
    ],
)
def test_period_bounds_are_local_midnights(period: str, start: datetime, end: datetime) -> None:
    assert period_bounds(period=period, now=NOW, tz=UTC) == (
        start.replace(tzinfo=UTC),
        end.replace(tzinfo=UTC),
    )


def test_period_bounds_use_the_local_calendar() -> None:
    new_york = ZoneInfo("America/New_York")
    # 02:00 UTC on 1 March is still the evening of 28 February in New York.
    start, end = period_bounds(period="month", now=datetime(2026, 3, 1, 2, tzinfo=UTC), tz=new_york)

    assert (start, end) == (
        datetime(2026, 2, 1, tzinfo=new_york),
        datetime(2026, 3, 1, tzinfo=new_york),
    )
    assert start.utcoffset() == timedelta(hours=-5)


def test_a_day_with_a_dst_change_is_23_hours_long() -> None:
    london = ZoneInfo("Europe/London")
    start, end = period_bounds(period="day", now=datetime(2026, 3, 29, 12, tzinfo=UTC), tz=london)

    # Subtracting in UTC: Python subtracts two datetimes of one zone by wall clock.
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)


def test_period_bounds_cross_the_year_and_reject_unknown_periods() -> None:
    december = datetime(2026, 12, 31, 23, tzinfo=UTC)

    assert period_bounds(period="month", now=december, tz=UTC)[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="Unknown period 'year'"):
        period_bounds(period="year", now=december, tz=UTC)


# --- manage.py cost summary ---------------------------------------------------------------


def cost(*args: str) -> str:
    out = io.StringIO()
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command("cost", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_cost_summary_table_has_rounded_costs_and_a_total_row(ledger) -> None:
    lines = cost("summary", "--period", "month").splitlines()

    assert lines[0] == "Spend by role, month from 2026-06-01 to 2026-07-01 (UTC)"
    rows = [line.split() for line in lines[1:]]
    assert rows[0] == ["Role", "Calls", "Input", "tokens", "Output", "tokens", "Cost"]
    assert rows[2] == ["coder", "4", "503,000", "2,030", "$1.500000"]
    assert rows[3] == ["writer", "1", "40", "4", "$0.250000"]
    assert rows[5] == ["Total", "5", "503,040", "2,034", "$1.750000"]


@pytest.mark.django_db
def test_cost_summary_csv_has_exact_costs(ledger) -> None:
    rows = list(csv.DictReader(io.StringIO(cost("summary", "--format", "csv"))))

    assert [(row["role"], row["calls"], row["cost_usd"]) for row in rows] == [
        ("coder", "4", "1.50000025000000000000002"),
        ("writer", "1", "0.25"),
    ]


@pytest.mark.django_db
def test_cost_summary_json_has_exact_costs_as_strings_and_a_total(ledger) -> None:
    document = json.loads(cost("summary", "--period", "month", "--format", "json"))

    assert document["period"] == "month"
    assert document["start"] == "2026-06-01T00:00:00+00:00"
    assert document["roles"][0] == {
        "role": "coder",
        "role_name": "Coder",
        "calls": 4,
        "input_tokens": 503_000,
        "output_tokens": 2_030,
        "cost_usd": "1.50000025000000000000002",
    }
    assert document["total"] == {
        "calls": 5,
        "input_tokens": 503_040,
        "output_tokens": 2_034,
        "cost_usd": "1.75000025000000000000002",
    }


@pytest.mark.django_db
def test_cost_summary_for_the_day_leaves_out_earlier_days(ledger) -> None:
    coder = ledger[0]
    usage(coder, cost=Decimal("7"), at=NOW - timedelta(days=1))

    document = json.loads(cost("summary", "--period", "day", "--format", "json"))

    assert document["total"]["cost_usd"] == "1.75000025000000000000002"


@pytest.mark.django_db
def test_cost_summary_with_no_spend_prints_a_zero_total() -> None:
    lines = cost("summary").splitlines()

    assert lines[-1].split() == ["Total", "0", "0", "0", "$0.000000"]


def test_cost_requires_a_subcommand() -> None:
    with pytest.raises(CommandError, match="subcommand"):
        call_command("cost")
