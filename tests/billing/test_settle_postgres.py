"""The PostgreSQL settlement function writes every column the ledger settles and every
rollup measure, closes a row once, and commits on its own outside a transaction."""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import connection

from billing.ledger import CallTarget, LedgerError, usage_open, usage_settle
from billing.models import Budget, BudgetPeriod, Usage, UsageRollup
from billing.pricing import TokenUsage
from billing.rollups import ROLLUP_FIELDS
from billing.settle_postgres import ROLLUP_MEASURES, SETTLED_COLUMNS
from tests.factories import CatalogModelFactory, ModelPriceFactory, TaskFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="the settlement function exists on PostgreSQL only",
    ),
]

# The latest migration that (re)creates billing_usage_settle.
migration = importlib.import_module("billing.migrations.0007_settle_function_helper_measures")


def test_the_function_writes_the_columns_the_ledger_settles_and_every_rollup_measure():
    assert migration.SETTLED_COLUMNS == SETTLED_COLUMNS
    assert migration.ROLLUP_MEASURES == ROLLUP_MEASURES
    assert set(ROLLUP_MEASURES) | {"tasks"} == set(ROLLUP_FIELDS)
    usage_columns = {field.column for field in Usage._meta.concrete_fields}
    assert set(SETTLED_COLUMNS) <= usage_columns
    # Every column a settlement changes is written; the rest are set when the row opens.
    opened_only = {
        "id", "call_id", "task_id", "role_id", "model_id", "price_id", "person_id",
        "provider", "credential_id", "credential_label", "upstream_model", "attempt",
        "estimated_input_tokens", "max_output_tokens", "reserved", "budget_periods",
        "created_at",
        # Local helper rows are written settled at once (billing.helper_ledger), never
        # settled by the function.
        "helper_operation", "helper_backend", "helper_fallback_reason", "shadow_model_id",
        "shadow_price_id", "shadow_price_prompt", "shadow_price_completion", "shadow_cost",
    }  # fmt: skip
    assert usage_columns - set(SETTLED_COLUMNS) == opened_only


def test_settling_outside_a_transaction_commits_row_task_rollup_and_counters_at_once():
    model = CatalogModelFactory()
    ModelPriceFactory(model=model, prompt=Decimal("0.000001"), completion=Decimal("0.000002"))
    task = TaskFactory()
    budget = Budget.objects.create(
        name="office", scope="office", period="month", limit=Decimal("1")
    )
    target = CallTarget(model=model, provider="openrouter", credential_id=None,
                        credential_label="k", upstream_model=model.slug)  # fmt: skip
    usage = usage_open(task=task, target=target, attempt=1, estimated_input_tokens=10,
                       input_tokens_bound=40, max_output_tokens=50)  # fmt: skip
    reserved = usage.reserved
    assert not connection.in_atomic_block

    usage_settle(usage=usage, token_usage=TokenUsage(input_tokens=30, output_tokens=7))

    usage.refresh_from_db()
    task.refresh_from_db()
    period = BudgetPeriod.objects.get(budget=budget)
    cost = Decimal(30) * Decimal("0.000001") + Decimal(7) * Decimal("0.000002")
    assert (usage.status, usage.cost, usage.price_prompt) == ("settled", cost, Decimal("0.000001"))
    assert (task.cost, task.provider_calls, task.input_tokens) == (cost, 1, 30)
    assert (period.spent, period.reserved) == (cost, Decimal(0))
    assert reserved > cost
    rollup = UsageRollup.objects.get()
    assert (rollup.tasks, rollup.calls, rollup.cost) == (1, 1, cost)
    assert (rollup.helper_calls, rollup.helper_savings) == (0, Decimal(0))
    # The session's own setting is untouched: only the settlement skipped the WAL flush.
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"

    with pytest.raises(LedgerError, match="not pending"):
        usage_settle(usage=usage, token_usage=TokenUsage(input_tokens=30, output_tokens=7))
    period.refresh_from_db()
    assert period.spent == cost
    assert UsageRollup.objects.get().calls == 1
