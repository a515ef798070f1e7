"""A worker SIGKILLed while its provider call is in flight: the task still completes once,
on another worker, and every call that reached the provider is billed exactly once."""

from __future__ import annotations

import time

import pytest

from billing.models import Usage, UsageStatus
from office.models import TaskStatus
from office.services import task_submit
from tests.e2e.conftest import bind_role
from tests.e2e.test_task_flow import wait_for_terminal
from tests.processes import start_beat, start_worker, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_worker_killed_mid_call_task_completes_once_on_another_worker(
    sandbox, catalog, process_log_dir, clean_broker
):
    """Redelivery comes from the sweeper (beat): the dead worker's heartbeat goes stale,
    the task is requeued, and the new worker closes the abandoned call as an estimate."""
    role = bind_role(
        slug="survivor",
        model=catalog["deepseek/deepseek-v4-pro"],
        provider="openrouter",
        base_url=sandbox.url + "/api/v1",
    )
    first_worker = start_worker(process_log_dir)
    beat = start_beat(process_log_dir)
    second_worker = None
    try:
        task = task_submit(role=role, prompt="Write the report. [[sandbox latency=3]]")
        in_flight = wait_until(
            lambda: Usage.objects.filter(task=task, status=UsageStatus.PENDING).first(),
            timeout=30,
            what="the provider call to start",
        )
        time.sleep(0.5)  # the request is now inside the sandbox's latency
        first_worker.kill()

        second_worker = start_worker(process_log_dir)
        wait_for_terminal(task, timeout=60)

        assert task.status == TaskStatus.DONE, task.error
        assert task.executions == 2
        calls = Usage.objects.filter(task=task, helper_operation="")  # not the helper's rows
        rows = {row.call_id: row for row in calls}
        assert len(rows) == 2
        abandoned = rows[in_flight.call_id]
        assert abandoned.status == UsageStatus.ESTIMATED
        assert abandoned.basis == "estimated"
        [settled] = [row for row in rows.values() if row.status == UsageStatus.SETTLED]
        # Both calls reached the provider, each is billed exactly once.
        logged = [entry["call_id"] for entry in sandbox.requests() if entry["call_id"] in rows]
        assert sorted(logged) == sorted(rows)
        assert task.cost == abandoned.cost + settled.cost
    finally:
        for process in (first_worker, second_worker, beat):
            if process is not None:
                process.stop()
