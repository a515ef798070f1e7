"""Reconcile the ledger with a provider's own record of what it charged.

Two exports are read:

- **The sandbox provider's request log** (JSON lines, `sandbox_provider --log-file`):
  one object per request with `call_id` (the `X-Roster-Call-Id` header Roster sends),
  `status`, the token counts and the exact `cost`. Matched on the ledger's `call_id`.
- **An OpenRouter activity export** (CSV, one row per generation). Matched on the
  ledger's `provider_request_id` (OpenRouter's generation id, `gen-...`). Column names
  are read flexibly, since the export's headers have changed over time: the generation id
  from `generation_id` or `id`; the cost from `cost_total`, `total_cost`, `cost` or
  `usage`; tokens from `tokens_prompt`/`prompt_tokens`, `tokens_completion`/
  `completion_tokens`; the time from `created_at`. A file without an id or a cost column
  is refused, naming the headers it has.

Every billed request of the export must have exactly one billed ledger row (settled or
estimated) with the same cost to the last decimal place; every billed, non-zero ledger
row of a provider in the export's time window must be in the export. Differences are
listed, never fixed: the ledger is append-only.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.utils.dateparse import parse_datetime

from billing.alerts import BILLED_STATUSES
from billing.models import PricingBasis, Usage

ID_COLUMNS = ("generation_id", "id")
COST_COLUMNS = ("cost_total", "total_cost", "cost", "usage")
INPUT_COLUMNS = ("tokens_prompt", "prompt_tokens", "native_tokens_prompt")
OUTPUT_COLUMNS = ("tokens_completion", "completion_tokens", "native_tokens_completion")
# The ledger's clock and a provider's differ a little; a row this close to the window's
# edge still counts as inside it.
WINDOW_SLACK = timedelta(minutes=5)


class ReconcileError(ValueError):
    """The export cannot be read: says which line and what is wrong with it."""


@dataclass(frozen=True)
class Charged:
    """One request the provider charged for, as its export shows it."""

    key: str  # the call id (sandbox) or the generation id (OpenRouter)
    cost: Decimal | None  # None: the export gives no cost (an unpriced model)
    input_tokens: int | None
    output_tokens: int | None
    at: datetime | None
    where: str  # "line 12": for the report


@dataclass(frozen=True)
class Export:
    kind: str  # "sandbox" or "openrouter"
    charged: tuple[Charged, ...]
    match_field: str  # the Usage field the keys are matched on


@dataclass
class Reconciliation:
    export: Export
    matched: int = 0
    differences: list[str] = field(default_factory=list)
    unbilled: int = 0  # charged, no closed ledger row
    double_billed: int = 0  # charged once, billed more than once (or charged twice)
    cost_mismatches: int = 0
    not_charged: int = 0  # billed in the ledger, absent from the export

    @property
    def clean(self) -> bool:
        return not self.differences


def export_read(path: Path) -> Export:
    """Read a sandbox JSONL log or an OpenRouter CSV export. Raises ReconcileError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ReconcileError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise ReconcileError(f"{path} is not UTF-8 text.") from None
    if text.lstrip().startswith("{"):
        return _sandbox_read(text)
    return _openrouter_read(text)


def reconcile(export: Export) -> Reconciliation:
    """Compare the export with the ledger; return the differences."""
    result = Reconciliation(export=export)
    keys = Counter(charge.key for charge in export.charged)
    rows: dict[str, list[Usage]] = {}
    for usage in Usage.objects.filter(**{f"{export.match_field}__in": list(keys)}).order_by("pk"):
        rows.setdefault(getattr(usage, export.match_field), []).append(usage)
    for key, times in sorted(keys.items()):
        if times > 1:
            result.double_billed += 1
            result.differences.append(f"charged {times} times by the provider: {key}")
    seen: set[str] = set()
    for charge in export.charged:
        if charge.key in seen:  # charged twice: listed above, compared once
            continue
        seen.add(charge.key)
        found = [u for u in rows.get(charge.key, []) if u.status in BILLED_STATUSES]
        if not found:
            other = rows.get(charge.key, [])
            state = f"ledger row {other[0].pk} is {other[0].status}" if other else "no ledger row"
            result.unbilled += 1
            result.differences.append(f"unbilled ({state}): {charge.key} ({charge.where})")
            continue
        if len(found) > 1:
            result.double_billed += 1
            ids = ", ".join(str(u.pk) for u in found)
            result.differences.append(f"billed {len(found)} times (rows {ids}): {charge.key}")
            continue
        usage = found[0]
        result.matched += 1
        priced = charge.cost is not None and usage.basis != PricingBasis.UNPRICED
        if priced and usage.cost != charge.cost:
            result.cost_mismatches += 1
            estimated = " (estimated)" if usage.basis == PricingBasis.ESTIMATED else ""
            result.differences.append(
                f"cost differs: {charge.key}: ledger {usage.cost}{estimated}, "
                f"provider {charge.cost} ({charge.where})"
            )
        tokens = (charge.input_tokens, charge.output_tokens)
        if None not in tokens and tokens != (usage.input_tokens, usage.output_tokens):
            result.differences.append(
                f"tokens differ: {charge.key}: ledger {usage.input_tokens} in / "
                f"{usage.output_tokens} out, provider {tokens[0]} in / {tokens[1]} out"
            )
    _not_charged(result)
    return result


