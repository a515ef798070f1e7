"""Report selectors over hand-made rollups, and `manage.py cost summary|breakdown`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from billing import reports
from billing.models import UsageRollup
from billing.periods import period_bounds
from billing.reports import (
    BreakdownRow,
    RoleTaskCost,
    Spend,
    month_days,
    role_cost_per_task,
    savings,
    spend_breakdown,
    spend_daily,
    spend_report,
    spend_totals,
    tasks_top,
)
from tests.factories import CatalogModelFactory, RoleFactory, TaskFactory, UsageFactory

NOW = datetime(2026, 6, 17, 15, 30, tzinfo=UTC)  # a Wednesday
JUNE = (date(2026, 6, 1), date(2026, 7, 1))
# An OpenRouter-style price with more digits than a float or a 28-digit context keeps.
THIRD = Decimal("0.00000008333333333333334")


def rollup(day: date, role, model, provider: str = "openrouter", person=None, **measures):
    return UsageRollup.objects.create(
        day=day, role=role, model=model, provider=provider, person=person, **measures
    )


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def june():
    """Rollups of four roles in June 2026 (and rows either side), and tasks."""
    coder = RoleFactory(slug="coder", name="Coder")
    writer = RoleFactory(slug="writer", name="Writer")
    reviewer = RoleFactory(slug="reviewer", name="Reviewer")  # spend, no task in June
    idle = RoleFactory(slug="idle", name="Idle")  # a task in June, no spend
    claude = CatalogModelFactory(slug="anthropic/claude", name="Claude")
    gpt = CatalogModelFactory(slug="openai/gpt", name="GPT")
    # Without UserFactory: it hashes a password, which takes most of a second.
    alice = get_user_model().objects.create(username="alice", first_name="Alice", last_name="Adams")
    bob = get_user_model().objects.create(username="bob")

    rollup(
        date(2026, 6, 1), coder, claude, person=alice, tasks=1,
        calls=3, failed_calls=1, input_tokens=3_000, output_tokens=30,
        cached_input_tokens=500, cache_write_tokens=100, reasoning_tokens=7,
        cost=THIRD * 3, reported_cost=Decimal("0.00000025"),
        cache_savings=Decimal("0.00000001"),
    )  # fmt: skip
    rollup(
        date(2026, 6, 17), coder, gpt, "openai", bob, tasks=1,
        calls=1, estimated_calls=1, input_tokens=500_000, output_tokens=2_000,
        cost=Decimal("1.5"),
    )  # fmt: skip
    rollup(
        date(2026, 6, 17), writer, claude, tasks=1,
        calls=2, unpriced_calls=1, input_tokens=40, output_tokens=4,
        cost=Decimal("0.25"), reported_cost=Decimal("0.3"),
        cache_savings=Decimal("0.00000000000000000000001"),
    )  # fmt: skip
    rollup(
        date(2026, 6, 30), writer, gpt, "openai", alice,
        calls=1, input_tokens=10, output_tokens=1, cost=Decimal("0.1"),
    )  # fmt: skip
    rollup(
        date(2026, 6, 10), reviewer, claude,
        calls=1, input_tokens=20, output_tokens=2, cost=Decimal("0.05"),
    )  # fmt: skip
    # Either side of June: must not count.
    rollup(date(2026, 5, 31), coder, claude, calls=9, cost=Decimal("100"))
    rollup(date(2026, 7, 1), writer, claude, calls=9, cost=Decimal("100"))

    # Costs 10 and 9.5: text order ("9.5" > "10") would rank them wrongly.
    def task(role, cost: str, created_at: datetime):
        return TaskFactory(role=role, cost=Decimal(cost), created_at=created_at, created_by=alice)

    tasks = {
        "big": task(coder, "10", at(date(2026, 6, 2))),
        "second": task(coder, "9.5", at(date(2026, 6, 17))),
        "writer": task(writer, "0.35", at(date(2026, 6, 20))),
        "idle": task(idle, "0", at(date(2026, 6, 5))),
    }
    task(coder, "100", datetime(2026, 7, 1, 0, tzinfo=UTC))
    task(coder, "100", datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC))
    return tasks


JUNE_TOTALS = Spend(
    calls=8,
    failed_calls=1,
    estimated_calls=1,
    unpriced_calls=1,
    input_tokens=503_070,
    output_tokens=2_037,
    cached_input_tokens=500,
    cache_write_tokens=100,
    reasoning_tokens=7,
    cost=Decimal("1.90000025000000000000002"),
    reported_cost=Decimal("0.30000025"),
    cache_savings=Decimal("0.00000001000000000000001"),
)


# --- selectors --------------------------------------------------------------------------


@pytest.mark.django_db
def test_totals_are_exact_and_count_unpriced_estimated_and_failed_calls(june) -> None:
    assert spend_totals(start=JUNE[0], end=JUNE[1]) == JUNE_TOTALS


@pytest.mark.django_db
def test_breakdown_by_role_is_exact_and_most_expensive_first(june) -> None:
    rows = spend_breakdown(start=JUNE[0], end=JUNE[1], by="role")

    assert [(r.key, r.label, r.spend.calls, r.spend.cost) for r in rows] == [
        ("coder", "Coder", 4, Decimal("1.50000025000000000000002")),
        ("writer", "Writer", 3, Decimal("0.35")),
        ("reviewer", "Reviewer", 1, Decimal("0.05")),
    ]
    assert rows[1].spend.unpriced_calls == 1
    assert (rows[0].spend.input_tokens, rows[0].spend.output_tokens) == (503_000, 2_030)


@pytest.mark.django_db
def test_breakdown_by_model_provider_and_person(june) -> None:
    def summary(by):
        return [
            (r.key, r.label, r.spend.cost)
            for r in spend_breakdown(start=JUNE[0], end=JUNE[1], by=by)
        ]

    assert summary("model") == [
        ("openai/gpt", "GPT", Decimal("1.6")),
        ("anthropic/claude", "Claude", Decimal("0.30000025000000000000002")),
    ]
    assert summary("provider") == [
        ("openai", "openai", Decimal("1.6")),
        ("openrouter", "openrouter", Decimal("0.30000025000000000000002")),
    ]
    assert summary("person") == [
        ("bob", "bob", Decimal("1.5")),
        ("", "No one (system)", Decimal("0.30")),
        ("alice", "Alice Adams", Decimal("0.10000025000000000000002")),
    ]


@pytest.mark.django_db
def test_every_breakdown_adds_up_to_the_totals(june) -> None:
    for by in reports.DIMENSIONS:
        rows = spend_breakdown(start=JUNE[0], end=JUNE[1], by=by)
        assert reports.spend_sum(row.spend for row in rows) == JUNE_TOTALS, by


@pytest.mark.django_db
def test_daily_trend_has_one_point_per_day_zero_filled(june) -> None:
    daily = spend_daily(start=JUNE[0], end=JUNE[1])

    assert len(daily) == 30
    assert daily[0].day == date(2026, 6, 1)
    assert daily[-1].day == date(2026, 6, 30)
    costs = {point.day.day: point.spend.cost for point in daily if point.spend.cost}
    assert costs == {
        1: Decimal("0.00000025000000000000002"),
        10: Decimal("0.05"),
        17: Decimal("1.75"),
        30: Decimal("0.1"),
    }
    assert daily[1].spend == Spend()


@pytest.mark.django_db
def test_top_tasks_are_ordered_by_exact_cost_and_limited(june) -> None:
    top = tasks_top(start=JUNE[0], end=JUNE[1], limit=3)

    assert [(t.task_id, t.cost) for t in top] == [
        (june["big"].pk, Decimal("10")),
        (june["second"].pk, Decimal("9.5")),
        (june["writer"].pk, Decimal("0.35")),
    ]
    assert top[0].role_slug == "coder"
    assert top[0].title == june["big"].prompt


@pytest.mark.django_db
def test_all_tasks_of_the_period_come_most_expensive_first(june) -> None:
    tasks = list(reports.tasks_all(start=JUNE[0], end=JUNE[1]))

    assert [t.cost for t in tasks] == [
        Decimal("10"),
        Decimal("9.5"),
        Decimal("0.35"),
        Decimal("0"),
    ]
    assert tasks[0].as_record()["cost_usd"] == "10"
    assert list(tasks[0].as_record()) == list(reports.TASK_COLUMNS)


@pytest.mark.django_db
def test_top_tasks_count_tasks_by_their_local_creation_day(june, settings) -> None:
    settings.TIME_ZONE = "America/New_York"
    # 1 July 00:00 UTC is still 30 June in New York; 31 May 23:59 UTC is 31 May there.
    top = tasks_top(start=JUNE[0], end=JUNE[1], limit=1)

    assert [t.cost for t in top] == [Decimal("100")]


@pytest.mark.django_db
def test_cost_per_task_divides_role_spend_by_the_roles_tasks(june) -> None:
    assert role_cost_per_task(start=JUNE[0], end=JUNE[1]) == [
        RoleTaskCost(
            role_slug="coder",
            role_name="Coder",
            tasks=2,
            cost=Decimal("1.50000025000000000000002"),
            unpriced_calls=0,
            cost_per_task=Decimal("0.75000012500000000000001"),
        ),
        RoleTaskCost("writer", "Writer", 1, Decimal("0.35"), 1, Decimal("0.35")),
        # Spend in June from a task whose first call closed in May: no task counted.
        RoleTaskCost("reviewer", "Reviewer", 0, Decimal("0.05"), 0, None),
        # The idle role's task never called a provider: not a task that cost anything.
    ]


@pytest.mark.django_db
def test_savings_are_cache_savings_and_no_helper_savings_without_helper_rows(june) -> None:
    found = savings(start=JUNE[0], end=JUNE[1])

    assert found.cache == Decimal("0.00000001000000000000001")
    assert found.local_helper == Decimal("0")
    assert found.total == found.cache


@pytest.mark.django_db
def test_spend_report_holds_what_the_selectors_return(june, django_assert_max_num_queries) -> None:
    with django_assert_max_num_queries(10):
        report = spend_report(start=JUNE[0], end=JUNE[1], top=2)

    assert report.totals == JUNE_TOTALS
    assert report.by_role == spend_breakdown(start=JUNE[0], end=JUNE[1], by="role")
    assert report.by_model == spend_breakdown(start=JUNE[0], end=JUNE[1], by="model")
    assert report.by_provider == spend_breakdown(start=JUNE[0], end=JUNE[1], by="provider")
    assert report.by_person == spend_breakdown(start=JUNE[0], end=JUNE[1], by="person")
    assert report.daily == spend_daily(start=JUNE[0], end=JUNE[1])
    assert [t.task_id for t in report.top_tasks] == [june["big"].pk, june["second"].pk]
    assert report.role_task_costs == role_cost_per_task(start=JUNE[0], end=JUNE[1])
    assert report.savings.cache == JUNE_TOTALS.cache_savings
    assert not report.is_empty


@pytest.mark.django_db
def test_an_empty_period_gives_an_empty_report() -> None:
    report = spend_report(start=date(2030, 2, 1), end=date(2030, 3, 1))

    assert report.is_empty
    assert report.totals == Spend()
    assert report.by_role == report.by_person == report.top_tasks == []
    assert report.role_task_costs == []
    assert [p.spend for p in report.daily] == [Spend()] * 28


@pytest.mark.django_db
def test_sql_and_python_aggregation_agree(june) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("The SQL path runs on PostgreSQL only (SQLite keeps money as text).")
    rows = (
        UsageRollup.objects.filter(day__gte=JUNE[0], day__lt=JUNE[1])
        .order_by()
        .values_list(*(reports._GROUP_COLUMNS[d] for d in reports.DIMENSIONS), *reports.MEASURES)
    )
    in_python = reports._grouped_in_python(rows, reports.DIMENSIONS)
    in_sql = reports._grouped_in_sql(start=JUNE[0], end=JUNE[1], dimensions=reports.DIMENSIONS)

    assert in_sql == in_python


def test_breakdown_rows_export_money_as_exact_text() -> None:
    row = BreakdownRow(key="coder", label="Coder", spend=Spend(calls=2, cost=THIRD * 3))

    record = row.as_record(by="role")

    assert list(record) == reports.breakdown_columns(by="role")
    assert record["role"] == "coder"
    assert record["cost_usd"] == "0.00000025000000000000002"
    assert record["reported_cost_usd"] == "0"


@pytest.mark.parametrize(
    ("month", "days"),
    [
        ("2026-06", (date(2026, 6, 1), date(2026, 7, 1))),
        ("2026-02", (date(2026, 2, 1), date(2026, 3, 1))),
        ("2026-12", (date(2026, 12, 1), date(2027, 1, 1))),
    ],
)
def test_month_days(month: str, days: tuple[date, date]) -> None:
    assert month_days(month=month) == days


@pytest.mark.parametrize(
    ("month", "message"),
    [
        ("2026-13", "There is no month 13"),
        ("2026-00", "There is no month 00"),
        ("abc", "Enter a month as YYYY-MM"),
        ("2026-6", "Enter a month as YYYY-MM"),
        ("0000-01", "The year 0 is out of range: use 1900 to 9998."),
        ("1899-12", "out of range"),
        ("9999-12", "out of range"),
    ],
)
def test_month_days_rejects_bad_months_clearly(month: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        month_days(month=month)


def test_selectors_reject_unknown_breakdowns_and_empty_ranges() -> None:
    with pytest.raises(ValueError, match="Unknown breakdown 'colour'"):
        spend_breakdown(start=JUNE[0], end=JUNE[1], by="colour")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not before"):
        spend_totals(start=JUNE[1], end=JUNE[0])


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


# --- manage.py cost summary | breakdown ---------------------------------------------------


def cost(*args: str, **options) -> str:
    out = io.StringIO()
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        call_command("cost", *args, stdout=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_cost_summary_table_has_rounded_costs_a_total_row_and_the_totals(june) -> None:
    lines = cost("summary", "--period", "month").splitlines()

    assert lines[0] == "Spend by role, month from 2026-06-01 to 2026-07-01 (UTC)"
    rows = [line.split() for line in lines[1:]]
    assert rows[0] == [
        "Role", "Calls", "Unpriced", "Input", "tokens", "Output", "tokens", "Cache", "hit",
        "Cost", "Helper", "tokens", "Helper", "savings",
    ]  # fmt: skip
    # 500 of 503,000 input tokens cached: 0.0994 %.
    assert rows[2] == ["coder", "4", "0", "503,000", "2,030", "0.1%", "$1.500000", "0", "$0.000000"]
    assert rows[3] == ["writer", "3", "1", "50", "5", "0.0%", "$0.350000", "0", "$0.000000"]
    assert rows[4] == ["reviewer", "1", "0", "20", "2", "0.0%", "$0.050000", "0", "$0.000000"]
    assert rows[6] == ["Total", "8", "1", "503,070", "2,037", "0.1%", "$1.900000", "0", "$0.000000"]
    totals = "\n".join(lines[8:])
    assert "Failed calls (not billed)  1" in totals
    assert "Estimated calls            1" in totals
    assert "Cache savings              $0.000000" in totals
    assert "Cache hit ratio            0.1 %" in totals
    assert "Provider-reported cost     $0.300000" in totals
    assert "Local helper savings       $0.000000" in totals
    assert lines[-1] == (
        "Warning: 1 calls used a model with no price; their cost is unknown and not in the "
        "cost above."
    )


@pytest.mark.django_db
def test_cost_summary_csv_has_exact_costs(june) -> None:
    rows = list(csv.DictReader(io.StringIO(cost("summary", "--format", "csv"))))

    assert [(row["role"], row["name"], row["calls"], row["cost_usd"]) for row in rows] == [
        ("coder", "Coder", "4", "1.50000025000000000000002"),
        ("writer", "Writer", "3", "0.35"),
        ("reviewer", "Reviewer", "1", "0.05"),
    ]
    assert rows[1]["unpriced_calls"] == "1"


@pytest.mark.django_db
def test_cost_summary_json_has_exact_costs_as_strings_and_a_total(june) -> None:
    document = json.loads(cost("summary", "--period", "month", "--format", "json"))

    assert document["period"] == "month"
    assert document["start"] == "2026-06-01T00:00:00+00:00"
    assert document["end"] == "2026-07-01T00:00:00+00:00"
    assert document["roles"][0] == {
        "role": "coder",
        "name": "Coder",
        "calls": 4,
        "failed_calls": 1,
        "estimated_calls": 1,
        "unpriced_calls": 0,
        "input_tokens": 503_000,
        "output_tokens": 2_030,
        "cached_input_tokens": 500,
        "cache_write_tokens": 100,
        "reasoning_tokens": 7,
        "helper_calls": 0,
        "helper_unpriced_calls": 0,
        "helper_input_tokens": 0,
        "helper_output_tokens": 0,
        "cost_usd": "1.50000025000000000000002",
        "reported_cost_usd": "0.00000025",
        "cache_savings_usd": "0.00000001",
        "helper_savings_usd": "0",
        "cache_hit_ratio": "0.000994",
    }
    assert document["total"]["calls"] == 8
    assert document["total"]["unpriced_calls"] == 1
    assert document["total"]["cost_usd"] == "1.90000025000000000000002"


@pytest.mark.django_db
def test_cost_breakdown_by_model_in_each_format(june) -> None:
    table = cost("breakdown", "--by", "model").splitlines()
    assert table[0] == "Spend by model, month from 2026-06-01 to 2026-07-01 (UTC)"
    assert table[3].split() == [
        "openai/gpt", "2", "0", "500,010", "2,001", "0.0%", "$1.600000", "0", "$0.000000"
    ]  # fmt: skip
    assert table[-1].split() == [
        "Total", "8", "1", "503,070", "2,037", "0.1%", "$1.900000", "0", "$0.000000"
    ]  # fmt: skip

    rows = list(csv.DictReader(io.StringIO(cost("breakdown", "--by", "model", "--format", "csv"))))
    assert [(r["model"], r["cost_usd"]) for r in rows] == [
        ("openai/gpt", "1.6"),
        ("anthropic/claude", "0.30000025000000000000002"),
    ]

    document = json.loads(cost("breakdown", "--by", "person", "--format", "json"))
    assert document["by"] == "person"
    assert [(r["person"], r["cost_usd"]) for r in document["rows"]] == [
        ("bob", "1.5"),
        ("", "0.3"),
        ("alice", "0.10000025000000000000002"),
    ]
    assert document["total"]["cost_usd"] == "1.90000025000000000000002"


@pytest.mark.django_db
def test_cost_breakdown_for_the_day_and_week_leaves_out_other_days(june) -> None:
    # NOW is 17 June: its day, and its week (15 to 21 June), hold the two 17 June rollups.
    for period in ("day", "week"):
        document = json.loads(
            cost("breakdown", "--period", period, "--by", "provider", "--format", "json")
        )
        assert [(r["provider"], r["cost_usd"]) for r in document["rows"]] == [
            ("openai", "1.5"),
            ("openrouter", "0.25"),
        ]


@pytest.mark.django_db
def test_cost_summary_with_no_spend_prints_a_zero_total() -> None:
    lines = cost("summary").splitlines()

    # No input tokens: no cache hit ratio to show.
    assert lines[4].split() == ["Total", "0", "0", "0", "0", "—", "$0.000000", "0", "$0.000000"]
    assert "Cache hit ratio            —" in lines
    assert "Warning" not in lines[-1]


@pytest.mark.django_db
def test_cost_csv_with_no_spend_is_a_header_row() -> None:
    assert cost("breakdown", "--by", "person", "--format", "csv").splitlines() == [
        ",".join(reports.breakdown_columns(by="person"))
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("breakdown", "--by", "colour"), "invalid choice: 'colour'"),
        (("summary", "--period", "year"), "invalid choice: 'year'"),
        (("summary", "--format", "xml"), "invalid choice: 'xml'"),
        (("refund",), "invalid choice: 'refund'"),
    ],
)
def test_cost_rejects_unknown_values_clearly(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        cost(*args)


@pytest.mark.django_db
def test_cost_rejects_unknown_values_passed_as_keywords() -> None:
    with pytest.raises(CommandError, match="Unknown format 'xml'"):
        cost("summary", output_format="xml")
    with pytest.raises(CommandError, match="Unknown period 'year'"):
        cost("summary", period="year")


def test_cost_requires_a_subcommand() -> None:
    with pytest.raises(CommandError, match="subcommand"):
        call_command("cost")


# --- cost alert and cost rebuild-rollups ---------------------------------------------------


@pytest.mark.django_db
def test_cost_alert_command_alerts_only_above_the_threshold(settings, mailoutbox) -> None:
    from billing.models import Alert

    settings.ROSTER_ALERT_EMAILS = ["finance@example.com"]
    UsageFactory(cost=Decimal("3.50"))
    out = StringIO()

    call_command("cost", "alert", "--threshold", "5.00", "--period", "month", stdout=out)
    assert "Below threshold: $3.500000 spent this month" in out.getvalue()
    assert not Alert.objects.exists()

    UsageFactory(cost=Decimal("2"))
    call_command("cost", "alert", "--threshold", "5.00", "--period", "month", stdout=out)
    assert "ALERT: $5.500000 spent this month" in out.getvalue()
    assert Alert.objects.get().kind == "manual"
    assert len(mailoutbox) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("threshold", "message"), [("abc", "must be an amount"), ("-1", "above zero")]
)
def test_cost_alert_command_refuses_bad_thresholds(threshold: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("cost", "alert", "--threshold", threshold, stdout=StringIO())


@pytest.mark.django_db
def test_cost_rebuild_rollups_reports_and_repairs_differences() -> None:
    from billing.rollups import rollup_add

    usage = UsageFactory(cost=Decimal("0.25"))
    rollup_add(usage=usage, first_of_task=True)
    out = StringIO()
    call_command("cost", "rebuild-rollups", "--check", stdout=out)
    assert "0 differences" in out.getvalue()

    UsageRollup.objects.update(cost=Decimal("1"))
    with pytest.raises(CommandError, match="differ from the ledger"):
        call_command("cost", "rebuild-rollups", "--check", stdout=StringIO())
    call_command("cost", "rebuild-rollups", stdout=out)
    assert UsageRollup.objects.get().cost == Decimal("0.25")
