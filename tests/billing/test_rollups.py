"""Rollups move with the ledger in the same transaction, and a rebuild from the ledger
finds them exactly equal after a randomized run (provider calls and local helper
operations)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.ledger import (
    CallTarget,
    usage_fail,
    usage_open,
    usage_record_helper,
    usage_settle,
)
from billing.models import HelperOperation, Usage, UsageRollup
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
    unpriced = CatalogModelFactory()
    ModelPriceFactory(
        model=unpriced, valid_from=datetime(2026, 1, 1, tzinfo=UTC), prompt=None, completion=None
    )
    # The role's paid model the helper's work is priced at: priced, unpriced or none.
    shadows = [*models, unpriced, None]
    roles = [RoleFactory() for _ in range(3)]
    people = [UserFactory(), UserFactory(), None]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    calls = helpers = 0
    for n in range(200):
        task = TaskFactory(role=rng.choice(roles), created_by=rng.choice(people))
        at = start + timedelta(hours=rng.randrange(0, 24 * 20), minutes=rng.randrange(60))
        # One to three calls per task (retries), possibly on later days, with local helper
        # operations before and between them.
        for attempt in range(1, rng.randrange(2, 5)):
            for _ in range(rng.choice([0, 0, 1, 2])):
                helpers += 1
                usage_record_helper(
                    task=task,
                    operation=rng.choice(HelperOperation.values),
                    backend=rng.choice(["builtin", "openai_compatible"]),
                    input_tokens=rng.randrange(0, 20_000),
                    output_tokens=rng.randrange(0, 600),
                    shadow_model=rng.choice(shadows),
                    now=at,
                )
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
    assert check.ledger_rows == calls + helpers
    assert calls > 200
    assert helpers > 100
    # Each task counts once, at its first provider call to close, whatever that call's
    # outcome; helper operations never count one.
    assert sum(r.tasks for r in UsageRollup.objects.all()) == 200
    helper_rows = Usage.objects.exclude(helper_operation="")
    assert sum(r.helper_calls for r in UsageRollup.objects.all()) == helpers
    assert money_sum(r.helper_savings for r in UsageRollup.objects.all()) == money_sum(
        u.shadow_cost for u in helper_rows
    )
    assert sum(r.helper_unpriced_calls for r in UsageRollup.objects.all()) == (
        helper_rows.filter(shadow_cost__isnull=True).count()
    )
    incremental = {
        (r.day, r.role_id, r.model_id, r.person_id): r.cost for r in UsageRollup.objects.all()
    }
    incremental_helper = {
        (r.day, r.role_id, r.model_id, r.person_id): (r.helper_savings, r.helper_input_tokens)
        for r in UsageRollup.objects.all()
    }

    # Helper operations have rollup rows of their own (the helper's model): two rows.
    paid_row = UsageRollup.objects.filter(calls__gt=0).first()
    helper_row = UsageRollup.objects.filter(helper_calls__gt=0).first()
    UsageRollup.objects.filter(pk=paid_row.pk).update(cost=Decimal("999"))
    UsageRollup.objects.filter(pk=helper_row.pk).update(helper_savings=Decimal("7"))
    broken = rollups_rebuild()
    assert len(broken.differences) == 2
    assert "cost 999" in "".join(broken.differences)
    assert "helper_savings 7" in "".join(broken.differences)
    rebuilt = {
        (r.day, r.role_id, r.model_id, r.person_id): r.cost for r in UsageRollup.objects.all()
    }
    assert rebuilt == incremental
    assert {
        (r.day, r.role_id, r.model_id, r.person_id): (r.helper_savings, r.helper_input_tokens)
        for r in UsageRollup.objects.all()
    } == incremental_helper
    assert rollups_rebuild(dry_run=True).differences == []
    assert money_sum(rebuilt.values()) == money_sum(u.cost for u in Usage.objects.all())
