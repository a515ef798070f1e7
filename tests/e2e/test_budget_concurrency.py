"""64 tasks started at once against a role budget that fits only some of them: settled
spend never exceeds the limit, and the rest end over budget (block) or run on the free
over-budget model (downgrade). Real worker (64 threads), real database, real sandbox."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.models import RoleBinding
from billing.budgets import worst_case_cost
from billing.estimation import prompt_tokens_bound
from billing.models import Budget, BudgetPeriod, CatalogModel, Usage, UsageStatus
from billing.money import money_sum
from billing.selectors import price_current
from office.models import Task, TaskStatus
from office.services import task_submit
from tests.e2e.conftest import bind_role
from tests.processes import start_worker, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TASKS = 64
FITS = 10  # worst cases the limit holds at once
FREE = "moonshotai/kimi-k2.6:free"


@pytest.fixture
def wide_worker(process_log_dir, clean_broker):
    worker = start_worker(process_log_dir, concurrency=TASKS)
    yield worker
    worker.stop()


def _setup(sandbox, catalog, action):
    model = catalog["deepseek/deepseek-v4-pro"]
    role = bind_role(
        slug=f"busy-{action}", model=model, provider="openrouter", base_url=sandbox.url + "/api/v1"
    )
    free = CatalogModel.objects.create(slug=FREE, name="Free")
    free.prices.create(source="sync", prompt=Decimal(0), completion=Decimal(0))
    RoleBinding.objects.filter(role=role).update(over_budget_model=free)
    prompt = "Draft the weekly status update. [[sandbox latency=0.5]]"
    worst = worst_case_cost(
        prices=price_current(model=model).unit_prices(),
        input_tokens=prompt_tokens_bound(role.system_prompt, f"{prompt} #{TASKS - 1}"),
        max_output_tokens=RoleBinding.objects.get(role=role).max_tokens,
    )
    budget = Budget.objects.create(
        name="tight", scope="role", role=role, period="day", limit=worst * FITS, action=action
    )
    return role, prompt, budget, free


def _run_all(role, prompt):
    tasks = [task_submit(role=role, prompt=f"{prompt} #{n}") for n in range(TASKS)]
    ids = [t.pk for t in tasks]
    wait_until(
        lambda: (
            not Task.objects.filter(
                pk__in=ids, status__in=["queued", "preparing", "running"]
            ).exists()
        ),
        timeout=120,
        what="all tasks to finish",
    )
    return list(Task.objects.filter(pk__in=ids))


def test_block_budget_is_never_overspent_under_concurrency(wide_worker, sandbox, catalog):
    role, prompt, budget, _ = _setup(sandbox, catalog, "block")

    tasks = _run_all(role, prompt)

    statuses = [t.status for t in tasks]
    done = statuses.count(TaskStatus.DONE)
    assert done >= FITS
    assert statuses.count(TaskStatus.OVER_BUDGET) == TASKS - done > 0
    settled = money_sum(
        Usage.objects.filter(task__role=role, status=UsageStatus.SETTLED).values_list(
            "cost", flat=True
        )
    )
    period = BudgetPeriod.objects.get(budget=budget)
    assert settled == period.spent <= budget.limit
    assert period.reserved == 0
    assert Usage.objects.filter(task__role=role, helper_operation="").count() == done


def test_downgrade_budget_runs_the_rest_on_the_free_model(wide_worker, sandbox, catalog):
    role, prompt, budget, free = _setup(sandbox, catalog, "downgrade")

    tasks = _run_all(role, prompt)

    assert {t.status for t in tasks} == {TaskStatus.DONE}
    downgraded = [t for t in tasks if "downgraded" in t.model_label]
    assert 0 < len(downgraded) <= TASKS - FITS
    assert Usage.objects.filter(task__role=role, model=free).count() == len(downgraded)
    period = BudgetPeriod.objects.get(budget=budget)
    assert period.spent <= budget.limit
    assert period.reserved == 0
