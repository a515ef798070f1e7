"""Settlement on PostgreSQL in two statements.

Closing a ledger row moves four things: the row, its task's totals, its rollup and the
budget counters it reserved against. The portable path (billing.ledger) does that with
about ten ORM queries; on PostgreSQL, where numeric arithmetic in SQL is exact, two
statements of data-modifying CTEs do it, and the budget periods' new totals come back
for the threshold check. Everything depends on the ledger row's guarded update
(`status = 'pending'`): a row closed before changes nothing anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.db import connection

from billing.rollups import ROLLUP_FIELDS, RollupDelta

_ROLLUP_COLUMNS = ", ".join(ROLLUP_FIELDS)
# `tasks` comes from the task's own update: 1 when this is its first call to close.
_ROLLUP_PARAMS = ", ".join(
    "(SELECT CASE WHEN provider_calls = 1 THEN 1 ELSE 0 END FROM task)"
    if name == "tasks"
    else f"%({name})s"
    for name in ROLLUP_FIELDS
)
_ROLLUP_INCREMENTS = ", ".join(
    f"{name} = billing_usagerollup.{name} + EXCLUDED.{name}" for name in ROLLUP_FIELDS
)


@dataclass(frozen=True)
class PeriodAfter:
    period_id: int
    spent: Decimal
    limit: Decimal
    thresholds: list[int]


def settle_statement(
    *,
    usage_id: int,
    fields: dict[str, Any],
    task_id: int,
    input_tokens: int,
    output_tokens: int,
    cost: Decimal,
    spent: Decimal | None,
    reserved: Decimal,
    period_ids: list[int],
    rollup_key: tuple[date, int, int, str, int | None],
    rollup_delta: RollupDelta,
) -> list[PeriodAfter] | None:
    """Close a pending ledger row and move its task, rollup and budget counters. Run
    inside the settlement transaction. Returns the budget periods' new totals, or None
    when the row was not pending (nothing was changed)."""
    assignments = ", ".join(f"{column} = %(f_{column})s" for column in fields)
    day, role_id, model_id, provider, person_id = rollup_key
    params: dict[str, Any] = {f"f_{column}": value for column, value in fields.items()}
    params.update(rollup_delta.values())
    params.update(
        usage_id=usage_id,
        task_id=task_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        spent=spent or Decimal(0),
        reserved=reserved,
        period_ids=period_ids,
        day=day,
        role_id=role_id,
        model_id=model_id,
        provider=provider,
        person_id=person_id,
    )
    # Two statements, one transaction. The first closes the row and moves its task and
    # rollup; the second takes the budget counters, which every settlement of the office
    # shares, last and briefly, so they are locked for as little of the work as possible.
    # Counters are locked in id order (as reservations lock them): sub-statements run in
    # no set order and an UPDATE visits rows in physical order, so without it two
    # settlements could take the same counters in opposite orders and deadlock.
    close_sql = f"""
        WITH closed AS (
            UPDATE billing_usage SET {assignments}
            WHERE id = %(usage_id)s AND status = 'pending'
            RETURNING id
        ), task AS (
            UPDATE office_task
            SET input_tokens = input_tokens + %(input_tokens)s,
                output_tokens = output_tokens + %(output_tokens)s,
                provider_calls = provider_calls + 1,
                cost = cost + %(cost)s
            WHERE id = %(task_id)s AND EXISTS (SELECT 1 FROM closed)
            RETURNING provider_calls
        ), rollup AS (
            INSERT INTO billing_usagerollup
                (day, role_id, model_id, provider, person_id, {_ROLLUP_COLUMNS})
            SELECT %(day)s, %(role_id)s, %(model_id)s, %(provider)s, %(person_id)s,
                {_ROLLUP_PARAMS}
            FROM closed
            ON CONFLICT (day, role_id, model_id, provider, COALESCE(person_id, 0))
            DO UPDATE SET {_ROLLUP_INCREMENTS}
        )
        SELECT count(*) FROM closed
    """  # noqa: S608  (identifiers are our own column names; values are parameters)
    counters_sql = """
        WITH locked AS (
            SELECT id FROM billing_budgetperiod
            WHERE id = ANY(%(period_ids)s)
            ORDER BY id
            FOR UPDATE
        ), periods AS (
            UPDATE billing_budgetperiod
            SET reserved = GREATEST(0, reserved - %(reserved)s),
                spent = spent + %(spent)s,
                updated_at = now()
            WHERE id IN (SELECT id FROM locked)
            RETURNING id, budget_id, spent
        )
        SELECT periods.id, periods.spent, budget."limit", budget.thresholds
        FROM periods JOIN billing_budget AS budget ON budget.id = periods.budget_id
    """
    with connection.cursor() as cursor:
        cursor.execute(close_sql, params)
        if cursor.fetchone()[0] != 1:
            return None
        if not period_ids:
            return []
        cursor.execute(counters_sql, params)
        rows = cursor.fetchall()
    return [
        # Django leaves jsonb undecoded on raw cursors.
        PeriodAfter(
            period_id=pid,
            spent=spent_after,
            limit=limit,
            thresholds=raw if isinstance(raw, list) else json.loads(raw),
        )
        for pid, spent_after, limit, raw in rows
    ]