def _not_charged(result: Reconciliation) -> None:
    """Billed, non-zero ledger rows of the export's provider and window, not in it."""
    export = result.export
    times = [c.at for c in export.charged if c.at is not None]
    if not times:
        return
    keys = {c.key for c in export.charged}
    rows = Usage.objects.filter(
        status__in=BILLED_STATUSES,
        cost__gt=0,  # the local helper's rows cost nothing
        created_at__gte=min(times) - WINDOW_SLACK,
        created_at__lte=max(times) + WINDOW_SLACK,
    )
    if export.kind == "openrouter":
        rows = rows.filter(provider="openrouter")
    for usage in rows.only("pk", export.match_field, "cost").order_by("pk"):
        if getattr(usage, export.match_field) not in keys:
            result.not_charged += 1
            result.differences.append(
                f"not in the export: ledger row {usage.pk} "
                f"({getattr(usage, export.match_field) or 'no id'}), cost {usage.cost}"
            )


def _sandbox_read(text: str) -> Export:
    charged = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReconcileError(f"line {number}: not JSON ({exc.msg}).") from None
        if not isinstance(entry, dict) or "status" not in entry:
            raise ReconcileError(f"line {number}: not a sandbox request log entry.")
        if entry["status"] != 200:
            continue  # a failed request is not charged
        if not entry.get("call_id"):
            raise ReconcileError(f"line {number}: a charged request without a call_id.")
        charged.append(
            Charged(
                key=str(entry["call_id"]),
                cost=_decimal(entry.get("cost"), f"line {number}"),
                input_tokens=_int(entry.get("input_tokens"), f"line {number}"),
                output_tokens=_int(entry.get("output_tokens"), f"line {number}"),
                at=_time(entry.get("time"), f"line {number}"),
                where=f"line {number}",
            )
        )
    return Export(kind="sandbox", charged=tuple(charged), match_field="call_id")


def _openrouter_read(text: str) -> Export:
    reader = csv.DictReader(text.splitlines())
    headers = [h.strip().lower() for h in reader.fieldnames or []]
    reader.fieldnames = headers
    id_column = next((c for c in ID_COLUMNS if c in headers), None)
    cost_column = next((c for c in COST_COLUMNS if c in headers), None)
    if id_column is None or cost_column is None:
        raise ReconcileError(
            "Not a sandbox log (JSON lines) nor an OpenRouter activity CSV with a generation "
            f"id column ({' or '.join(ID_COLUMNS)}) and a cost column "
            f"({' or '.join(COST_COLUMNS)}); its header is: {', '.join(headers) or 'empty'}."
        )
    input_column = next((c for c in INPUT_COLUMNS if c in headers), None)
    output_column = next((c for c in OUTPUT_COLUMNS if c in headers), None)
    charged = []
    for number, row in enumerate(reader, start=2):
        where = f"line {number}"
        key = (row.get(id_column) or "").strip()
        if not key:
            raise ReconcileError(f"{where}: no {id_column}.")
        charged.append(
            Charged(
                key=key,
                cost=_decimal(row.get(cost_column), where),
                input_tokens=_int(row.get(input_column), where) if input_column else None,
                output_tokens=_int(row.get(output_column), where) if output_column else None,
                at=_time(row.get("created_at"), where),
                where=where,
            )
        )
    return Export(kind="openrouter", charged=tuple(charged), match_field="provider_request_id")


def _decimal(value: object, where: str) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise ReconcileError(f"{where}: the cost {value!r} is not a number.") from None


def _int(value: object, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise ReconcileError(f"{where}: the token count {value!r} is not a whole number.") from None


def _time(value: object, where: str) -> datetime | None:
    if not value:
        return None
    parsed = parse_datetime(str(value).strip().replace(" ", "T", 1))
    if parsed is None:
        raise ReconcileError(f"{where}: the time {value!r} is not ISO 8601.")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
