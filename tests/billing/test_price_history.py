"""Price history: a price change never rewrites a ledger row, and every row can be
re-priced from its own stored unit prices and tokens."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from billing.catalog import catalog_parse, catalog_sync
from billing.ledger import CallTarget, usage_fail, usage_open, usage_settle
from billing.models import CatalogModel, ModelPrice, PriceSource, Usage, UsageStatus
from billing.pricing import TokenUsage
from billing.selectors import price_current
from office.models import Task
from tests.factories import ModelPriceFactory, TaskFactory

pytestmark = pytest.mark.django_db

MARCH_FILE = Path(__file__).resolve().parent.parent / "data" / "openrouter-models-2026-03.json"
JUNE_FILE = Path(settings.ROSTER_CATALOG_SNAPSHOT)
MARCH = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
JUNE = datetime(2026, 6, 8, 12, 0, tzinfo=UTC)
# In both snapshots: DeepSeek's prices changed between them, Claude 3 Haiku's did not.
CHANGED, UNCHANGED = "deepseek/deepseek-chat", "anthropic/claude-3-haiku"

TOKEN_FIELDS = [field.name for field in fields(TokenUsage) if field.name != "requests"]
PRICE_FIELDS = [
    "price_id",
    "price_prompt",
    "price_completion",
    "price_input_cache_read",
    "price_input_cache_write",
    "price_input_cache_write_1h",
    "price_internal_reasoning",
    "price_request",
    "price_image",
    "price_web_search",
    "price_batch_discount",
    "cost",
]


def sync_file(path: Path, *, now: datetime) -> int:
    """Sync a saved catalog; return how many price versions it added."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    return catalog_sync(entries=catalog_parse(payload), now=now).prices_added


def call(
    task: Task,
    model: CatalogModel,
    usage: TokenUsage | None,
    *,
    now: datetime | None = None,
) -> Usage:
    """Open a call to `model` (prices in force at `now`) and settle it with `usage`."""
    row = open_call(task, model, now=now)
    return usage_settle(usage=row, token_usage=usage, prompt_texts=("Summarise the memo.",))


def open_call(task: Task, model: CatalogModel, *, now: datetime | None = None) -> Usage:
    return usage_open(
        task=task,
        target=CallTarget(
            model=model,
            provider="openrouter",
            credential_id=None,
            credential_label="",
            upstream_model=model.slug,
        ),
        attempt=1,
        estimated_input_tokens=1000,
        input_tokens_bound=2000,
        max_output_tokens=500,
        now=now,
    )


def ledger_snapshot() -> list[dict[str, Any]]:
    """Every ledger row as stored: what a price change must never touch."""
    return [dict(row) for row in Usage.objects.order_by("pk").values()]


def exact(value: Decimal | None) -> Fraction | None:
    return None if value is None else Fraction(value)


def first(*values: Fraction | None) -> Fraction:
    found = next((value for value in values if value is not None), None)
    assert found is not None
    return found


def cost_from_row(row: Usage) -> Fraction:
    """A settled row's cost, recomputed from nothing but the row: its stored unit prices
    (long-context tier already applied) times its tokens, by the billing rules."""
    prompt, completion = first(exact(row.price_prompt)), first(exact(row.price_completion))
    write_5m = first(exact(row.price_input_cache_write), prompt)
    uncached = (
        row.input_tokens
        - row.cached_input_tokens
        - row.cache_write_tokens
        - row.cache_write_1h_tokens
    )
    tokens = (
        uncached * prompt
        + row.cached_input_tokens * first(exact(row.price_input_cache_read), prompt)
        + row.cache_write_tokens * write_5m
        + row.cache_write_1h_tokens * first(exact(row.price_input_cache_write_1h), write_5m)
        + (row.output_tokens - row.reasoning_tokens) * completion
        + row.reasoning_tokens * first(exact(row.price_internal_reasoning), completion)
    )
    if row.is_batch and row.price_batch_discount is not None:
        tokens *= 1 - Fraction(row.price_batch_discount)
    # One request per settled row; fees are never discounted.
    return (
        tokens
        + first(exact(row.price_request), Fraction(0))
        + row.images * first(exact(row.price_image), Fraction(0))
        + row.web_searches * first(exact(row.price_web_search), Fraction(0))
    )


# --- Catalog re-syncs ------------------------------------------------------------------------


