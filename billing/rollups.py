"""Rollups: spend per local day x role x model x provider x person, kept in step with
the ledger so that reports read a few rows instead of every call. Local helper
operations add to the `helper_*` measures of their own rows (the helper's model).

`rollup_add` runs inside the transaction that closes a ledger row. `rollups_rebuild`
recomputes them from the ledger, independently of the incremental path, and reports any
difference (there must be none).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from billing.models import PricingBasis, Usage, UsageRollup, UsageStatus
from billing.money import EXACT, ZERO, money_mul
from billing.periods import local_day, local_midnight, office_tz

RollupKey = tuple[date, int, int, str, int | None]  # day, role, model, provider, person


@dataclass
class RollupDelta:
    """What one or more ledger rows add to a rollup row."""

    tasks: int = 0
    calls: int = 0
    failed_calls: int = 0
    estimated_calls: int = 0
    unpriced_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = ZERO
    reported_cost: Decimal = ZERO
    cache_savings: Decimal = ZERO
    # Local helper operations (never in the calls, tokens and cost above).
    helper_calls: int = 0
    helper_unpriced_calls: int = 0
    helper_input_tokens: int = 0
    helper_output_tokens: int = 0
    helper_savings: Decimal = ZERO

    def add(self, other: RollupDelta) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            total = EXACT.add(mine, theirs) if isinstance(mine, Decimal) else mine + theirs
            setattr(self, f.name, total)

    def values(self) -> dict[str, int | Decimal]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ROLLUP_FIELDS = tuple(f.name for f in fields(RollupDelta))


def delta_of(usage: Usage, *, first_of_task: bool) -> RollupDelta:
    """What a closed ledger row contributes to its rollup (nothing while pending).

    `first_of_task`: this is the first of its task's provider calls to close, so the
    rollup counts the task (once, whatever the call's outcome). A local helper operation
    adds to the helper measures only, and never counts the task.
    """
    if usage.status == UsageStatus.PENDING:
        return RollupDelta()
    if usage.helper_operation:
        return RollupDelta(
            helper_calls=1,
            helper_unpriced_calls=int(usage.shadow_cost is None),
            helper_input_tokens=usage.input_tokens,
            helper_output_tokens=usage.output_tokens,
            helper_savings=usage.shadow_cost if usage.shadow_cost is not None else ZERO,
        )
    tasks = int(first_of_task)
    if usage.status == UsageStatus.FAILED:
        return RollupDelta(tasks=tasks, failed_calls=1)
    savings = ZERO
    if (
        usage.cached_input_tokens
        and usage.price_prompt is not None
        and usage.price_input_cache_read is not None
        and usage.price_input_cache_read < usage.price_prompt
    ):
        discount = EXACT.subtract(usage.price_prompt, usage.price_input_cache_read)
        savings = money_mul(discount, usage.cached_input_tokens)
    return RollupDelta(
        tasks=tasks,
        calls=1,
        estimated_calls=int(usage.basis == PricingBasis.ESTIMATED),
        unpriced_calls=int(usage.basis == PricingBasis.UNPRICED),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens + usage.cache_write_1h_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost=usage.cost,
        reported_cost=usage.reported_cost if usage.reported_cost is not None else ZERO,
        cache_savings=savings,
    )


def key_of(usage: Usage) -> RollupKey:
    return (
        local_day(usage.created_at),
        usage.role_id,
        usage.model_id,
        usage.provider,
        usage.person_id,
    )


def rollup_add(*, usage: Usage, first_of_task: bool) -> None:
    """Add a just-closed ledger row into its rollup row. Call inside the closing
    transaction: the rollup row is locked, so concurrent settlements add up exactly."""
    delta = delta_of(usage, first_of_task=first_of_task)
    day, role_id, model_id, provider, person_id = key_of(usage)
    lookup = {
        "day": day,
        "role_id": role_id,
        "model_id": model_id,
        "provider": provider,
        "person_id": person_id,
    }
    row = UsageRollup.objects.select_for_update().filter(**lookup).first()
    if row is None:
        try:
            with transaction.atomic():
                UsageRollup.objects.create(**lookup, **delta.values())
            return
        except IntegrityError:
            # Another settlement created the row first; add to it under its lock.
            row = UsageRollup.objects.select_for_update().get(**lookup)
    current = RollupDelta(**{name: getattr(row, name) for name in ROLLUP_FIELDS})
    current.add(delta)
    UsageRollup.objects.filter(pk=row.pk).update(**current.values())


@dataclass
class RebuildReport:
    rows_before: int = 0
    rows_after: int = 0
    ledger_rows: int = 0
    differences: list[str] = field(default_factory=list)


def rollups_compute(usages: Iterable[Usage]) -> dict[RollupKey, RollupDelta]:
    """Aggregate ledger rows into rollup values, in Python (exact on every database).
    Each row needs an `is_first` attribute (see `_ledger_with_first`)."""
    totals: dict[RollupKey, RollupDelta] = {}
    for usage in usages:
        if usage.status == UsageStatus.PENDING:
            continue
        delta = delta_of(usage, first_of_task=usage.is_first)  # type: ignore[attr-defined]
        totals.setdefault(key_of(usage), RollupDelta()).add(delta)
    return totals


def _ledger_with_first(ledger: QuerySet[Usage]) -> QuerySet[Usage]:
    """Mark each closed row that was the first of its task's provider calls to close:
    settlement counts a task in its rollup exactly then, in closing order (settled_at,
    then id). Helper operations never count a task, so they are not "earlier" either."""
    earlier = (
        Usage.objects.filter(task_id=OuterRef("task_id"), helper_operation="")
        .exclude(status=UsageStatus.PENDING)
        .filter(
            Q(settled_at__lt=OuterRef("settled_at"))
            | Q(settled_at=OuterRef("settled_at"), pk__lt=OuterRef("pk"))
        )
    )
    return ledger.annotate(is_first=~Exists(earlier))


def rollups_rebuild(
    *, start: date | None = None, end: date | None = None, dry_run: bool = False
) -> RebuildReport:
    """Recompute the rollups of local days [start, end) (all days when omitted) from the
    ledger, list every difference from the stored rows, and replace them unless
    `dry_run`. Returns the report; an empty `differences` means they agreed exactly."""
    tz = office_tz()
    ledger = Usage.objects.exclude(status=UsageStatus.PENDING)
    stored = UsageRollup.objects.all()
    if start is not None:
        ledger = ledger.filter(created_at__gte=local_midnight(start, tz))
        stored = stored.filter(day__gte=start)
    if end is not None:
        ledger = ledger.filter(created_at__lt=local_midnight(end, tz))
        stored = stored.filter(day__lt=end)
    columns = [
        "status", "basis", "created_at", "role_id", "model_id", "provider", "person_id",
        "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
        "cache_write_1h_tokens", "reasoning_tokens", "cost", "reported_cost",
        "price_prompt", "price_input_cache_read", "task_id", "settled_at",
        "helper_operation", "shadow_cost",
    ]  # fmt: skip
    report = RebuildReport()
    with transaction.atomic():
        rows = _ledger_with_first(ledger.only(*columns)).iterator(chunk_size=20_000)
        fresh = rollups_compute(_counted(rows, report))
        existing = {
            (row.day, row.role_id, row.model_id, row.provider, row.person_id): row
            for row in stored.select_for_update()
        }
        report.rows_before = len(existing)
        report.rows_after = len(fresh)
        for key in sorted(set(existing) | set(fresh), key=_sortable):
            want = fresh.get(key, RollupDelta()).values()
            have_row = existing.get(key)
            have = (
                {name: getattr(have_row, name) for name in ROLLUP_FIELDS}
                if have_row is not None
                else RollupDelta().values()
            )
            diffs = [f"{n} {have[n]} != {want[n]}" for n in ROLLUP_FIELDS if have[n] != want[n]]
            if diffs:
                report.differences.append(f"{_label(key)}: {', '.join(diffs)}")
        if not dry_run:
            stored.delete()
            UsageRollup.objects.bulk_create(
                [
                    UsageRollup(
                        day=key[0], role_id=key[1], model_id=key[2], provider=key[3],
                        person_id=key[4], **delta.values(),
                    )
                    for key, delta in fresh.items()
                ],
                batch_size=5_000,
            )  # fmt: skip
    return report


def _counted(usages: Iterable[Usage], report: RebuildReport) -> Iterable[Usage]:
    for usage in usages:
        report.ledger_rows += 1
        yield usage


def _sortable(key: RollupKey) -> tuple[date, int, int, str, int]:
    return (key[0], key[1], key[2], key[3], key[4] or 0)


def _label(key: RollupKey) -> str:
    day, role_id, model_id, provider, person_id = key
    return f"{day} role={role_id} model={model_id} provider={provider} person={person_id}"
