"""What-if re-pricing: what a period would have cost with another model.

The ledger's own token counts for the period (from the rollups: calls and tokens by
kind, per role x model) are priced again at one target model's unit prices in force now,
either for one role ("coder on model X") or for every role ("one premium model for
everything"). Actual spend is the rollups' exact cost.

What the rollups can and cannot re-price:
- Per-token prices (input, cache read, cache write, output, reasoning) and per-request
  prices (x calls) re-price exactly: a sum of tokens x a unit price is the sum of each
  call's tokens x that price.
- Long-context tiers are per call (a call whose input exceeds the threshold is charged
  the tier price for all its tokens), and rollups no longer know each call's size. We
  price everything at the base tier and flag the report (`long_context_tier_ignored`):
  for a target model with a tier the re-priced figure is a lower bound.
- Batch discounts are per call too; rollups do not record batch calls, so none is
  applied (an upper bound for batch-heavy work).
- Rollups merge 5-minute and 1-hour cache writes; both are priced at the 5-minute
  write price. Images and web searches are not in the rollups and are not re-priced.
- Cache reads and writes are kept as they happened: another model might have cached
  differently, but the ledger's counts are the only facts we have.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from billing.calculator import MILLION, per_million_text
from billing.models import CatalogModel, UsageRollup
from billing.money import EXACT, ZERO, format_usd, money_sum
from billing.pricing import PricingError, TokenUsage, UnitPrices, cost_of
from billing.selectors import price_current
from office.fields import decimal_text
from office.models import Role

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


class WhatIfError(Exception):
    """The re-pricing cannot be done (the target model has no price in force)."""


@dataclass(frozen=True)
class WhatIfRow:
    """One role's period: its ledger counts, what it cost, and what it would have cost."""

    role_slug: str
    role_name: str
    models_used: tuple[str, ...]
    calls: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    actual: Decimal
    repriced: Decimal
    # Calls whose model had no price: their actual cost is unknown (counted as zero).
    unpriced_calls: int = 0

    @property
    def difference(self) -> Decimal:
        """Re-priced minus actual: negative when the target model is cheaper."""
        return EXACT.subtract(self.repriced, self.actual)

    @property
    def difference_text(self) -> str:
        return format_signed_usd(self.difference)

    @property
    def difference_exact(self) -> str:
        return format_signed_usd(self.difference, exact=True)


@dataclass(frozen=True)
class WhatIfReport:
    """Actual vs re-priced spend per role for [start, end) at the target model's prices."""

    start: date
    end: date
    model_slug: str
    model_name: str
    role_slug: str | None  # None: every role re-priced
    prices: UnitPrices
    price_valid_from: datetime | None  # None: an unpriced model the admin marked free
    rows: tuple[WhatIfRow, ...]

    @property
    def actual(self) -> Decimal:
        return money_sum(row.actual for row in self.rows)

    @property
    def repriced(self) -> Decimal:
        return money_sum(row.repriced for row in self.rows)

    @property
    def difference(self) -> Decimal:
        return EXACT.subtract(self.repriced, self.actual)

    @property
    def difference_text(self) -> str:
        return format_signed_usd(self.difference)

    @property
    def difference_exact(self) -> str:
        return format_signed_usd(self.difference, exact=True)

    @property
    def unpriced_calls(self) -> int:
        return sum(row.unpriced_calls for row in self.rows)

    @property
    def price_lines(self) -> list[tuple[str, str]]:
        """The target's unit prices for people: (kind, "$3.00 per 1M tokens"), priced
        kinds only."""
        per_token = [
            ("Input", self.prices.prompt),
            ("Output", self.prices.completion),
            ("Cache read", self.prices.input_cache_read),
            ("Cache write", self.prices.input_cache_write),
            ("Reasoning", self.prices.internal_reasoning),
        ]
        lines = [
            (kind, f"{per_million_text(EXACT.multiply(price, MILLION))} per 1M tokens")
            for kind, price in per_token
            if price is not None
        ]
        if self.prices.request is not None:
            lines.append(("Per request", f"${decimal_text(self.prices.request)} per call"))
        return lines

    @property
    def long_context_tier_ignored(self) -> bool:
        """True when the target model has a long-context tier the rollups cannot apply."""
        return self.prices.long_context_threshold is not None


def format_signed_usd(amount: Decimal, *, exact: bool = False) -> str:
    """A difference for people: "+$1.250000", "-$0.500000" or "$0.000000"; with `exact`,
    every digit ("+$1.25")."""
    text = f"${decimal_text(abs(amount))}" if exact else format_usd(abs(amount))
    if amount > 0:
        return f"+{text}"
    if amount < 0:
        return f"-{text}"
    return text


