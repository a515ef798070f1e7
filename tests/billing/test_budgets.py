"""Budgets: the worst case is reserved before each paid call, replaced by the actual cost
after; hard limits refuse, downgrade or only alert, per policy. Calls go to the real
sandbox provider over loopback, in-process (no worker)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.execution import task_execute
from agents.liveness import worker_id
from agents.models import RoleBinding
from agents.services import credential_create
from billing.budgets import (
    BudgetExceeded,
    budget_alerts_sweep,
    budget_reserve,
    budget_settle,
    worst_case_cost,
)
from billing.catalog import catalog_parse, catalog_sync
from billing.models import (
    Alert,
    Budget,
    BudgetPeriod,
    CatalogModel,
    Usage,
    UsageRollup,
    UsageStatus,
)
from billing.pricing import UnitPrices
from office.models import Role, Task, TaskStatus
from tests.canary import SANDBOX_KEY

pytestmark = pytest.mark.django_db

PAID = "deepseek/deepseek-v4-pro"
FREE = "moonshotai/kimi-k2.6:free"
UNPRICED = "openrouter/auto"
PROMPT_PRICE, COMPLETION_PRICE = Decimal("0.000000435"), Decimal("0.00000087")


@pytest.fixture
def catalog() -> dict[str, CatalogModel]:
    catalog_sync(
        entries=catalog_parse(
            {
                "data": [
                    {
                        "id": PAID,
                        "name": "Paid",
                        "pricing": {
                            "prompt": str(PROMPT_PRICE),
                            "completion": str(COMPLETION_PRICE),
                        },
                    },
                    {"id": FREE, "name": "Free", "pricing": {"prompt": "0", "completion": "0"}},
                    {
                        "id": UNPRICED,
                        "name": "Auto",
                        "pricing": {"prompt": "-1", "completion": "-1"},
                    },
                ]
            }
        )
    )
    return {m.slug: m for m in CatalogModel.objects.all()}


@pytest.fixture
def role(sandbox, catalog) -> Role:
    role = Role.objects.create(slug="coder", name="Coder", system_prompt="Be brief.")
    credential = credential_create(
        label="sandbox",
        provider="openrouter",
        base_url=f"{sandbox.url}/api/v1",
        raw_secret=SANDBOX_KEY,
    )
    RoleBinding.objects.create(
        role=role,
        model=catalog[PAID],
        credential=credential,
        max_tokens=100,
        over_budget_model=catalog[FREE],
    )
    return role


def run(task: Task) -> Task:
    task_execute(task_id=task.pk, worker_id=worker_id())
    task.refresh_from_db()
    return task


def budget(role: Role | None, limit: str, action: str = "block", **kw) -> Budget:
    return Budget.objects.create(
        name=f"{action} {limit}",
        scope="role" if role else "office",
        role=role,
        period=kw.pop("period", "month"),
        limit=Decimal(limit),
        action=action,
        **kw,
    )


def test_worst_case_prices_every_input_token_at_the_dearest_input_price():
    prices = UnitPrices(
        prompt=Decimal("0.000001"),
        completion=Decimal("0.000004"),
        input_cache_write=Decimal("0.00000125"),
        request=Decimal("0.01"),
    )
    assert worst_case_cost(prices=prices, input_tokens=1000, max_output_tokens=500) == Decimal(
        "0.00125"
    ) + Decimal("0.002") + Decimal("0.01")
    assert worst_case_cost(prices=UnitPrices(), input_tokens=1, max_output_tokens=1) is None


def test_reservation_blocks_second_call_at_limit_until_the_first_settles(role, catalog):
    limit_budget = budget(role, "0.010")
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    first = budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.006"), at=at)

    with pytest.raises(BudgetExceeded) as refused:
        budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.006"), at=at)
    assert refused.value.action == "block"
    assert "would be exceeded" in refused.value.message

    budget_settle(period_ids=first.period_ids, reserved=first.amount, cost=Decimal("0.001"))
    period = BudgetPeriod.objects.get(budget=limit_budget)
    assert (period.reserved, period.spent) == (Decimal(0), Decimal("0.001"))
    budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.006"), at=at)
    period.refresh_from_db()
    assert period.reserved == Decimal("0.006")


def test_a_failed_call_releases_its_reservation(role, catalog):
    budget(role, "1")
    reservation = budget_reserve(
        role=role, model=catalog[PAID], amount=Decimal("0.5"), at=datetime.now(UTC)
    )
    budget_settle(period_ids=reservation.period_ids, reserved=reservation.amount, cost=None)
    period = BudgetPeriod.objects.get()
    assert (period.reserved, period.spent) == (Decimal(0), Decimal(0))


def test_blocking_budget_ends_the_task_over_budget_with_the_reason(role):
    budget(role, "0.00001")
    task = run(Task.objects.create(role=role, prompt="Write a long essay."))

    assert task.status == TaskStatus.OVER_BUDGET
    assert "would be exceeded" in task.error
    assert not Usage.objects.filter(task=task).exists()
    # The refused reservation rolled back whole: nothing is left reserved.
    assert all(p.reserved == 0 for p in BudgetPeriod.objects.all())


def test_downgrade_budget_runs_the_task_on_the_over_budget_model(role, catalog):
    budget(role, "0.00001", action="downgrade")
    task = run(Task.objects.create(role=role, prompt="Summarise this."))

    assert task.status == TaskStatus.DONE, task.error
    assert "downgraded" in task.model_label
    [row] = Usage.objects.filter(task=task)
    assert row.model == catalog[FREE]
    assert (row.status, row.cost) == (UsageStatus.SETTLED, 0)
    assert f"Sandbox answer from {FREE}" in task.result


def test_downgrade_without_an_over_budget_model_is_over_budget(role):
    RoleBinding.objects.filter(role=role).update(over_budget_model=None)
    budget(role, "0.00001", action="downgrade")
    task = run(Task.objects.create(role=role, prompt="Summarise this."))

    assert task.status == TaskStatus.OVER_BUDGET
    assert "no over-budget model is configured" in task.error


def test_alert_only_budget_never_stops_work_and_alerts_at_each_threshold_once(role):
    office = budget(None, "0.00002", action="alert_only", thresholds=[50, 100])
    first = run(Task.objects.create(role=role, prompt="One"))
    second = run(Task.objects.create(role=role, prompt="Two"))

    assert (first.status, second.status) == (TaskStatus.DONE, TaskStatus.DONE)
    period = BudgetPeriod.objects.get(budget=office)
    assert period.spent == first.cost + second.cost
    assert period.spent > office.limit
    assert sorted(Alert.objects.filter(budget=office).values_list("threshold", flat=True)) == [
        50,
        100,
    ]


def test_alert_sweep_records_the_thresholds_a_period_reached_but_lacks_and_only_once(role):
    office = budget(None, "0.00002", action="alert_only", thresholds=[50, 80, 100])
    run(Task.objects.create(role=role, prompt="One"))
    run(Task.objects.create(role=role, prompt="Two"))
    period = BudgetPeriod.objects.get(budget=office)
    reached = sorted(Alert.objects.filter(budget=office).values_list("threshold", flat=True))
    # As if a crash lost the alerts between the settlements' commits and their alerts.
    Alert.objects.filter(budget=office).delete()
    untouched = budget(None, "1000", action="alert_only")
    BudgetPeriod.objects.create(
        budget=untouched, start=period.start, end=period.end, spent=Decimal("0.01")
    )

    assert budget_alerts_sweep() == len(reached) == 3
    assert sorted(Alert.objects.filter(budget=office).values_list("threshold", flat=True)) == (
        reached
    )
    assert not Alert.objects.filter(budget=untouched).exists()
    assert budget_alerts_sweep() == 0


def test_unpriced_model_is_refused_under_a_hard_budget_unless_marked_free(role, catalog):
    RoleBinding.objects.filter(role=role).update(model=catalog[UNPRICED], over_budget_model=None)
    budget(role, "5")
    refused = run(Task.objects.create(role=role, prompt="Route me"))
    assert refused.status == TaskStatus.OVER_BUDGET
    assert "has no price" in refused.error

    CatalogModel.objects.filter(slug=UNPRICED).update(free_when_unpriced=True)
    allowed = run(Task.objects.create(role=role, prompt="Route me again"))
    assert allowed.status == TaskStatus.DONE
    assert Usage.objects.get(task=allowed).basis == "unpriced"


def test_settled_spend_replaces_the_reservation_exactly(role):
    limit = budget(role, "1")
    task = run(Task.objects.create(role=role, prompt="Count the invoices."))

    period = BudgetPeriod.objects.get(budget=limit)
    row = Usage.objects.get(task=task)
    assert row.reserved > row.cost > 0  # the worst case bounded the actual cost
    assert (period.reserved, period.spent) == (Decimal(0), row.cost)
    assert row.budget_periods == [period.pk]


def test_a_budget_created_mid_period_starts_from_the_period_spend(role, catalog):
    run(Task.objects.create(role=role, prompt="Before the budget"))
    spent_so_far = UsageRollup.objects.get().cost
    assert spent_so_far > 0

    limit = budget(role, "1")
    run(Task.objects.create(role=role, prompt="After the budget"))

    after = Usage.objects.order_by("-pk").first()
    assert BudgetPeriod.objects.get(budget=limit).spent == spent_so_far + after.cost


def test_office_and_role_budgets_both_apply(role):
    budget(None, "1000")
    budget(role, "0.00001")
    task = run(Task.objects.create(role=role, prompt="x"))
    assert task.status == TaskStatus.OVER_BUDGET


@pytest.mark.parametrize(
    ("period", "day", "start"),
    [
        ("day", date(2026, 11, 25), date(2026, 11, 25)),
        ("week", date(2026, 11, 25), date(2026, 11, 23)),
        ("month", date(2026, 11, 25), date(2026, 11, 1)),
    ],
)
def test_periods_start_on_the_local_day_monday_or_first_of_month(role, catalog, period, day, start):
    budget(role, "1", period=period)
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC).replace(hour=12)
    budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.1"), at=at)
    assert BudgetPeriod.objects.get().start == start


def test_reservations_lock_budget_counters_in_counter_id_order_as_settlements_do(role, catalog):
    """Settlements lock counters by id; a reservation taking them in budget order could
    meet one in the opposite order and deadlock. Here the role's daily budget has the
    lower budget id but today's counter is newer than the office's monthly one."""
    budget(role, "5", period="day")
    office = budget(None, "5", period="month")
    BudgetPeriod.objects.create(budget=office, start=date(2026, 11, 1), end=date(2026, 12, 1))
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)

    reservation = budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.1"), at=at)

    assert len(reservation.period_ids) == 2
    assert reservation.period_ids == sorted(reservation.period_ids)
    assert BudgetPeriod.objects.get(budget=office).reserved == Decimal("0.1")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's function only")
def test_on_postgresql_a_reservation_is_one_statement_once_the_periods_counters_exist(
    role, catalog
):
    """The budget check before every paid call is one round trip (billing_budget_reserve);
    the first call of a period creates the counters the portable way."""
    role_budget = budget(role, "1", period="day")
    office = budget(None, "1", period="week")
    budget(Role.objects.create(slug="other", name="Other"), "1")  # another role's: untouched
    budget(None, "1", is_active=False)  # inactive: untouched
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    first = budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.25"), at=at)

    with CaptureQueriesContext(connection) as queries:
        second = budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.5"), at=at)
        with pytest.raises(BudgetExceeded, match="reserved by calls in flight") as refused:
            budget_reserve(role=role, model=catalog[PAID], amount=Decimal("0.3"), at=at)

    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 3
    assert all(sql.startswith("SELECT * FROM billing_budget_reserve(") for sql in statements[:2])
    assert 'FROM "billing_budget"' in statements[2]  # the refused budget, for the message
    assert second.period_ids == first.period_ids == sorted(first.period_ids)
    assert refused.value.budget == role_budget  # the first hard budget, in counter order
    reserved = dict(BudgetPeriod.objects.values_list("budget_id", "reserved"))
    assert reserved == {role_budget.pk: Decimal("0.75"), office.pk: Decimal("0.75")}
