"""Celery tasks: thin, take ids, call one service, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from agents import liveness
from agents.execution import task_execute
from agents.preparation import task_prepare


@shared_task(name="agents.tasks.prepare_task")
def prepare_task(task_id: int) -> str:
    """The local helper's work on a task; routed to the `helper` queue (settings)."""
    with liveness.running(task_id):
        return task_prepare(task_id=task_id, worker_id=liveness.worker_id())


@shared_task(name="agents.tasks.execute_task")
def execute_task(task_id: int) -> str:
    with liveness.running(task_id):
        return task_execute(task_id=task_id, worker_id=liveness.worker_id())


@shared_task(name="agents.tasks.sweep_stale_tasks")
def sweep_stale_tasks() -> dict[str, list[int]]:
    report = liveness.tasks_sweep_stale()
    return {
        "requeued": report.requeued,
        "failed": report.failed,
        "redispatched": report.redispatched,
    }


@worker_ready.connect
def _start_heartbeat(**_: object) -> None:
    liveness.heartbeat_start()


@worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    liveness.heartbeat_stop()
