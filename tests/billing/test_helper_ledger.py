"""Local helper operations in the ledger: free rows with their shadow price, kept out of
budgets and task totals, and in the rollups' helper measures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.template import Context, Template
from django.utils import timezone

from billing.budgets import budget_reserve
from billing.helper_ledger import LOCAL_HELPER_SLUG, local_helper_price
from billing.ledger import CallTarget, usage_open, usage_record_helper, usage_settle
from billing.models import (
    Budget,
    BudgetPeriod,
    CatalogModel,
    CatalogSource,
    ModelPrice,
    PriceSource,
    Usage,
    UsageRollup,
)
from billing.pricing import TokenUsage
from billing.rollups import rollups_rebuild
from tests.factories import CatalogModelFactory, ModelPriceFactory, TaskFactory

pytestmark = pytest.mark.django_db

AT = datetime(2026, 6, 10, 9, tzinfo=UTC)


@pytest.fixture
def sonnet() -> CatalogModel:
    """A premium model at $3 / $15 per million tokens from 1 June."""
    model = CatalogModelFactory(slug="anthropic/claude-sonnet-4.5")
    ModelPriceFactory(
        model=model,
        valid_from=datetime(2026, 6, 1, tzinfo=UTC),
        prompt=Decimal("0.000003"),
        completion=Decimal("0.000015"),
        input_cache_read=Decimal("0.0000003"),
        request=Decimal("0.01"),
    )
    return model


def record(task, shadow_model, **overrides) -> Usage:
    values = {
        "operation": "title",
        "backend": "builtin",
        "input_tokens": 120,
        "output_tokens": 12,
        "now": AT,
    }
    return usage_record_helper(task=task, shadow_model=shadow_model, **(values | overrides))


def test_a_helper_operation_is_a_settled_free_row_with_its_exact_shadow_price(sonnet) -> None:
    task = TaskFactory()

    usage = record(task, sonnet, fallback_reason="local helper server did not answer")

    usage.refresh_from_db()
    assert (usage.status, usage.basis, usage.cost) == ("settled", "computed", Decimal("0"))
    assert (usage.model.slug, usage.provider) == (LOCAL_HELPER_SLUG, "local")
    assert usage.model.source == CatalogSource.LOCAL_HELPER
    assert (usage.price_prompt, usage.price_completion) == (Decimal("0"), Decimal("0"))
    assert (usage.helper_operation, usage.helper_backend) == ("title", "builtin")
    assert usage.helper_fallback_reason == "local helper server did not answer"
    assert usage.is_helper
    assert (usage.input_tokens, usage.output_tokens) == (120, 12)
    assert (usage.role_id, usage.person_id) == (task.role_id, task.created_by_id)
    assert (usage.created_at, usage.settled_at) == (AT, AT)
    # 120 x $0.000003 + 12 x $0.000015, tokens only: no per-request fee.
    assert usage.shadow_cost == Decimal("0.00054")
    assert usage.shadow_model == sonnet
    assert usage.shadow_price == ModelPrice.objects.get(model=sonnet)
    assert (usage.shadow_price_prompt, usage.shadow_price_completion) == (
        Decimal("0.000003"),
        Decimal("0.000015"),
    )


def test_the_shadow_price_is_the_version_in_force_then_and_never_rewritten(sonnet) -> None:
    task = TaskFactory()
    before = record(task, sonnet, now=datetime(2026, 5, 20, tzinfo=UTC))
    ModelPriceFactory(
        model=sonnet,
        valid_from=datetime(2026, 6, 5, tzinfo=UTC),
        prompt=Decimal("0.000001"),
        completion=Decimal("0.000005"),
    )

    after = record(task, sonnet, operation="extract_page", input_tokens=4000, output_tokens=900)

    # Before any price of sonnet: unknown, not zero.
    assert before.shadow_cost is None
    assert before.shadow_price is None
    assert after.shadow_cost == Decimal("0.0085")  # 4000 x 0.000001 + 900 x 0.000005
    ModelPriceFactory(model=sonnet, prompt=Decimal("1"), completion=Decimal("1"))
    after.refresh_from_db()
    assert after.shadow_cost == Decimal("0.0085")
    assert after.shadow_price_prompt == Decimal("0.000001")


def test_a_helper_operation_reserves_and_spends_nothing_and_leaves_task_totals(sonnet) -> None:
    task = TaskFactory()
    Budget.objects.create(name="office", scope="office", period="month", limit=Decimal("1"))
    Budget.objects.create(
        name="role", scope="role", role=task.role, period="day", limit=Decimal("1")
    )
    # A paid call in flight: both budgets' counters exist and hold its reservation.
    budget_reserve(role=task.role, model=sonnet, amount=Decimal("0.01"), at=timezone.now())
    before = {(p.pk, p.spent, p.reserved) for p in BudgetPeriod.objects.all()}
    assert len(before) == 2

    usage = record(task, sonnet, operation="compress_history", input_tokens=9000)

    task.refresh_from_db()
    assert (task.cost, task.input_tokens, task.output_tokens, task.provider_calls) == (
        Decimal("0"),
        0,
        0,
        0,
    )
    assert (usage.reserved, usage.budget_periods) == (Decimal("0"), [])
    assert {(p.pk, p.spent, p.reserved) for p in BudgetPeriod.objects.all()} == before


def test_the_tasks_first_provider_call_still_counts_the_task_after_helper_rows(sonnet) -> None:
    task = TaskFactory()
    record(task, sonnet)
    record(task, sonnet, operation="classify_complexity", input_tokens=60, output_tokens=3)
    target = CallTarget(model=sonnet, provider="openrouter", credential_id=None,
                        credential_label="k", upstream_model=sonnet.slug)  # fmt: skip
    paid = usage_open(task=task, target=target, attempt=1, estimated_input_tokens=10,
                      input_tokens_bound=40, max_output_tokens=50, now=AT)  # fmt: skip
    usage_settle(usage=paid, token_usage=TokenUsage(input_tokens=30, output_tokens=7))

    task.refresh_from_db()
    assert (task.provider_calls, task.input_tokens, task.output_tokens) == (1, 30, 7)
    helper_row = UsageRollup.objects.get(model__slug=LOCAL_HELPER_SLUG)
    paid_row = UsageRollup.objects.get(model=sonnet)
    assert (helper_row.tasks, helper_row.calls, helper_row.input_tokens) == (0, 0, 0)
    assert (helper_row.helper_calls, helper_row.helper_input_tokens) == (2, 180)
    assert helper_row.helper_output_tokens == 15
    # 0.00054 + (60 x 0.000003 + 3 x 0.000015 = 0.000225)
    assert helper_row.helper_savings == Decimal("0.000765")
    assert (helper_row.cost, helper_row.provider) == (Decimal("0"), "local")
    # A paid call adds nothing to the helper measures.
    assert (paid_row.tasks, paid_row.calls, paid_row.input_tokens) == (1, 1, 30)
    assert (paid_row.helper_calls, paid_row.helper_input_tokens) == (0, 0)
    assert paid_row.helper_savings == Decimal("0")
    assert rollups_rebuild(dry_run=True).differences == []


def test_no_paid_model_or_an_unpriced_one_leaves_the_savings_unknown() -> None:
    task = TaskFactory()
    unpriced = CatalogModelFactory(slug="openrouter/auto")
    since = datetime(2026, 1, 1, tzinfo=UTC)
    ModelPriceFactory(model=unpriced, valid_from=since, prompt=None, completion=None)
    local = CatalogModelFactory(slug="ollama/llama3.2:3b", free_when_unpriced=True)
    ModelPriceFactory(model=local, valid_from=since, prompt=None, completion=None)

    without = record(task, None)
    unknown = record(task, unpriced)
    free = record(task, local)

    assert (without.shadow_model, without.shadow_cost) == (None, None)
    assert (unknown.shadow_model, unknown.shadow_cost) == (unpriced, None)
    assert unknown.shadow_price is not None
    # A paid model that costs nothing: the helper saved a known zero.
    assert free.shadow_cost == Decimal("0")
    rollup = UsageRollup.objects.get()
    assert (rollup.helper_calls, rollup.helper_unpriced_calls) == (3, 2)
    assert rollup.helper_savings == Decimal("0")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"operation": "translate"}, "Unknown local helper operation 'translate'"),
        ({"input_tokens": -1}, "input_tokens must be a whole number >= 0"),
        ({"output_tokens": 1.5}, "output_tokens must be a whole number >= 0"),
    ],
)
def test_bad_operations_and_counts_are_refused_and_write_nothing(
    sonnet, overrides, message
) -> None:
    with pytest.raises(ValueError, match=message):
        record(TaskFactory(), sonnet, **overrides)
    assert not Usage.objects.exists()
    assert not UsageRollup.objects.exists()


def test_the_local_helper_model_is_created_once_free_since_before_any_row() -> None:
    first = local_helper_price()
    second = local_helper_price()

    assert first == second
    assert (first.source, first.prompt, first.completion) == (PriceSource.LOCAL, 0, 0)
    assert first.valid_from < datetime(2020, 1, 1, tzinfo=UTC)
    assert CatalogModel.objects.filter(slug=LOCAL_HELPER_SLUG).count() == 1


def test_the_task_ledger_shows_helper_rows_with_what_they_saved(sonnet) -> None:
    task = TaskFactory()
    record(task, sonnet, operation="extract_page", fallback_reason="could not connect")
    record(task, None, now=AT + timedelta(seconds=1))

    html = Template("{% load billing_tags %}{% task_ledger task %}").render(Context({"task": task}))

    assert "Local helper: page extraction" in html
    assert "Saved $0.000540" in html
    assert "anthropic/claude-sonnet-4.5" in html
    assert "Fell back to builtin: could not connect" in html
    assert "Savings unknown: no paid model" in html
