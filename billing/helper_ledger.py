"""Local helper operations in the ledger: cost 0, and the shadow price they saved.

The local helper (agents.helper) does a task's overhead (titles, summaries, history
compression, page text, complexity estimates) for free. Each operation is one ledger row,
written settled at once on the helper's own catalog model (`roster/local-helper`,
provider `local`, priced at zero), with the tokens it read and wrote and its *shadow
price*: what the same tokens would have cost on the role's paid model, at that model's
price version in force then. The shadow model, the version and its unit prices are copied
onto the row, so a later price change never rewrites what was saved.

A helper row reserves nothing, spends nothing against a budget and leaves the task's paid
totals alone (cost, tokens, provider calls): it is not a provider call. Its rollup moves
in the same transaction, in the `helper_*` measures only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing.models import (
    CatalogModel,
    CatalogSource,
    HelperOperation,
    ModelPrice,
    PriceSource,
    PricingBasis,
    Usage,
    UsageStatus,
)
from billing.money import ZERO
from billing.pricing import PricingError, TokenUsage, cost_of, resolve_prices
from billing.rollups import rollup_add
from billing.selectors import price_current
from office.models import Task

LOCAL_HELPER_SLUG = "roster/local-helper"
LOCAL_HELPER_NAME = "Roster local helper"
LOCAL_HELPER_PROVIDER = "local"
# The helper has always been free: its one price version is in force from before any
# ledger row, so a row recorded with a past `now` finds it too.
FREE_SINCE = datetime(2000, 1, 1, tzinfo=UTC)

_BACKEND_MAX = Usage._meta.get_field("helper_backend").max_length or 30
_REASON_MAX = 2000


@dataclass(frozen=True)
class ShadowPrice:
    """What some tokens would have cost on a paid model.

    `cost` is None when it is unknown: no paid model, or one without an input and output
    price in force (a model marked free when unpriced costs a known zero). `prompt` and
    `completion` are the unit prices applied (the long-context tier resolved).
    """

    model: CatalogModel | None
    price: ModelPrice | None
    prompt: Decimal | None
    completion: Decimal | None
    cost: Decimal | None


def local_helper_price() -> ModelPrice:
    """The local helper's catalog model and its free price version (created on first use),
    as the price version with its model loaded."""
    price = (
        ModelPrice.objects.select_related("model")
        .filter(model__slug=LOCAL_HELPER_SLUG, source=PriceSource.LOCAL)
        .order_by("valid_from", "id")
        .first()
    )
    if price is not None:
        return price
    with transaction.atomic():
        model, _ = CatalogModel.objects.get_or_create(
            slug=LOCAL_HELPER_SLUG,
            defaults={
                "name": LOCAL_HELPER_NAME,
                "source": CatalogSource.LOCAL_HELPER,
                "free_when_unpriced": True,
                "input_modalities": ["text"],
                "output_modalities": ["text"],
            },
        )
        price, _ = ModelPrice.objects.get_or_create(
            model=model,
            source=PriceSource.LOCAL,
            defaults={"valid_from": FREE_SINCE, "prompt": ZERO, "completion": ZERO},
        )
    return price


def shadow_price_of(
    *, model: CatalogModel | None, input_tokens: int, output_tokens: int, at: datetime
) -> ShadowPrice:
    """What `input_tokens` read and `output_tokens` written would have cost on `model` at
    its price version in force at `at`: the tokens only (no per-request fee: the helper's
    work would have been part of a paid call, not a call of its own). Never raises for a
    price that cannot be applied; the cost is then unknown (None)."""
    if model is None:
        return ShadowPrice(model=None, price=None, prompt=None, completion=None, cost=None)
    price = price_current(model=model, at=at)
    if price is None:
        return ShadowPrice(model=model, price=None, prompt=None, completion=None, cost=None)
    usage = TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens, requests=0)
    try:
        prices = resolve_prices(usage, price.unit_prices())
    except PricingError:
        return ShadowPrice(model=model, price=price, prompt=None, completion=None, cost=None)
    if not prices.is_priced:
        cost = ZERO if model.free_when_unpriced else None
        return ShadowPrice(
            model=model, price=price, prompt=prices.prompt, completion=prices.completion, cost=cost
        )
    return ShadowPrice(
        model=model,
        price=price,
        prompt=prices.prompt,
        completion=prices.completion,
        cost=cost_of(usage, prices),
    )


def usage_record_helper(
    *,
    task: Task,
    operation: str,
    backend: str,
    input_tokens: int,
    output_tokens: int,
    shadow_model: CatalogModel | None,
    fallback_reason: str = "",
    now: datetime | None = None,
) -> Usage:
    """Record one local helper operation done for `task`: a settled ledger row at cost 0
    on the local helper's model, with the tokens it read and wrote and its shadow price
    on `shadow_model` (the role's paid model; None when there is none: savings unknown).

    Its rollup moves in the same transaction (helper measures only). No budget is
    reserved or charged and the task's paid totals do not move. Returns the row. Raises
    ValueError for an operation the ledger does not know or a negative token count.
    """
    if operation not in HelperOperation.values:
        raise ValueError(
            f"Unknown local helper operation {operation!r}; expected one of "
            f"{', '.join(HelperOperation.values)}."
        )
    for name, count in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {count!r}")
    now = now or timezone.now()
    helper = local_helper_price()
    shadow = shadow_price_of(
        model=shadow_model, input_tokens=input_tokens, output_tokens=output_tokens, at=now
    )
    with transaction.atomic():
        usage = Usage.objects.create(
            call_id=uuid.uuid4().hex,
            task=task,
            role_id=task.role_id,
            person_id=task.created_by_id,
            model=helper.model,
            price=helper,
            provider=LOCAL_HELPER_PROVIDER,
            attempt=0,  # not a provider attempt
            status=UsageStatus.SETTLED,
            basis=PricingBasis.COMPUTED,
            estimated_input_tokens=input_tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            price_prompt=ZERO,
            price_completion=ZERO,
            cost=ZERO,
            helper_operation=operation,
            helper_backend=backend[:_BACKEND_MAX],
            helper_fallback_reason=fallback_reason[:_REASON_MAX],
            shadow_model=shadow.model,
            shadow_price=shadow.price,
            shadow_price_prompt=shadow.prompt,
            shadow_price_completion=shadow.completion,
            shadow_cost=shadow.cost,
            created_at=now,
            settled_at=now,
        )
        rollup_add(usage=usage, first_of_task=False)
    return usage
