"""The usage ledger: open a row before a call, settle it once after.

Rows are append-only: a call is written `pending` (committed) before the request leaves,
then moved exactly once to `settled`, `failed` or `estimated` with a guarded update, so
a replayed settlement can never bill a call twice. The task's totals move in the same
transaction as the row.

Local helper operations are ledger rows too, written settled at cost 0 with their shadow
price: `usage_record_helper`, from billing.helper_ledger, re-exported here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.alerts import alert_record_drift
from billing.budgets import (
    budget_alert_crossings,
    budget_reserve,
    budget_settle,
    thresholds_crossed,
    worst_case_cost,
)
from billing.estimation import prompt_tokens_estimate, tokens_estimate
from billing.helper_ledger import usage_record_helper as usage_record_helper
from billing.models import CatalogModel, ModelPrice, PricingBasis, Usage, UsageStatus
from billing.money import ZERO, money_sum
from billing.pricing import TokenUsage, cost_of, resolve_prices
from billing.rollups import delta_of, rollup_add
from billing.rollups import key_of as rollup_key_of
from billing.selectors import price_current
from billing.settle_postgres import PeriodAfter, settle_statement
from office.models import Task


class LedgerError(Exception):
    """A ledger write that must not happen (no price, or a row settled twice)."""


@dataclass(frozen=True)
class CallTarget:
    """Who is called for a task: what billing attributes the call to."""

    model: CatalogModel
    provider: str
    credential_id: int | None
    credential_label: str
    upstream_model: str


def usage_open(
    *,
    task: Task,
    target: CallTarget,
    attempt: int,
    estimated_input_tokens: int,
    input_tokens_bound: int,
    max_output_tokens: int,
    now: datetime | None = None,
    price: ModelPrice | None = None,
) -> Usage:
    """Reserve the call's worst case against the budgets and write a `pending` ledger
    row, in one transaction committed before the call leaves.

    `price` is the model's price version in force at `now` when the caller has it at
    hand (agents.runtime keeps it); by default it is looked up.

    `input_tokens_bound` is an upper bound on the input tokens (not the estimate): with
    `max_output_tokens` it bounds the cost, so reservations bound spend. Returns the row,
    whose `call_id` identifies the call to the provider. Raises LedgerError when the
    model has no price version at all (run sync_prices), and BudgetExceeded when a hard
    budget refuses the call (nothing is written then).
    """
    now = now or timezone.now()
    if price is None:
        price = price_current(model=target.model, at=now)
    elif price.model_id != target.model.pk:
        raise LedgerError(f"The price {price.pk} is not one of {target.model.slug}.")
    if price is None:
        raise LedgerError(
            f"The model {target.model.slug} has no price in the catalog; run "
            "`manage.py sync_prices` or add a price in the admin."
        )
    worst_case = worst_case_cost(
        prices=price.unit_prices(),
        input_tokens=input_tokens_bound,
        max_output_tokens=max_output_tokens,
    )
    with transaction.atomic():
        reservation = budget_reserve(role=task.role, model=target.model, amount=worst_case, at=now)
        return Usage.objects.create(
            call_id=uuid.uuid4().hex,
            task=task,
            role_id=task.role_id,
            model=target.model,
            price=price,
            provider=target.provider,
            credential_id=target.credential_id,
            credential_label=target.credential_label,
            upstream_model=target.upstream_model,
            attempt=attempt,
            status=UsageStatus.PENDING,
            estimated_input_tokens=estimated_input_tokens,
            max_output_tokens=max_output_tokens,
            reserved=reservation.amount,
            budget_periods=reservation.period_ids,
            person_id=task.created_by_id,
            created_at=now,
        )


def usage_settle(
    *,
    usage: Usage,
    token_usage: TokenUsage | None,
    reported_cost: Decimal | None = None,
    prompt_texts: tuple[str, ...] = (),
    output_text: str = "",
    http_status: int | None = 200,
    provider_request_id: str = "",
    latency_ms: int | None = None,
) -> Usage:
    """Settle a pending row with the usage the provider reported, priced exactly.

    When the provider reported no usage, it is estimated from `prompt_texts` and
    `output_text` and the row is flagged `estimated`. Returns the updated row. Raises
    LedgerError if the row is not pending (a settlement never happens twice).
    """
    basis = PricingBasis.COMPUTED
    if token_usage is None:
        token_usage = TokenUsage(
            input_tokens=prompt_tokens_estimate(*prompt_texts),
            output_tokens=tokens_estimate(output_text),
        )
        basis = PricingBasis.ESTIMATED
    elif reported_cost is not None:
        basis = PricingBasis.REPORTED
    return _close(
        usage=usage,
        status=UsageStatus.SETTLED,
        token_usage=token_usage,
        basis=basis,
        reported_cost=reported_cost,
        http_status=http_status,
        provider_request_id=provider_request_id,
        latency_ms=latency_ms,
    )


def usage_fail(
    *, usage: Usage, error: str, http_status: int | None, latency_ms: int | None
) -> Usage:
    """Close a pending row as failed: the provider refused or errored, nothing billed.

    Returns the row. Raises LedgerError if it was not pending.
    """
    return _close(
        usage=usage,
        status=UsageStatus.FAILED,
        token_usage=TokenUsage(requests=0),
        basis=PricingBasis.COMPUTED,
        error=error,
        http_status=http_status,
        latency_ms=latency_ms,
    )


def usage_close_abandoned(*, task_id: int) -> int:
    """Close the pending rows a dead worker left behind for a task, as `estimated`.

    The call may have been answered and billed by the provider, so it is kept as spend at
    its worst case (input estimate + the output bound) rather than dropped; a provider
    usage export can reconcile it. Returns how many rows were closed.
    """
    closed = 0
    for usage in Usage.objects.filter(task_id=task_id, status=UsageStatus.PENDING).select_related(
        "price"
    ):
        usage_estimate(
            usage=usage,
            error="The worker stopped during this call; usage estimated at its worst case.",
            http_status=None,
        )
        closed += 1
    return closed


def usage_estimate(
    *, usage: Usage, error: str, http_status: int | None, latency_ms: int | None = None
) -> Usage:
    """Close a pending row whose answer was lost after the request reached the provider
    (its worker died, the connection dropped mid-answer, the answer could not be read):
    the provider may have billed it, so it is spend at its worst case (the input estimate
    and the output bound), `estimated`, never a silent $0. Raises LedgerError if the row
    was not pending."""
    return _close(
        usage=usage,
        status=UsageStatus.ESTIMATED,
        token_usage=TokenUsage(
            input_tokens=usage.estimated_input_tokens,
            output_tokens=usage.max_output_tokens,
        ),
        basis=PricingBasis.ESTIMATED,
        error=error,
        http_status=http_status,
        latency_ms=latency_ms,
    )


def _close(
    *,
    usage: Usage,
    status: str,
    token_usage: TokenUsage,
    basis: str,
    reported_cost: Decimal | None = None,
    error: str = "",
    http_status: int | None = None,
    provider_request_id: str = "",
    latency_ms: int | None = None,
) -> Usage:
    prices = resolve_prices(token_usage, usage.price.unit_prices())
    if status == UsageStatus.FAILED:
        cost = ZERO
    elif prices.is_priced:
        cost = cost_of(token_usage, prices)
    else:
        # Unpriced: the cost is unknown, shown as such, never a silent $0 bill.
        cost, basis = ZERO, PricingBasis.UNPRICED
    now = timezone.now()
    fields = {
        "status": status,
        "basis": basis,
        "input_tokens": token_usage.input_tokens,
        "output_tokens": token_usage.output_tokens,
        "cached_input_tokens": token_usage.cached_input_tokens,
        "cache_write_tokens": token_usage.cache_write_tokens,
        "cache_write_1h_tokens": token_usage.cache_write_1h_tokens,
        "is_batch": token_usage.is_batch,
        "reasoning_tokens": token_usage.reasoning_tokens,
        "images": token_usage.images,
        "web_searches": token_usage.web_searches,
        "cost": cost,
        "reported_cost": reported_cost,
        "error": error[:2000],
        "http_status": http_status,
        "provider_request_id": provider_request_id[:200],
        "latency_ms": latency_ms,
        "settled_at": now,
        **{f"price_{kind}": value for kind, value in prices.as_dict().items()},
        "price_batch_discount": prices.batch_discount,
    }
    spent = None if status == UsageStatus.FAILED else cost
    if connection.vendor == "postgresql":
        periods = _close_postgresql(
            usage=usage, fields=fields, token_usage=token_usage, cost=cost, spent=spent
        )
        # Alerts follow the settlement: in the caller's transaction when there is one, in
        # their own otherwise (the settlement has committed by then). A threshold alert a
        # crash loses between the two is recorded by `budget_alerts_sweep` (beat).
        # Periods come back with their spend before and after this settlement, or, when
        # settlements were written in a batch, before and after the whole batch (to one
        # settlement of the batch): the thresholds the batch crossed are recorded once.
        crossings = [
            period
            for period in periods
            if period.spent != period.spent_before
            and thresholds_crossed(
                limit=period.limit,
                thresholds=period.thresholds,
                before=period.spent_before,
                after=period.spent,
            )
        ]
        drift = usage.reported_cost is not None and basis == PricingBasis.REPORTED
        if crossings or drift:
            with transaction.atomic():
                for period in crossings:
                    budget_alert_crossings(
                        period_id=period.period_id, before=period.spent_before, after=period.spent
                    )
                if drift:
                    alert_record_drift(usage=usage)
        return usage
    with transaction.atomic():
        _close_portable(usage=usage, fields=fields, token_usage=token_usage, cost=cost,
                        spent=spent)  # fmt: skip
        if usage.reported_cost is not None and basis == PricingBasis.REPORTED:
            alert_record_drift(usage=usage)
    return usage


def _close_postgresql(
    *,
    usage: Usage,
    fields: dict[str, Any],
    token_usage: TokenUsage,
    cost: Decimal,
    spent: Decimal | None,
) -> list[PeriodAfter]:
    """Close the row with the one statement of billing.settle_postgres. Returns the
    budget periods' new totals. Raises LedgerError if the row was not pending.

    The statement commits without waiting for the WAL flush. Every settlement locks the
    office's budget counter until it commits; waiting out an fsync there would serialise
    the whole office on the disk (5.7 ms here: ~175 settlements/s). What a database crash
    can lose is bounded and recovered: the pending row was committed durably before the
    call, the reservation stays held (budgets stay safe), and the task, back to running
    and no longer listed by its worker's heartbeat, is requeued by the sweeper, which
    closes the call as an estimate.
    """
    pending = {key: getattr(usage, key) for key in fields}
    for key, value in fields.items():
        setattr(usage, key, value)
    periods = settle_statement(
        usage_id=usage.pk,
        fields=fields,
        task_id=usage.task_id,
        input_tokens=token_usage.input_tokens,
        output_tokens=token_usage.output_tokens,
        cost=cost,
        spent=spent,
        reserved=usage.reserved,
        period_ids=list(usage.budget_periods),
        rollup_key=rollup_key_of(usage),
        # The statement decides whether the call is its task's first to close.
        rollup_delta=delta_of(usage, first_of_task=False),
    )
    if periods is None:
        for key, value in pending.items():
            setattr(usage, key, value)
        raise LedgerError(f"Call {usage.call_id} is not pending; it was closed before.")
    return periods


def _close_portable(
    *,
    usage: Usage,
    fields: dict[str, Any],
    token_usage: TokenUsage,
    cost: Decimal,
    spent: Decimal | None,
) -> None:
    """The ORM path (SQLite): each counter is read under its lock and written back, with
    money added in Python, since SQLite keeps money as text."""
    updated = Usage.objects.filter(pk=usage.pk, status=UsageStatus.PENDING).update(**fields)
    if updated != 1:
        raise LedgerError(f"Call {usage.call_id} is not pending; it was closed before.")
    for key, value in fields.items():
        setattr(usage, key, value)
    calls_before = _task_add(
        task_id=usage.task_id,
        input_tokens=token_usage.input_tokens,
        output_tokens=token_usage.output_tokens,
        cost=cost,
    )
    rollup_add(usage=usage, first_of_task=calls_before == 0)
    budget_settle(period_ids=usage.budget_periods, reserved=usage.reserved, cost=spent)


def _task_add(*, task_id: int, input_tokens: int, output_tokens: int, cost: Decimal) -> int:
    """Add a closed call to its task's totals. Returns the task's closed calls before."""
    # Money is added in Python under a row lock: exact on every database (SQLite keeps
    # it as text), and two settlements of one task cannot lose each other's update.
    task = Task.objects.select_for_update().only("cost", "provider_calls").get(pk=task_id)
    Task.objects.filter(pk=task_id).update(
        input_tokens=F("input_tokens") + input_tokens,
        output_tokens=F("output_tokens") + output_tokens,
        provider_calls=F("provider_calls") + 1,
        cost=money_sum([task.cost, cost]),
    )
    return task.provider_calls
