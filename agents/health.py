"""Is this office able to work? The checks behind `GET /healthz`, for load balancers and
uptime monitors.

Three checks, each bounded by ROSTER_HEALTH_TIMEOUT seconds where the client allows it:
- database: one query on the default connection;
- broker: a connection through Celery's own connection settings (Redis, or the embedded
  SQLite broker), and the depth of the default queue read through it;
- workers: at least one worker process wrote its heartbeat (agents.liveness) within
  ROSTER_WORKER_STALE_AFTER seconds.

Details are for people reading a monitor: never a URL, host with credentials or secret
(an exception's text goes through `_safe_error` first).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q
from django.utils import timezone

from agents.models import WorkerHeartbeat
from agents.redaction import redact
from office.celery import app as celery_app

OK = "ok"
FAILING = "failing"

# user:password@ in any URL an error message quotes.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: `status` is OK or FAILING; `detail` says why, in words."""

    name: str
    status: str
    detail: str
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class HealthReport:
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, object]:
        """The JSON body of /healthz."""
        return {
            "status": OK if self.ok else FAILING,
            "checks": {
                check.name: {
                    "status": check.status,
                    "detail": check.detail,
                    "duration_ms": round(check.duration_ms, 1),
                }
                for check in self.checks
            },
        }


class CheckFailed(Exception):
    """A check ran and found a fault; the message is shown as the check's detail."""


def _safe_error(exc: BaseException) -> str:
    """An exception as a one-line detail, with URL credentials and key-shaped strings
    masked (a driver may quote the URL it failed to reach)."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {redact(_URL_CREDENTIALS.sub('***@', text))}"[:300]


def _run(name: str, check: Callable[[], str]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail, status = check(), OK
    except CheckFailed as exc:
        detail, status = str(exc), FAILING
    except Exception as exc:  # a health check reports every fault, it never raises
        detail, status = _safe_error(exc), FAILING
    return CheckResult(
        name=name,
        status=status,
        detail=detail,
        duration_ms=(time.perf_counter() - started) * 1000,
    )


def check_database() -> str:
    """One round trip to the database. Returns a detail; raises on failure."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} answered"


def check_broker(*, url: str | None = None, timeout: float | None = None) -> str:
    """Connect to the broker at `url` (default: CELERY_BROKER_URL, read at call time) the
    way Celery does, and read the default queue's depth. Returns a detail; raises on
    failure (kombu's or the driver's exception)."""
    timeout = settings.ROSTER_HEALTH_TIMEOUT if timeout is None else timeout
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    connection_ = celery_app.connection_for_read(
        url or settings.CELERY_BROKER_URL,
        connect_timeout=timeout,
        # Redis: bound reads too, so a broker that accepts and then hangs fails the check.
        transport_options={"socket_timeout": timeout, "socket_connect_timeout": timeout},
    )
    with connection_ as conn:
        # One attempt, no retry loop: a load balancer wants an answer, not patience.
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        # Declaring the queue is idempotent for both transports and reads its depth
        # through a real round trip (Redis LLEN, a SELECT on the SQLite broker).
        declared = conn.default_channel.queue_declare(queue=queue, passive=False)
    count = declared.message_count
    waiting = f"{count} message{'s' * (count != 1)} waiting on {queue!r}"
    return f"{conn.transport_cls} broker answered; {waiting}"


def check_workers(*, now: datetime | None = None) -> str:
    """At least one worker beat within ROSTER_WORKER_STALE_AFTER seconds. Returns a
    detail; raises CheckFailed when none did."""
    now = now or timezone.now()
    stale_after = settings.ROSTER_WORKER_STALE_AFTER
    cutoff = now - timedelta(seconds=stale_after)
    beats = WorkerHeartbeat.objects.aggregate(
        alive=Count("pk", filter=Q(last_seen__gte=cutoff)), newest=Max("last_seen")
    )
    alive, newest = beats["alive"], beats["newest"]
    if alive:
        ago = (now - newest).total_seconds()
        return f"{alive} worker{'s' * (alive != 1)} alive; newest heartbeat {max(ago, 0):.1f}s ago"
    if newest is None:
        raise CheckFailed("no worker has ever written a heartbeat: is a worker running?")
    raise CheckFailed(
        f"no worker heartbeat in the last {stale_after:g}s; the newest is "
        f"{(now - newest).total_seconds():.0f}s old"
    )


def health_report() -> HealthReport:
    """Run every check in turn. Returns the report; never raises."""
    return HealthReport(
        checks=[
            _run("database", check_database),
            _run("broker", check_broker),
            # Needs the database: when it is down, this check says so too.
            _run("workers", check_workers),
        ]
    )