def test_resync_with_changed_prices_adds_a_version_and_rewrites_no_ledger_row() -> None:
    sync_file(MARCH_FILE, now=MARCH)
    task = TaskFactory()
    during_march = MARCH + timedelta(days=1)
    usage = TokenUsage(input_tokens=12_000, cached_input_tokens=4000, output_tokens=800)
    for slug in (CHANGED, UNCHANGED):
        model = CatalogModel.objects.get(slug=slug)
        call(task, model, usage, now=during_march)
        call(task, model, None, now=during_march)  # estimated: priced all the same
    before = ledger_snapshot()
    march_cost = Usage.objects.get(model__slug=CHANGED, basis="computed").cost

    assert sync_file(JUNE_FILE, now=JUNE) > 0

    assert ledger_snapshot() == before
    changed = CatalogModel.objects.get(slug=CHANGED)
    assert ModelPrice.objects.filter(model=changed).count() == 2
    assert ModelPrice.objects.filter(model__slug=UNCHANGED).count() == 1
    # A call opened after the sync is charged at the new version; the old row is not.
    june_row = call(task, changed, usage, now=JUNE + timedelta(hours=1))
    assert june_row.price == price_current(model=changed, at=JUNE)
    assert june_row.price_prompt == Decimal("0.0000002002")
    assert june_row.cost != march_cost
    assert Usage.objects.get(pk=before[0]["id"]).cost == before[0]["cost"]


def test_resyncing_the_same_catalog_adds_no_version_and_rewrites_nothing() -> None:
    sync_file(JUNE_FILE, now=JUNE)
    model = CatalogModel.objects.get(slug=CHANGED)
    call(TaskFactory(), model, TokenUsage(input_tokens=100, output_tokens=10), now=JUNE)
    versions = list(ModelPrice.objects.order_by("pk").values())
    before = ledger_snapshot()

    assert sync_file(JUNE_FILE, now=JUNE + timedelta(hours=6)) == 0

    assert list(ModelPrice.objects.order_by("pk").values()) == versions
    assert ledger_snapshot() == before


# --- Admin overrides -------------------------------------------------------------------------


def add_price(admin_client: Any, **data: Any) -> Any:
    return admin_client.post(reverse("admin:billing_modelprice_add"), data)


def test_admin_override_applies_to_calls_opened_after_it_only(admin_client: Any) -> None:
    synced = ModelPriceFactory(valid_from=timezone.now() - timedelta(days=1))
    model, task = synced.model, TaskFactory()
    usage = TokenUsage(input_tokens=300_000, output_tokens=1000, is_batch=True)
    settled_before = call(task, model, usage)
    opened_before = open_call(task, model)

    response = add_price(
        admin_client,
        model=model.pk,
        prompt="0.000003",
        completion="0.000015",
        long_context_threshold="200000",
        long_context_prompt="0.000006",
        long_context_completion="0.0000225",
        batch_discount="0.5",
    )

    assert response.status_code == 302
    override = price_current(model=model)
    assert override is not None
    assert override.source == PriceSource.OVERRIDE
    assert (override.long_context_threshold, override.batch_discount) == (200_000, Decimal("0.5"))
    opened_after = open_call(task, model)
    settled_late = usage_settle(usage=opened_before, token_usage=usage)
    settled_after = usage_settle(usage=opened_after, token_usage=usage)

    # Opened before the override: the sync price, $1 / $2 per million, no tier or discount.
    for row in (settled_before, settled_late):
        assert row.price_id == synced.pk
        assert row.cost == Decimal("0.302")  # 300000 x 0.000001 + 1000 x 0.000002
    # Opened after: the tier ($6 / $22.50 above 200K) and the batch discount.
    assert settled_after.price_id == override.pk
    assert (settled_after.price_prompt, settled_after.price_completion) == (
        Decimal("0.000006"),
        Decimal("0.0000225"),
    )
    assert settled_after.cost == Decimal("0.91125")  # (1.8 + 0.0225) x 0.5
    assert settled_before.pk in {row.pk for row in Usage.objects.filter(price=synced)}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"long_context_prompt": "0.000006"}, "Long-context prices need a long-context threshold."),
        ({"long_context_threshold": "1000"}, "needs at least one long-context price"),
        (
            {
                "input_cache_read": "0.000001",
                "long_context_threshold": "1000",
                "long_context_prompt": "0.000007",
            },
            "has no exact decimal value",
        ),
        ({"batch_discount": "1.5"}, "between 0 and 1"),
        (
            {"long_context_threshold": "1000", "long_context_completion": "-0.00001"},
            "The long context completion cannot be negative.",
        ),
    ],
)
def test_admin_refuses_prices_that_cannot_be_charged_exactly(
    admin_client: Any, data: dict[str, str], problem: str
) -> None:
    synced = ModelPriceFactory()

    response = add_price(
        admin_client, model=synced.model.pk, prompt="0.000003", completion="0.000015", **data
    )

    assert response.status_code == 200
    assert problem in response.content.decode()
    assert ModelPrice.objects.count() == 1