def target_prices(
    *, model: CatalogModel, at: datetime | None = None
) -> tuple[UnitPrices, datetime | None]:
    """The unit prices `model` charges at `at` (default now) and when they took effect.

    An unpriced model an admin marked free is priced at zero (valid_from None). Raises
    WhatIfError when the model has no input/output price in force.
    """
    price = price_current(model=model, at=at or timezone.now())
    if price is not None and price.unit_prices().is_priced:
        return price.unit_prices(), price.valid_from
    if model.free_when_unpriced:
        return UnitPrices(prompt=ZERO, completion=ZERO), None
    raise WhatIfError(
        f"{model.slug} has no input/output price in force, so nothing can be re-priced "
        "with it. Sync the catalog or set a price override in the admin."
    )


def whatif_reprice(
    *, start: date, end: date, model: CatalogModel, role: Role | None
) -> WhatIfReport:
    """Re-price the rollups of local days [start, end) with `model`'s prices in force now.

    With `role`, only that role is re-priced and reported (a row of zeros when it has no
    usage); with None, every role with usage in the period is, each as if it had used
    `model` for all its calls. Rows are ordered by actual cost, highest first, then slug.
    See the module docstring for what rollups can re-price (long-context tiers: no).

    Raises WhatIfError when `model` has no price in force.
    """
    prices, valid_from = target_prices(model=model)
    # Provider calls only: the local helper's rows hold no paid tokens to re-price.
    rollups = UsageRollup.objects.filter(day__gte=start, day__lt=end).exclude(
        calls=0, failed_calls=0
    )
    if role is not None:
        rollups = rollups.filter(role=role)

    # Tokens are summed in SQL (integers); money is summed in Python (exact on SQLite).
    groups = (
        rollups.order_by()
        .values("role_id", "model__slug")
        .annotate(
            calls_sum=Sum("calls"),
            unpriced_sum=Sum("unpriced_calls"),
            **{f"{name}_sum": Sum(name) for name in TOKEN_FIELDS},
        )
    )
    actual: defaultdict[int, list[Decimal]] = defaultdict(list)
    for role_id, cost in rollups.order_by().values_list("role_id", "cost").iterator():
        actual[role_id].append(cost)

    per_role: defaultdict[int, list[dict[str, object]]] = defaultdict(list)
    for group in groups:
        per_role[group["role_id"]].append(group)
    role_ids = set(per_role) | set(actual)
    if role is not None:
        role_ids.add(role.pk)
    roles = Role.objects.in_bulk(list(role_ids))

    rows = [
        _row(role=roles[role_id], groups=per_role[role_id], costs=actual[role_id], prices=prices)
        for role_id in role_ids
    ]
    rows.sort(key=lambda row: (-row.actual, row.role_slug))
    return WhatIfReport(
        start=start,
        end=end,
        model_slug=model.slug,
        model_name=model.name,
        role_slug=role.slug if role is not None else None,
        prices=prices,
        price_valid_from=valid_from,
        rows=tuple(rows),
    )


def _row(
    *, role: Role, groups: list[dict[str, object]], costs: list[Decimal], prices: UnitPrices
) -> WhatIfRow:
    totals = dict.fromkeys((*TOKEN_FIELDS, "calls", "unpriced"), 0)
    repriced: list[Decimal] = []
    for group in groups:
        counts = {name: int(group[f"{name}_sum"] or 0) for name in (*TOKEN_FIELDS, "calls")}
        for name, value in counts.items():
            totals[name] += value
        totals["unpriced"] += int(group["unpriced_sum"] or 0)
        if counts["calls"] == 0:
            continue  # only failed calls: nothing was billed, nothing to re-price
        try:
            usage = TokenUsage(
                input_tokens=counts["input_tokens"],
                output_tokens=counts["output_tokens"],
                cached_input_tokens=counts["cached_input_tokens"],
                cache_write_tokens=counts["cache_write_tokens"],
                reasoning_tokens=counts["reasoning_tokens"],
                requests=counts["calls"],
            )
        except PricingError as exc:
            # Sums of valid ledger rows always satisfy TokenUsage; this is corruption.
            raise WhatIfError(f"The rollups of {role.slug} are inconsistent: {exc}") from exc
        repriced.append(cost_of(usage, _flat(prices)))
    return WhatIfRow(
        role_slug=role.slug,
        role_name=role.name,
        models_used=tuple(sorted(str(group["model__slug"]) for group in groups)),
        calls=totals["calls"],
        input_tokens=totals["input_tokens"],
        output_tokens=totals["output_tokens"],
        cached_input_tokens=totals["cached_input_tokens"],
        cache_write_tokens=totals["cache_write_tokens"],
        reasoning_tokens=totals["reasoning_tokens"],
        actual=money_sum(costs),
        repriced=money_sum(repriced),
        unpriced_calls=totals["unpriced"],
    )


def _flat(prices: UnitPrices) -> UnitPrices:
    # The base tier for every token, and no batch discount: see the module docstring.
    return UnitPrices(**prices.as_dict())
