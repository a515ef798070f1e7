"""The PostgreSQL settlement function writes every column the ledger settles and every
rollup measure, closes a row once, and commits on its own outside a transaction."""

from __future__ import annotations

import importlib
import threading
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import IntegrityError, connection

from billing import settle_postgres
from billing.ledger import CallTarget, LedgerError, usage_open, usage_settle
from billing.models import Alert, Budget, BudgetPeriod, Usage, UsageRollup
from billing.pricing import TokenUsage
from billing.rollups import ROLLUP_FIELDS
from billing.settle_postgres import ROLLUP_MEASURES, SETTLED_COLUMNS
from tests.factories import CatalogModelFactory, ModelPriceFactory, TaskFactory

pytestmark = pytest.mark.django_db(transaction=True)
# The column lists are checked on every database; the function runs on PostgreSQL only.
needs_postgresql = pytest.mark.skipif(
    not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="the settlement function exists on PostgreSQL only",
)

# The latest migration that (re)creates the settlement function.
migration = importlib.import_module("billing.migrations.0010_settle_set_based_and_hot_updates")


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


@needs_postgresql
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


def _open_calls(count: int, *, thresholds: list[int] | None = None):
    model = CatalogModelFactory()
    ModelPriceFactory(model=model, prompt=Decimal("0.000001"), completion=Decimal("0.000002"))
    budget = Budget.objects.create(
        name="office",
        scope="office",
        period="month",
        limit=Decimal("0.01"),
        action="alert_only",
        thresholds=thresholds or [50],
    )
    target = CallTarget(model=model, provider="openrouter", credential_id=None,
                        credential_label="k", upstream_model=model.slug)  # fmt: skip
    first = TaskFactory()
    calls = [
        usage_open(
            task=TaskFactory(role=first.role, created_by=first.created_by),
            target=target,
            attempt=1,
            estimated_input_tokens=10,
            input_tokens_bound=40,
            max_output_tokens=50,
        )
        for _ in range(count)
    ]
    return budget, calls


def _settle_from_threads(calls, token_usage) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def settle(usage) -> None:
        try:
            start.wait()
            usage_settle(usage=usage, token_usage=token_usage)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=settle, args=(usage,)) for usage in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@needs_postgresql
def test_concurrent_settlements_are_written_in_batches_and_add_up_exactly(monkeypatch):
    budget, calls = _open_calls(24, thresholds=[50])
    batches: list[int] = []
    write = settle_postgres._write
    monkeypatch.setattr(settle_postgres, "_write", lambda b: batches.append(len(b)) or write(b))

    # 24 calls of 7 input + 3 output tokens: 24 x 0.000013 = 0.000312; the limit's 50 %
    # is 0.005, so no threshold is crossed; then a big call crosses it once.
    assert _settle_from_threads(calls, TokenUsage(input_tokens=7, output_tokens=3)) == []

    assert sum(batches) == 24
    assert len(batches) < 24  # some settlements shared a batch
    period = BudgetPeriod.objects.get(budget=budget)
    assert (period.spent, period.reserved) == (Decimal("0.000312"), Decimal(0))
    assert Usage.objects.filter(status="settled").count() == 24
    rollup = UsageRollup.objects.get()
    assert (rollup.tasks, rollup.calls, rollup.cost) == (24, 24, Decimal("0.000312"))


@needs_postgresql
def test_a_batch_that_crosses_a_threshold_records_its_alert_once():
    budget, calls = _open_calls(12, thresholds=[50, 100])
    # Each call costs 0.001: the 12 together cross 50 % (0.005) and 100 % (0.01).
    assert _settle_from_threads(calls, TokenUsage(input_tokens=1000)) == []

    period = BudgetPeriod.objects.get(budget=budget)
    assert period.spent == Decimal("0.012")
    assert sorted(Alert.objects.filter(budget=budget).values_list("threshold", flat=True)) == [
        50,
        100,
    ]


@needs_postgresql
def test_a_settlement_the_database_refuses_fails_alone_not_its_batch(monkeypatch):
    _, calls = _open_calls(8)
    # One row would break a check constraint (negative tokens): the batch is refused and
    # its rows are written one by one, so only that settlement fails.
    bad = calls[3]
    write = settle_postgres._write

    def write_poisoned(batch):
        for waiting in batch:
            if waiting.item["usage_id"] == bad.pk:
                waiting.item["fields"]["input_tokens"] = -1
        return write(batch)

    monkeypatch.setattr(settle_postgres, "_write", write_poisoned)

    errors = _settle_from_threads(calls, TokenUsage(input_tokens=7, output_tokens=3))

    assert [type(error) for error in errors] == [IntegrityError]
    assert set(Usage.objects.filter(status="settled").values_list("pk", flat=True)) == {
        usage.pk for usage in calls if usage.pk != bad.pk
    }
    assert Usage.objects.get(pk=bad.pk).status == "pending"
