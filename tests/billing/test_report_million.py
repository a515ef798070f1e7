"""A million ledger rows in one month: the report (over rollups) must equal a raw SQL SUM
over the ledger to the last digit.

PostgreSQL only: SQL SUM over money is exact on `numeric`, the reference here; SQLite
keeps money as text, which its SUM reads as floats. The rows are generated inside
PostgreSQL by bench/report_bench.py's helpers (INSERT ... SELECT over generate_series,
the fastest bulk path: no million rows through a Python client). Rollups are summed from
the ledger in SQL too, and billing.rollups.rollups_rebuild (the app's reference, about
60 us a row in Python) checks them exactly on the month's edge days and its
daylight-saving day, which keeps the test well under a minute.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection

from bench.report_bench import is_superuser, ledger_fill, office_create, rollups_fill
from billing.periods import local_midnight, office_tz
from billing.reports import spend_report
from billing.rollups import rollups_rebuild
from office.fields import decimal_text

pytestmark = [
    pytest.mark.skipif(
        not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="Needs PostgreSQL: the reference is an exact SQL SUM over money, and "
        "SQLite's SUM over text money is a float.",
    ),
    pytest.mark.django_db,
]

CALLS = 1_000_000
TIME_ZONE = "Europe/Berlin"  # March 2026 has its spring-forward day (the 29th) there
MONTH = (date(2026, 3, 1), date(2026, 4, 1))
BILLED = "status IN ('settled', 'estimated') AND created_at >= %s AND created_at < %s"
BILLED_ROWS = f"SELECT * FROM billing_usage WHERE {BILLED}"

LEDGER_TOTALS = f"""
    SELECT COUNT(*),
           COUNT(*) FILTER (WHERE basis = 'estimated'),
           COUNT(*) FILTER (WHERE basis = 'unpriced'),
           SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens),
           SUM(cache_write_tokens + cache_write_1h_tokens), SUM(reasoning_tokens),
           SUM(cost), COALESCE(SUM(reported_cost), 0),
           SUM(CASE WHEN price_input_cache_read < price_prompt
                    THEN cached_input_tokens * (price_prompt - price_input_cache_read)
                    ELSE 0 END)
      FROM billing_usage
     WHERE {BILLED}
"""


def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def test_monthly_report_equals_a_raw_sum_over_a_million_ledger_rows(settings) -> None:
    settings.TIME_ZONE = TIME_ZONE
    began = time.perf_counter()
    tz = office_tz()
    start, end = (local_midnight(day, tz) for day in MONTH)

    office = office_create(roles=6, people=20, models=6, prefix="million")
    # Tasks from six hours before the month to six hours after it: the calls either
    # side of its local midnights must stay out.
    fill = ledger_fill(
        office=office,
        calls=CALLS,
        calls_per_task=5,
        since=start - timedelta(hours=6),
        until=end + timedelta(hours=6),
        seed=0.5,
        # Five foreign keys a row, checked at the end of the test, would add 16 s; the
        # generated ids come from the rows made above.
        check_foreign_keys=not is_superuser(),
    )
    assert fill.calls == CALLS
    filled = time.perf_counter()
    rollups_fill(start=MONTH[0] - timedelta(days=1), end=MONTH[1] + timedelta(days=1))
    for day in (date(2026, 2, 28), MONTH[0], date(2026, 3, 29), date(2026, 3, 31)):
        check = rollups_rebuild(start=day, end=day + timedelta(days=1), dry_run=True)
        assert check.differences == [], day
        assert check.ledger_rows > 5_000, day
    rolled = time.perf_counter()

    report = spend_report(start=MONTH[0], end=MONTH[1])
    reported = time.perf_counter()

    (ledger,) = fetch(LEDGER_TOTALS, [start, end])
    (failed,) = fetch(
        "SELECT COUNT(*) FROM billing_usage "
        "WHERE status = 'failed' AND created_at >= %s AND created_at < %s",
        [start, end],
    )
    totals = report.totals
    assert (
        totals.calls,
        totals.estimated_calls,
        totals.unpriced_calls,
        totals.input_tokens,
        totals.output_tokens,
        totals.cached_input_tokens,
        totals.cache_write_tokens,
        totals.reasoning_tokens,
        totals.cost,
        totals.reported_cost,
        totals.cache_savings,
    ) == ledger
    assert totals.failed_calls == failed[0]
    assert report.savings.cache == ledger[10]
    # Most calls are in the month, and the money has more digits than a float keeps.
    assert 900_000 < totals.calls < CALLS
    assert totals.unpriced_calls > 5_000
    assert len(decimal_text(totals.cost).split(".")[1]) > 17

    by_role = fetch(
        f"SELECT r.slug, COUNT(*), SUM(u.cost) FROM ({BILLED_ROWS}) u "
        "JOIN office_role r ON r.id = u.role_id GROUP BY r.slug",
        [start, end],
    )
    assert {(r.key, r.spend.calls, r.spend.cost) for r in report.by_role} == set(by_role)
    by_model = fetch(
        f"SELECT m.slug, SUM(u.input_tokens), SUM(u.cost) FROM ({BILLED_ROWS}) u "
        "JOIN billing_catalogmodel m ON m.id = u.model_id GROUP BY m.slug",
        [start, end],
    )
    assert {(r.key, r.spend.input_tokens, r.spend.cost) for r in report.by_model} == set(by_model)
    by_provider = fetch(
        f"SELECT provider, SUM(cost) FROM billing_usage WHERE {BILLED} GROUP BY provider",
        [start, end],
    )
    assert {(r.key, r.spend.cost) for r in report.by_provider} == set(by_provider)
    by_person = fetch(
        f"SELECT person_id, SUM(cost) FROM billing_usage WHERE {BILLED} GROUP BY person_id",
        [start, end],
    )
    usernames = dict(get_user_model().objects.values_list("pk", "username"))
    assert {(r.key, r.spend.cost) for r in report.by_person} == {
        (usernames.get(pk, ""), cost) for pk, cost in by_person
    }
    by_day = fetch(
        "SELECT (created_at AT TIME ZONE %s)::date, SUM(cost) FROM billing_usage "
        f"WHERE {BILLED} GROUP BY 1",
        [TIME_ZONE, start, end],
    )
    assert {(p.day, p.spend.cost) for p in report.daily} == set(by_day)
    assert len(report.daily) == 31

    top = fetch(
        "SELECT id, cost FROM office_task WHERE created_at >= %s AND created_at < %s "
        "ORDER BY cost DESC, id LIMIT 10",
        [start, end],
    )
    assert [(t.task_id, t.cost) for t in report.top_tasks] == top
    # Tasks count where their first call closed (settlement order), as rollups count them.
    task_counts = fetch(
        "SELECT r.slug, COUNT(*) FROM (SELECT DISTINCT ON (task_id) role_id, created_at "
        "FROM billing_usage WHERE status <> 'pending' ORDER BY task_id, settled_at, id) f "
        "JOIN office_role r ON r.id = f.role_id "
        "WHERE f.created_at >= %s AND f.created_at < %s GROUP BY r.slug",
        [start, end],
    )
    assert {(r.role_slug, r.tasks) for r in report.role_task_costs} == set(task_counts)

    print(
        f"\n{CALLS:,} ledger rows: fill {filled - began:.1f} s, rollups + rebuild check "
        f"{rolled - filled:.1f} s, report {(reported - rolled) * 1000:.0f} ms, "
        f"total {time.perf_counter() - began:.1f} s"
    )
