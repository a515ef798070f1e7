"""The helper queue with real workers: preparation runs only where the `helper` queue is
consumed, execution only where the default one is; a worker killed while preparing a task
is replaced and the task completes, prepared again."""

from __future__ import annotations

import time

import pytest

from billing.models import Usage
from office.models import Task, TaskStatus
from office.services import task_submit
from tests.e2e.conftest import bind_role
from tests.e2e.test_task_flow import wait_for_terminal
from tests.processes import start_beat, start_worker, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LOOPBACK_PAGES = {"ROSTER_FETCH_ALLOW": "127.0.0.1"}


@pytest.fixture
def role(sandbox, catalog):  # type: ignore[no-untyped-def]
    return bind_role(
        slug="queued",
        model=catalog["deepseek/deepseek-v4-pro"],
        provider="openrouter",
        base_url=sandbox.url + "/api/v1",
    )


def test_preparation_runs_on_the_helper_queue_and_execution_on_the_default_one(
    role, process_log_dir, clean_broker
):
    calls_worker = start_worker(process_log_dir, queues=("celery",))
    helper_worker = None
    try:
        task = task_submit(role=role, prompt="Draft the agenda for Monday's stand-up.")
        time.sleep(3)  # a worker on the default queue alone never picks preparation up
        task.refresh_from_db()
        assert (task.status, task.prepared_at, task.preparations) == (TaskStatus.QUEUED, None, 0)
        assert task.title == ""

        helper_worker = start_worker(process_log_dir, queues=("helper",))
        wait_for_terminal(task)

        assert task.status == TaskStatus.DONE, task.error
        assert task.title  # the helper wrote it
        assert (task.preparations, task.executions) == (1, 1)
        helper_log, calls_log = helper_worker.output(), calls_worker.output()
        assert "Task agents.tasks.prepare_task[" in helper_log
        assert "Task agents.tasks.execute_task[" not in helper_log
        assert "Task agents.tasks.execute_task[" in calls_log
        assert "Task agents.tasks.prepare_task[" not in calls_log
        [title] = Usage.objects.filter(task=task, helper_operation="title")
        assert title.cost == 0
    finally:
        for worker in (calls_worker, helper_worker):
            if worker is not None:
                worker.stop()


def test_a_worker_killed_while_preparing_is_replaced_and_the_task_completes(
    role, sandbox, process_log_dir, clean_broker
):
    """The sweeper (beat) finds the task preparing on a silent worker, requeues it, and
    the next worker prepares it again from the start."""
    slow_page = f"{sandbox.url}/_sandbox/pages/article?latency=4"
    first = start_worker(process_log_dir, env=LOOPBACK_PAGES)
    beat = start_beat(process_log_dir)
    second = None
    try:
        task = task_submit(role=role, prompt="What lives in tide pools?", urls=[slow_page])
        wait_until(
            lambda: Task.objects.filter(pk=task.pk, status=TaskStatus.PREPARING).exists(),
            timeout=30,
            what="the preparation to start",
        )
        time.sleep(1)  # the page fetch is now in flight
        first.kill()

        second = start_worker(process_log_dir, env=LOOPBACK_PAGES)
        wait_for_terminal(task, timeout=90)

        assert task.status == TaskStatus.DONE, task.error
        assert (task.preparations, task.executions) == (2, 1)
        [note] = task.page_notes
        assert note["included"] is True
        assert Usage.objects.filter(task=task, helper_operation="").count() == 1
    finally:
        for process in (first, second, beat):
            if process is not None:
                process.stop()
