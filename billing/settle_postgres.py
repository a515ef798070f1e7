"""Settlement on PostgreSQL in one call of a server-side function.

Closing a ledger row moves four things: the row, its task's totals, its rollup and the
budget counters it reserved against. The portable path (billing.ledger) does that with
about ten ORM queries; on PostgreSQL, where numeric arithmetic in SQL is exact, the
function `billing_usage_settle` (migrations billing 0005, 0007) does it in one statement, and
the budget periods' new totals come back for the threshold check. Everything depends on
the ledger row's guarded update (`status = 'pending'`): a row closed before changes
nothing anywhere.

Called outside a transaction block the statement is its own transaction, committed by
the server as it ends, so the budget counters every settlement of the office shares stay
locked for the function's last statement only, never across a round trip to a client
thread that may be waiting for the GIL. That, and the function's plans being prepared
once per connection, is what lets settlements keep pace on a small machine
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection

from billing.rollups import ROLLUP_FIELDS, RollupDelta

# The columns the function writes, in its own order (fixed by its migration).
SETTLED_COLUMNS = (
    "status", "basis", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "is_batch", "reasoning_tokens", "images",
    "web_searches", "cost", "reported_cost", "error", "http_status", "provider_request_id",
    "latency_ms", "settled_at", "price_prompt", "price_completion", "price_input_cache_read",
    "price_input_cache_write", "price_input_cache_write_1h", "price_internal_reasoning",
    "price_request", "price_image", "price_web_search", "price_batch_discount",
)  # fmt: skip
# Rollup measures besides `tasks`, which the function derives from the task's update.
ROLLUP_MEASURES = tuple(name for name in ROLLUP_FIELDS if name != "tasks")

_CALL = (
    "SELECT * FROM billing_usage_settle(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
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
    """Close a pending ledger row and move its task, rollup and budget counters, in one
    statement: its own transaction when called outside a transaction block, else part of
    the caller's. `fields` holds exactly SETTLED_COLUMNS. Returns the budget periods' new
    totals, or None when the row was not pending (nothing was changed). Raises
    ValueError when `fields` names other columns than the function writes."""
    if fields.keys() != set(SETTLED_COLUMNS):
        raise ValueError(
            "billing_usage_settle writes exactly SETTLED_COLUMNS; a new ledger column "
            "needs a migration that replaces the function. Differs by: "
            f"{sorted(fields.keys() ^ set(SETTLED_COLUMNS))}"
        )
    day, role_id, model_id, provider, person_id = rollup_key
    delta = {name: value for name, value in rollup_delta.values().items() if name != "tasks"}
    with connection.cursor() as cursor:
        cursor.execute(
            _CALL,
            [
                usage_id,
                _json(fields),
                task_id,
                input_tokens,
                output_tokens,
                cost,
                spent or Decimal(0),
                reserved,
                period_ids,
                day,
                role_id,
                model_id,
                provider,
                person_id,
                _json(delta),
            ],
        )
        rows = cursor.fetchall()
    if not rows:
        return None
    return [
        # Django leaves jsonb undecoded on raw cursors.
        PeriodAfter(
            period_id=pid,
            spent=spent_after,
            limit=limit,
            thresholds=raw if isinstance(raw, list) else json.loads(raw),
        )
        for pid, spent_after, limit, raw in rows
        if pid is not None
    ]


def _json(values: dict[str, Any]) -> str:
    """JSON for jsonb_populate_record: money and times as strings, which PostgreSQL reads
    with the column's own input function, so amounts stay exact."""
    return json.dumps(
        {
            name: str(value) if isinstance(value, Decimal) else value
            for name, value in values.items()
        },
        default=_text,
    )


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} to billing_usage_settle")
