"""Worker liveness and the stale-task sweeper.

Why a sweeper: with the embedded (SQLite) broker a message taken by a worker that dies is
never redelivered, and with Redis it is redelivered only after the visibility timeout,
which must exceed the longest task. So each worker process writes a heartbeat, and the
sweeper (beat, every ROSTER_SWEEP_INTERVAL) requeues claimed tasks (running, or preparing
on the helper queue) whose worker has been silent for ROSTER_WORKER_STALE_AFTER seconds,
and re-dispatches queued tasks nobody picked up. Requeueing is a conditional update, so
it is safe next to a late redelivery.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import WorkerHeartbeat
from agents.workflows import workflow_step_finished
from billing.ledger import usage_close_abandoned
from office.models import Task, TaskKind, TaskStatus
from office.services import task_dispatch

logger = logging.getLogger(__name__)

_worker_id: str | None = None
_stop = threading.Event()
# Tasks this process is preparing or executing right now, reported with each heartbeat.
# Counted, not a set: a task's execution may start on one thread while the thread that
# prepared it (and dispatched it) is still leaving its block.
_running: Counter[int] = Counter()
_running_lock = threading.Lock()


@contextmanager
def running(task_id: int) -> Iterator[None]:
    """Mark a task as being prepared or executed here for the duration of the block.

    Enter before claiming the task and leave after its outcome is committed, so that any
    heartbeat written while the task is claimed lists it: the sweeper requeues a claimed
    task its (live) worker does not list, which catches an outcome the database lost.
    """
    with _running_lock:
        _running[task_id] += 1
    try:
        yield
    finally:
        with _running_lock:
            _running[task_id] -= 1
            if _running[task_id] <= 0:
                del _running[task_id]


# Holders of /v1 calls' tasks (agents.proxy) start with this: web processes, which write
# no heartbeat; the sweeper judges their tasks by age instead (ROSTER_PROXY_STALE_AFTER).
PROXY_HOLDER_PREFIX = "proxy:"


def worker_id() -> str:
    """This process's worker identity: host, pid and a random part (pids are reused)."""
    global _worker_id
    if _worker_id is None or not _worker_id.startswith(f"{socket.gethostname()}:{os.getpid()}:"):
        _worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return _worker_id


def heartbeat_beat(*, now: datetime | None = None) -> None:
    """Write this worker's heartbeat row."""
    now = now or timezone.now()
    with _running_lock:
        tasks = sorted(_running)
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id(),
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "last_seen": now,
            "running_tasks": tasks,
        },
        create_defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "last_seen": now,
            "running_tasks": tasks,
        },
    )


def heartbeat_start() -> threading.Thread:
    """Start the daemon thread that beats every ROSTER_WORKER_HEARTBEAT_INTERVAL seconds."""
    _stop.clear()
    heartbeat_beat()

    def loop() -> None:
        while not _stop.wait(settings.ROSTER_WORKER_HEARTBEAT_INTERVAL):
            try:
                heartbeat_beat()
            except Exception:
                logger.exception("heartbeat write failed; will try again")
            finally:
                close_old_connections()

    thread = threading.Thread(target=loop, name="roster-heartbeat", daemon=True)
    thread.start()
    return thread


def heartbeat_stop() -> None:
    """Stop beating and remove this worker's row (a clean shutdown)."""
    _stop.set()
    WorkerHeartbeat.objects.filter(worker_id=worker_id()).delete()


@dataclass(frozen=True)
class SweepReport:
    requeued: list[int]
    failed: list[int]
    redispatched: list[int]


