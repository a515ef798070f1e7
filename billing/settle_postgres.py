"""Settlement on PostgreSQL in one call of a server-side function.

Closing a ledger row moves four things: the row, its task's totals, its rollup and the
budget counters it reserved against. The portable path (billing.ledger) does that with
about ten ORM queries; on PostgreSQL, where numeric arithmetic in SQL is exact, the
function `billing_usage_settle_many` (migration billing 0010) does it for a batch of rows
in one statement, and the budget periods' totals come back for the threshold check.
Everything depends on the ledger row's guarded update (`status = 'pending'`): a row
closed before changes nothing anywhere.

Called outside a transaction block the statement is its own transaction, committed by
the server as it ends, so the budget counters every settlement of the office shares stay
locked for the function's last statement only, never across a round trip to a client
thread that may be waiting for the GIL. That, and the function's plans being prepared
once per connection, is what lets settlements keep pace on a small machine
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, connection

from billing.money import ZERO
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

_CALL_MANY = "SELECT * FROM billing_usage_settle_many(%s)"


@dataclass(frozen=True)
class PeriodAfter:
    """A budget period's spend after a settlement (or a batch of them), and before it."""

    period_id: int
    spent: Decimal
    spent_before: Decimal
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
    """Close a pending ledger row and move its task, rollup and budget counters.

    Inside a transaction block, in one statement of the caller's transaction. Outside
    one, with the settlements other threads of this process are making at the same time,
    in one statement that is its own transaction (`_SettlementBatches`). `fields` holds
    exactly SETTLED_COLUMNS. Returns the budget periods' totals before and after (empty
    for all but one settlement of a batch), or None when the row was not pending
    (nothing was changed). Raises ValueError when `fields` names other columns than the
    function writes, and DatabaseError when the database refused the settlement."""
    if fields.keys() != set(SETTLED_COLUMNS):
        raise ValueError(
            "billing_usage_settle_many writes exactly SETTLED_COLUMNS; a new ledger column "
            "needs a migration that replaces the function. Differs by: "
            f"{sorted(fields.keys() ^ set(SETTLED_COLUMNS))}"
        )
    day, role_id, model_id, provider, person_id = rollup_key
    item = {
        "usage_id": usage_id,
        "fields": fields,
        "task_id": task_id,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost": cost,
        "spent": spent or ZERO,
        "reserved": reserved,
        "period_ids": period_ids,
        "day": day,
        "role_id": role_id,
        "model_id": model_id,
        "provider": provider,
        "person_id": person_id,
        "delta": {k: v for k, v in rollup_delta.values().items() if k != "tasks"},
    }
    if connection.in_atomic_block:
        # Part of the caller's transaction: settle this row alone, inside it.
        return _settle_one(item)
    return _batches.settle(item)


def _settle_one(item: dict[str, Any]) -> list[PeriodAfter] | None:
    """Settle one row: a batch of one. Returns its budget periods' totals, or None when
    the row was not pending."""
    closed, periods = _settle_many([item])
    return periods if item["usage_id"] in closed else None


def _settle_many(items: list[dict[str, Any]]) -> tuple[set[int], list[PeriodAfter]]:
    """One call of billing_usage_settle_many. Returns the ids of the rows it closed and
    the budget periods' totals before and after the whole batch."""
    with connection.cursor() as cursor:
        cursor.execute(_CALL_MANY, [json.dumps([_item_json(item) for item in items])])
        rows = cursor.fetchall()
    closed = {usage_id for usage_id, pid, *_ in rows if pid is None}
    periods = [
        PeriodAfter(
            period_id=pid,
            spent=spent_after,
            spent_before=spent_before,
            limit=limit,
            thresholds=_thresholds(raw),
        )
        for _, pid, spent_after, limit, raw, spent_before in rows
        if pid is not None
    ]
    return closed, periods


@dataclass
class _Waiting:
    item: dict[str, Any]
    done: bool = False
    closed: bool = False
    periods: list[PeriodAfter] = field(default_factory=list)
    error: BaseException | None = None


class _SettlementBatches:
    """Settlements from many threads of one process, closed a batch at a time.

    A settling thread queues its row. If no batch is being written, it takes every row
    queued (up to BATCH_LIMIT, its own among them) and writes them in one call of
    `billing_usage_settle_many` on its own connection, then wakes the others; otherwise
    it waits, and takes the next batch itself if its row is still queued when the
    current one ends. A lone settlement is a batch of one, at no extra wait. The budget
    periods' totals, before and after the batch, go to one closed settlement of the
    batch, so the thresholds the batch crossed are recorded once.
    """

    BATCH_LIMIT = 64

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing = False

    def settle(self, item: dict[str, Any]) -> list[PeriodAfter] | None:
        mine = _Waiting(item)
        with self._changed:
            self._queue.append(mine)
        while True:
            with self._changed:
                while self._writing and not mine.done:
                    self._changed.wait()
                if mine.done:
                    break
                self._writing = True
                batch = self._queue[: self.BATCH_LIMIT]
                del self._queue[: self.BATCH_LIMIT]
            try:
                _write(batch)
            except BaseException as exc:
                # Not the database refusing a row (_write handles that): every row of the
                # batch fails with it, rather than its threads waiting for ever.
                for waiting in batch:
                    if not waiting.done:
                        waiting.error, waiting.done = exc, True
                raise
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.periods if mine.closed else None


def _write(batch: list[_Waiting]) -> None:
    """Write a batch in one transaction; if the database refuses it, each row alone, so
    that one bad row fails only its own settlement."""
    try:
        closed, periods = _settle_many([w.item for w in batch])
    except DatabaseError:
        if len(batch) == 1:
            batch[0].error = sys.exc_info()[1]
            batch[0].done = True
            return
        for waiting in batch:
            try:
                one = _settle_one(waiting.item)
            except DatabaseError as exc:
                waiting.error = exc
            else:
                waiting.closed = one is not None
                waiting.periods = one or []
            waiting.done = True
        return
    for waiting in batch:
        waiting.closed = waiting.item["usage_id"] in closed
        waiting.done = True
    batch_writer = next((w for w in batch if w.closed), None)
    if batch_writer is not None:
        batch_writer.periods = periods


_batches = _SettlementBatches()


def _thresholds(raw: Any) -> list[int]:
    # Django leaves jsonb undecoded on raw cursors.
    return raw if isinstance(raw, list) else json.loads(raw)


def _item_json(item: dict[str, Any]) -> dict[str, Any]:
    """One settlement as JSON values for billing_usage_settle_many (see _plain)."""
    return {
        **{k: _plain(v) for k, v in item.items() if k not in ("fields", "delta")},
        "fields": {k: _plain(v) for k, v in item["fields"].items()},
        "delta": {k: _plain(v) for k, v in item["delta"].items()},
    }


def _plain(value: Any) -> Any:
    """Money and times as strings, which PostgreSQL reads with the column's own input
    function (jsonb_populate_record, jsonb_to_recordset), so amounts stay exact."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