def test_admin_add_page_offers_every_price_kind_the_tier_and_the_discount(
    admin_client: Any,
) -> None:
    page = admin_client.get(reverse("admin:billing_modelprice_add")).content.decode()
    for name in (
        "input_cache_write_1h",
        "internal_reasoning",
        "web_search",
        "long_context_threshold",
        "long_context_input_cache_read",
        "batch_discount",
    ):
        assert f'name="{name}"' in page
    assert 'name="valid_from"' not in page  # an override is in force from now
    assert 'name="source"' not in page


# --- Every row re-prices from itself --------------------------------------------------------


def test_every_settled_row_costs_its_own_unit_prices_times_its_tokens() -> None:
    price = ModelPriceFactory(
        prompt=Decimal("0.000003"),
        completion=Decimal("0.000015"),
        input_cache_read=Decimal("0.0000003"),
        input_cache_write=Decimal("0.00000375"),
        input_cache_write_1h=Decimal("0.000006"),
        internal_reasoning=Decimal("0.000015"),
        request=Decimal("0.0001"),
        image=Decimal("0.001"),
        web_search=Decimal("0.01"),
        long_context_threshold=200_000,
        long_context_prompt=Decimal("0.000006"),
        long_context_completion=Decimal("0.0000225"),
        batch_discount=Decimal("0.5"),
        valid_from=timezone.now() - timedelta(days=1),
    )
    model, task = price.model, TaskFactory()
    usages = [
        TokenUsage(input_tokens=1200, output_tokens=300),
        TokenUsage(
            input_tokens=30_000,
            cached_input_tokens=20_000,
            cache_write_tokens=2000,
            cache_write_1h_tokens=4000,
            output_tokens=900,
            reasoning_tokens=600,
            web_searches=2,
            images=3,
        ),
        TokenUsage(
            input_tokens=250_000,
            cached_input_tokens=40_000,
            cache_write_tokens=8000,
            cache_write_1h_tokens=2000,
            output_tokens=3000,
            reasoning_tokens=1000,
            web_searches=1,
            is_batch=True,
        ),
        TokenUsage(input_tokens=200_000, output_tokens=10, is_batch=True),
        TokenUsage(input_tokens=200_001, output_tokens=10),
    ]
    for usage in usages:
        call(task, model, usage)
    call(task, model, None)  # no usage reported: estimated, still priced from the row
    usage_fail(usage=open_call(task, model), error="HTTP 500", http_status=500, latency_ms=9)
    # A newer version does not change how the older rows re-price.
    ModelPriceFactory(model=model, prompt=Decimal("0.000001"), completion=Decimal("0.000001"))
    call(task, model, usages[1])

    rows = list(Usage.objects.order_by("pk"))
    assert len(rows) == 8
    for row in rows:
        if row.status == UsageStatus.FAILED:
            assert row.cost == 0
            continue
        assert row.status == UsageStatus.SETTLED
        assert Fraction(row.cost) == cost_from_row(row), row.call_id
    tiered = rows[2]
    assert (tiered.price_prompt, tiered.price_input_cache_write_1h) == (
        Decimal("0.000006"),
        Decimal("0.000012"),
    )
    assert tiered.cost == Decimal("0.69785")  # (1.2 + 0.024 + 0.06 + 0.024 + 0.0675) x 0.5 + 0.0101
    assert rows[3].price_prompt == Decimal("0.000003")  # at the threshold: base prices
    assert rows[4].price_prompt == Decimal("0.000006")  # one token above: the tier
    assert rows[7].price_prompt == Decimal("0.000001")


def test_a_synced_price_change_keeps_the_admins_long_context_tier_and_batch_discount():
    from billing.catalog import catalog_parse, catalog_sync
    from billing.models import CatalogModel, ModelPrice

    def payload(prompt: str) -> dict:
        return {
            "data": [
                {
                    "id": "google/tiered",
                    "name": "Tiered",
                    "pricing": {"prompt": prompt, "completion": "0.00001"},
                }
            ]
        }

    catalog_sync(entries=catalog_parse(payload("0.00000125")))
    model = CatalogModel.objects.get(slug="google/tiered")
    ModelPrice.objects.create(
        model=model,
        source="override",
        prompt=Decimal("0.00000125"),
        completion=Decimal("0.00001"),
        long_context_threshold=200_000,
        long_context_prompt=Decimal("0.0000025"),
        long_context_completion=Decimal("0.000015"),
        batch_discount=Decimal("0.5"),
    )
    assert catalog_sync(entries=catalog_parse(payload("0.00000125"))).prices_added == 0

    catalog_sync(entries=catalog_parse(payload("0.000001")))

    latest = ModelPrice.objects.filter(model=model).order_by("-valid_from", "-id").first()
    assert (latest.source, latest.prompt) == ("sync", Decimal("0.000001"))
    assert latest.long_context_threshold == 200_000
    assert latest.long_context_prompt == Decimal("0.0000025")
    assert latest.batch_discount == Decimal("0.5")
    assert catalog_sync(entries=catalog_parse(payload("0.000001"))).prices_added == 0