def tasks_sweep_stale(*, now: datetime | None = None) -> SweepReport:
    """Requeue tasks of dead workers, fail those that died too often, re-dispatch lost
    queued tasks. Returns what it did.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.ROSTER_WORKER_STALE_AFTER)
    live = {
        beat.worker_id: beat
        for beat in WorkerHeartbeat.objects.filter(last_seen__gte=stale_before).only(
            "worker_id", "last_seen", "running_tasks"
        )
    }
    # A task claimed for preparation (helper queue) or execution, by a dead worker. Each
    # kind of claim is counted on its own: a page that kills the helper every time fails
    # the task after ROSTER_MAX_EXECUTIONS preparations.
    orphans = [
        (task_id, status, claimed_by, preparations if status == TaskStatus.PREPARING else runs)
        for task_id, status, claimed_by, runs, preparations, started_at in Task.objects.filter(
            status__in=(TaskStatus.RUNNING, TaskStatus.PREPARING), started_at__lt=stale_before
        )
        # A running spec-then-execute task has no worker: its steps have (agents.workflows).
        .exclude(kind=TaskKind.SPEC_EXECUTE)
        .values_list("pk", "status", "claimed_by", "executions", "preparations", "started_at")
        if _orphaned(task_id, claimed_by, started_at, live=live, now=now)
    ]

    requeued: list[int] = []
    failed: list[int] = []
    for task_id, status, claimed_by, claims in orphans:
        # A /v1 call's task is never handed to a worker: its client is gone.
        from_web = claimed_by.startswith(PROXY_HOLDER_PREFIX)
        if from_web or claims >= settings.ROSTER_MAX_EXECUTIONS:
            doing = "preparing" if status == TaskStatus.PREPARING else "running"
            error = (
                "The web process serving this /v1 call stopped; it is not called again."
                if from_web
                else f"The worker {doing} this task stopped {claims} times; giving up."
            )
            with transaction.atomic():
                if _release(
                    task_id,
                    claimed_by,
                    held=status,
                    status=TaskStatus.FAILED,
                    now=now,
                    error=error,
                ):
                    usage_close_abandoned(task_id=task_id)
                    workflow_step_finished(step_id=task_id)
                    failed.append(task_id)
            continue
        # Back to queued: a task not yet prepared is dispatched to preparation again.
        if _release(task_id, claimed_by, held=status, status=TaskStatus.QUEUED, now=now):
            requeued.append(task_id)
            transaction.on_commit(lambda task_id=task_id: task_dispatch(task_id=task_id))

    redispatch_before = now - timedelta(seconds=settings.ROSTER_REDISPATCH_AFTER)
    lost = Task.objects.filter(status=TaskStatus.QUEUED).filter(
        Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=redispatch_before)
    )
    redispatched = [task_id for task_id in lost.values_list("pk", flat=True)[:1000]]
    for task_id in redispatched:
        task_dispatch(task_id=task_id)

    WorkerHeartbeat.objects.filter(last_seen__lt=now - timedelta(days=1)).delete()
    if requeued or failed or redispatched:
        logger.warning(
            "sweeper: requeued %s, failed %s, re-dispatched %s", requeued, failed, redispatched
        )
    return SweepReport(requeued=requeued, failed=failed, redispatched=redispatched)


def _orphaned(
    task_id: int,
    claimed_by: str,
    started_at: datetime,
    *,
    live: dict[str, WorkerHeartbeat],
    now: datetime,
) -> bool:
    """A claimed task nobody is working on: its worker is silent, or alive and not listing
    it (its outcome was lost). Only tasks started more than ROSTER_WORKER_STALE_AFTER ago
    are asked about, so a live heartbeat was written after the task was claimed. A /v1
    call's task has no heartbeat to go by: it is orphaned once it has run longer than any
    call can (its web process died)."""
    if claimed_by.startswith(PROXY_HOLDER_PREFIX):
        return started_at < now - timedelta(seconds=settings.ROSTER_PROXY_STALE_AFTER)
    beat = live.get(claimed_by)
    return beat is None or task_id not in beat.running_tasks


def _release(
    task_id: int, claimed_by: str, *, held: str, status: str, now: datetime, error: str = ""
) -> bool:
    """Move a task its dead worker `claimed_by` held in status `held` to `status`."""
    changes: dict[str, object] = {"status": status, "claimed_by": ""}
    if status == TaskStatus.QUEUED:
        changes["dispatched_at"] = now
    else:
        changes["error"] = error
        changes["finished_at"] = now
    return (
        Task.objects.filter(pk=task_id, status=held, claimed_by=claimed_by).update(**changes) == 1
    )
