"""Workers SIGKILLed at every point of a task's life, many times over: before the call,
with its ledger row open, during the call, after the provider answered but before the
settlement, after the settlement but before the outcome. Nothing may be lost, stuck,
billed twice or left unbilled."""

from __future__ import annotations

import random
import threading

import pytest

from billing.models import Budget, BudgetAction, BudgetPeriodKind, BudgetScope
from office.models import TaskStatus
from office.services import task_submit
from tests.faults.audit import office_audit, tasks_settle
from tests.faults.conftest import bind_role

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

TASKS = 80
KILLS = 20  # at failpoints
EXTERNAL_KILLS = 6


def test_workers_killed_at_every_point_of_a_task(fault_office, catalog, tally):
    role = bind_role(
        slug="kills",
        model=catalog["openai/gpt-4.1-mini"],
        provider="openrouter",
        base_url=fault_office.sandbox.url + "/api/v1",
    )
    Budget.objects.create(
        name="Office", scope=BudgetScope.OFFICE, period=BudgetPeriodKind.MONTH, limit=50,
        action=BudgetAction.BLOCK,
    )  # fmt: skip
    since = fault_office.log_position()
    # Each new worker is armed with the next failpoint in turn; the others come from
    # outside, at random moments, most of them while calls are in flight.
    workers = fault_office.workers(
        count=3,
        concurrency=4,
        failpoints=("task_claimed", "call_opened", "call_answered", "call_settled"),
        chance=0.25,
        kills=KILLS,
        external=EXTERNAL_KILLS,
    )
    stop = threading.Event()

    def kill_during_calls() -> None:
        while not stop.wait(random.uniform(1.5, 3.0)):
            workers.kill_one()

    killer = threading.Thread(target=kill_during_calls, daemon=True)
    try:
        tasks = [
            task_submit(
                role=role,
                prompt=f"Report {n}. [[sandbox latency={random.choice((0.1, 0.3, 0.6))}]]",
            )
            for n in range(TASKS)
        ]
        killer.start()
        tasks = tasks_settle([t.pk for t in tasks], timeout=150)
        stop.set()
        killer.join()
        audit = office_audit(tasks=tasks, entries=fault_office.sandbox.requests(since=since))
        failpoint_kills = workers.failpoint_kills()
    finally:
        stop.set()
        workers.stop()

    tally.record("worker kills", audit)
    for point, count in failpoint_kills.items():
        tally.add(f"SIGKILL at {point}", count)
    tally.add("SIGKILL from outside", workers.external_kills)

    assert audit.problems == [], (
        audit.summary(),
        [p for p in audit.problems if "stuck" not in p][:5],
        audit.problems[:3],
    )
    # Up to KILLS: the tasks may all be done before the last armed worker reaches its point.
    assert sum(failpoint_kills.values()) >= KILLS // 2, failpoint_kills
    assert workers.external_kills >= EXTERNAL_KILLS // 2  # most land in the middle of calls
    # The kills landed where they were meant to: before, around and after the call.
    assert set(failpoint_kills) == {"task_claimed", "call_opened", "call_answered", "call_settled"}
    assert audit.estimated_charged > 0  # an answered call whose worker died is still billed
    # Death alone does not fail a task: it is requeued until it completes.
    assert audit.tasks[TaskStatus.DONE] >= TASKS * 0.9, audit.summary()
