"""Rollups move with the ledger in the same transaction, and a rebuild from the ledger
finds them exactly equal after a randomized run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.ledger import CallTarget, usage_fail, usage_open, usage_settle
from billing.models import Usage, UsageRollup
from billing.money import money_sum
from billing.pricing import TokenUsage
from billing.rollups import rollups_rebuild
from tests.factories import (
    CatalogModelFactory,
    ModelPriceFactory,
    RoleFactory,
    TaskFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def open_call(task, model, *, at=None, attempt=1):
    return usage_open(
        task=task,
        target=CallTarget(
            model=model,
            provider="openrouter",
            credential_id=None,
            credential_label="k",
            upstream_model=model.slug,
        ),
        attempt=attempt,
        estimated_input_tokens=10,
        input_tokens_bound=40,
        max_output_tokens=50,
        now=at,
    )


def test_settlement_adds_the_call_to_its_rollup():
    model = CatalogModelFactory()
    ModelPriceFactory(
        model=model,
        prompt=Decimal("0.000001"),
        completion=Decimal("0.000002"),
        input_cache_read=Decimal("0.0000001"),
    )
    task = TaskFactory()
    usage = open_call(task, model)
    usage_settle(
        usage=usage,
        token_usage=TokenUsage(input_tokens=100, output_tokens=10, cached_input_tokens=40),
    )
    failed = open_call(task, model, attempt=2)
    usage_fail(usage=failed, error="boom", http_status=500, latency_ms=1)

    rollup = UsageRollup.objects.get()
    assert (rollup.tasks, rollup.calls, rollup.failed_calls) == (1, 1, 1)
    assert (rollup.input_tokens, rollup.output_tokens, rollup.cached_input_tokens) == (100, 10, 40)
    assert rollup.cost == usage.cost == Decimal("0.000084")
    assert rollup.cache_savings == Decimal(40) * Decimal("0.0000009")
    assert rollup.person_id == task.created_by_id


def test_rebuild_equals_incremental_rollups_after_a_randomized_run():
    rng = random.Random(20261123)
    models = []
    for _ in range(3):
        model = CatalogModelFactory()
        ModelPriceFactory(
            model=model,
            valid_from=datetime(2026, 1, 1, tzinfo=UTC),
            prompt=Decimal(rng.choice(["0.000000435", "0.00000008333333333333334", "0.000003"])),
            completion=Decimal(rng.choice(["0.00000087", "0.000015"])),
            input_cache_read=Decimal("0.00000001"),
        )
        models.append(model)
    roles = [RoleFactory() for _ in range(3)]
    people = [UserFactory(), UserFactory(), None]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    calls = 0
    for n in range(200):
        task = TaskFactory(role=rng.choice(roles), created_by=rng.choice(people))
        at = start + timedelta(hours=rng.randrange(0, 24 * 20), minutes=rng.randrange(60))
        # One to three calls per task (retries), possibly on later days.
        for attempt in range(1, rng.randrange(2, 5)):
            calls += 1
            at += timedelta(hours=rng.randrange(0, 30))
            usage = open_call(task, rng.choice(models), at=at, attempt=attempt)
            outcome = rng.random()
            if outcome < 0.15:
                usage_fail(usage=usage, error="x", http_status=503, latency_ms=5)
            elif outcome < 0.25:
                usage_settle(
                    usage=usage, token_usage=None, prompt_texts=("abc" * n,), output_text="a"
                )
            else:
                inp = rng.randrange(1, 5000)
                usage_settle(
                    usage=usage,
                    token_usage=TokenUsage(
                        input_tokens=inp,
                        output_tokens=rng.randrange(0, 900),
                        cached_input_tokens=rng.randrange(0, inp),
                    ),
                    reported_cost=Decimal("0.0001") if rng.random() < 0.3 else None,
                )

    check = rollups_rebuild(dry_run=True)
    assert check.differences == []
    assert check.ledger_rows == calls > 200
    # Each task counts once, at its first call to close, whatever that call's outcome.
    assert sum(r.tasks for r in UsageRollup.objects.all()) == 200
    incremental = {
        (r.day, r.role_id, r.model_id, r.person_id): r.cost for r in UsageRollup.objects.all()
    }

    UsageRollup.objects.filter(pk=UsageRollup.objects.first().pk).update(cost=Decimal("999"))
    broken = rollups_rebuild()
    assert len(broken.differences) == 1
    assert "cost 999" in broken.differences[0]
    rebuilt = {
        (r.day, r.role_id, r.model_id, r.person_id): r.cost for r in UsageRollup.objects.all()
    }
    assert rebuilt == incremental
    assert rollups_rebuild(dry_run=True).differences == []
    assert money_sum(rebuilt.values()) == money_sum(u.cost for u in Usage.objects.all())
