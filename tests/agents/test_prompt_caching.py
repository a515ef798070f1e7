"""Prompt caching over a real socket: the stable prefix (the role's system prompt, then a
task's prefix such as a spec) is sent so that the provider caches it (Anthropic:
cache_control on each part; OpenAI-compatible and Gemini: automatically, by prefix), the
sandbox provider reports cached tokens on the repeat, and billing prices them at the
cache read price."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from agents.execution import task_execute
from agents.liveness import worker_id
from agents.models import RoleBinding
from agents.providers.base import ChatMessage, ChatRequest, Endpoint
from agents.providers.registry import adapter_for
from agents.services import credential_create
from billing.catalog import catalog_parse, catalog_sync
from billing.models import CatalogModel, Usage, UsageStatus
from billing.pricing import UnitPrices, cost_of
from office.models import Role, Task, TaskStatus
from tests.canary import SANDBOX_KEY

# (provider kind, catalog model, model name on the wire, base-URL suffix on the sandbox)
WIRES = [
    ("openrouter", "deepseek/deepseek-v4-pro", "deepseek/deepseek-v4-pro", "/api/v1"),
    ("openai", "openai/gpt-4.1-mini", "gpt-4.1-mini", "/v1"),
    ("anthropic", "anthropic/claude-haiku-4.5", "claude-haiku-4.5", ""),
    ("gemini", "google/gemini-2.5-flash-lite", "gemini-2.5-flash-lite", ""),
]
IDS = [wire[0] for wire in WIRES]


def snapshot() -> dict[str, dict]:
    data = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text())["data"]
    return {entry["id"]: entry for entry in data}


def stable_prefix() -> tuple[str, str]:
    """A system prompt and a spec no earlier test sent (the sandbox remembers prompts
    for the whole session), long enough that the cached part dominates the bill."""
    marker = uuid.uuid4().hex
    system = f"You are the release engineer ({marker}). " + "Follow the house style. " * 60
    spec = "# Task title\nShip it.\n\n## Detailed spec\n" + "Every decision is made here. " * 80
    return system, spec


@pytest.mark.parametrize(("provider", "slug", "upstream", "suffix"), WIRES, ids=IDS)
def test_a_repeated_prefix_is_read_from_the_cache_and_priced_below_the_first_call(
    sandbox, provider, slug, upstream, suffix
):
    system, spec = stable_prefix()
    adapter = adapter_for(provider)
    endpoint = Endpoint(base_url=sandbox.url + suffix, api_key=SANDBOX_KEY)
    prices = UnitPrices.from_openrouter(snapshot()[slug]["pricing"])

    def call(question: str):
        request = ChatRequest(
            model=upstream,
            messages=(ChatMessage(role="user", content=question),),
            max_tokens=64,
            system=system,
            prefix=spec,
        )
        return adapter.complete(endpoint=endpoint, request=request).usage

    first = call("Which files change?")
    second = call("Which checks prove it?")

    assert first is not None
    assert second is not None
    assert first.cached_input_tokens == 0
    assert second.cached_input_tokens > 0
    # The whole stable prefix was cached: system prompt and spec, not the question.
    assert second.cached_input_tokens > (len(system) + len(spec)) // 4
    assert cost_of(second, prices) < cost_of(first, prices)
    if provider == "anthropic":  # explicit caching: the first call wrote the cache
        assert first.cache_write_tokens == second.cached_input_tokens


def cost_by_hand(row: Usage, pricing: dict[str, str]) -> Decimal:
    """Tokens x the catalog's price strings, each kind at its own price."""
    uncached = row.input_tokens - row.cached_input_tokens - row.cache_write_tokens
    cost = Decimal(uncached) * Decimal(pricing["prompt"])
    cost += Decimal(row.cached_input_tokens) * Decimal(pricing.get("input_cache_read", "0"))
    cost += Decimal(row.cache_write_tokens) * Decimal(pricing.get("input_cache_write", "0"))
    return cost + Decimal(row.output_tokens) * Decimal(pricing["completion"])


@pytest.fixture
def catalog(db) -> dict[str, CatalogModel]:
    entries = snapshot()
    catalog_sync(entries=catalog_parse({"data": [entries[slug] for _, slug, _, _ in WIRES]}))
    return {model.slug: model for model in CatalogModel.objects.all()}


@pytest.mark.django_db
@pytest.mark.parametrize(("provider", "slug", "upstream", "suffix"), WIRES, ids=IDS)
def test_billing_charges_the_cache_read_price_for_a_tasks_cached_prefix(
    sandbox, catalog, provider, slug, upstream, suffix
):
    system, spec = stable_prefix()
    role = Role.objects.create(slug=f"cached-{provider}", name="Cached", system_prompt=system)
    credential = credential_create(
        label=f"cache {provider}",
        provider=provider,
        base_url=sandbox.url + suffix,
        raw_secret=SANDBOX_KEY,
    )
    RoleBinding.objects.create(role=role, model=catalog[slug], credential=credential, max_tokens=64)
    tasks = [
        Task.objects.create(role=role, prompt=question, prefix=spec)
        for question in ("Which files change?", "Which checks prove it?")
    ]

    for task in tasks:
        task_execute(task_id=task.pk, worker_id=worker_id())

    first, second = (Usage.objects.get(task=task) for task in tasks)
    assert (first.status, second.status) == (UsageStatus.SETTLED, UsageStatus.SETTLED)
    assert first.cached_input_tokens == 0
    assert second.cached_input_tokens > (len(system) + len(spec)) // 4
    assert second.cost < first.cost
    pricing = snapshot()[slug]["pricing"]
    assert second.price_input_cache_read == Decimal(pricing["input_cache_read"])
    for row in (first, second):
        assert row.cost == cost_by_hand(row, pricing)
    for task in tasks:
        task.refresh_from_db()
        assert task.status == TaskStatus.DONE, task.error
