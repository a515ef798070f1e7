"""A credential's requests-per-minute limit holds across two real worker processes: no
window of the limit's length ever holds more requests than the limit at the sandbox
provider (its request log is the judge), tasks that find no slot wait in the queue and
run when one frees, and every task is done in the end, called and billed once.

The limits' "minute" is shortened to WINDOW seconds for these workers
(ROSTER_RATE_LIMIT_WINDOW_SECONDS, for tests only), so the window slides several times in
seconds: with RPM slots per window and TASKS tasks, the last ones run in the third
window. The limiter's code is the same for any window length.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings

from agents.models import Credential
from agents.ratelimit import redis_keys
from billing.models import Usage, UsageStatus
from office.models import Task, TaskStatus
from office.services import task_submit
from tests import processes
from tests.e2e.conftest import bind_role
from tests.processes import OfficeProcess, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WINDOW = 6  # seconds: the limits' "minute" for these workers
RPM = 3
TASKS = 8


def start_limited_worker(log_dir: Path) -> OfficeProcess:
    return processes.start_worker(
        log_dir, concurrency=4, env={"ROSTER_RATE_LIMIT_WINDOW_SECONDS": str(WINDOW)}
    )


@pytest.fixture
def two_workers(
    django_db_setup: None, clean_broker: None, process_log_dir: Path
) -> Iterator[list[OfficeProcess]]:
    workers = [start_limited_worker(process_log_dir), start_limited_worker(process_log_dir)]
    yield workers
    for worker in workers:
        worker.stop()


def forget_earlier_windows(credential: Credential) -> None:
    """Credential ids restart with each test database; a Redis limiter must not count an
    earlier run's grants against this one."""
    url = settings.ROSTER_RATE_LIMIT_REDIS_URL or settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        import redis

        redis.Redis.from_url(url).delete(*redis_keys(credential_id=credential.pk))


def most_in_any_window(times: list[datetime], window: timedelta) -> int:
    """The most requests any window of this length holds (a busiest window can always be
    slid to start at a request)."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))


def test_two_workers_never_send_more_than_the_limit_in_any_window(two_workers, sandbox, catalog):
    role = bind_role(
        slug="limited",
        model=catalog["deepseek/deepseek-v4-pro"],
        provider="openrouter",
        base_url=sandbox.url + "/api/v1",
    )
    credential = role.binding.credential
    Credential.objects.filter(pk=credential.pk).update(requests_per_minute=RPM)
    forget_earlier_windows(credential)

    tasks = [task_submit(role=role, prompt=f"Summarise report {n}.") for n in range(TASKS)]
    ids = [task.pk for task in tasks]
    # Three windows' worth of slots, with a generous bound for a loaded machine.
    wait_until(
        lambda: not Task.objects.filter(pk__in=ids).exclude(status=TaskStatus.DONE).exists(),
        timeout=3 * (WINDOW + 1) + 45,
        what="every task to be done",
    )

    calls = list(Usage.objects.filter(task_id__in=ids, helper_operation=""))
    entries = [entry for call in calls for entry in sandbox.requests(call_id=call.call_id)]
    # Each task called once and billed once: no call left without a slot, none repeated.
    assert len(calls) == len(entries) == TASKS
    assert {call.task_id for call in calls} == set(ids)
    assert all(call.status == UsageStatus.SETTLED for call in calls)
    # The judge: the provider's own arrival times.
    arrivals = [datetime.fromisoformat(entry["time"]) for entry in entries]
    assert most_in_any_window(arrivals, timedelta(seconds=WINDOW)) == RPM
    assert max(arrivals) - min(arrivals) >= timedelta(seconds=2 * WINDOW)  # three windows
    # The rest waited in the queue, and waiting cost no execution.
    done = Task.objects.filter(pk__in=ids)
    waits = [d for task in done for d in task.routing_decisions if d["step"] == "rate_limit"]
    assert len(waits) >= TASKS - RPM
    assert all(wait["outcome"] == "wait" for wait in waits)
    assert set(done.values_list("executions", flat=True)) == {1}
    # Which worker claims which task is the broker's choice (a worker holding a waiting
    # task's countdown message may take them all), so that both took part is not asserted
    # here; the limiter's cross-process guarantee is proven by the hammer of processes in
    # tests/agents/test_ratelimit.py, which fails when its lock is removed.
