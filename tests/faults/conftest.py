"""The fault-injection suite's office: the sandbox provider, a private Redis (the broker and
the rate limiter, so that a test may restart it), beat and supervised Celery workers,
all real processes against the test database.

Clocks are short so that every fault resolves in seconds: a worker silent for 3 s is
dead, the sweeper runs every second, a queued task nobody took for 4 s is dispatched
again, a provider that does not answer within 1.5 s has timed out.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import bind_role, catalog  # noqa: F401 (fixture)
from tests.faults.audit import Audit
from tests.processes import (
    OfficeProcess,
    RedisServer,
    Sandbox,
    broker_of_this_process,
    start_beat,
    start_worker,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

FAULT_CLOCKS = {
    "ROSTER_WORKER_HEARTBEAT_INTERVAL": "0.5",
    "ROSTER_WORKER_STALE_AFTER": "3",
    "ROSTER_SWEEP_INTERVAL": "1",
    "ROSTER_REDISPATCH_AFTER": "4",
    # A task may die with its worker this often before the sweeper fails it.
    "ROSTER_MAX_EXECUTIONS": "8",
    "ROSTER_PROVIDER_TIMEOUT": "1.5",
    "ROSTER_PROVIDER_CONNECT_TIMEOUT": "1",
    "ROSTER_RETRY_MAX_WAIT": "1",
    "ROSTER_PROVIDER_MAX_ATTEMPTS": "4",
    "ROSTER_RATE_LIMIT_UNAVAILABLE_DELAY": "1",
}
FAILPOINT_LINE = re.compile(r"failpoint (\w+): killing worker process")


@dataclass
class FaultTally:
    """Faults injected across the suite, by kind; printed at the end of the run."""

    counts: dict[str, int] = field(default_factory=dict)
    audits: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, number: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + number

    def record(self, scenario: str, audit: Audit) -> None:
        self.audits.append((scenario, audit.summary()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


TALLY = FaultTally()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.counts:
        return
    terminalreporter.section("fault injection")
    for scenario, summary in TALLY.audits:
        terminalreporter.write_line(f"{scenario}: {summary}")
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(TALLY.counts.items()))
    terminalreporter.write_line(f"faults injected: {TALLY.total} ({kinds})")


@pytest.fixture(scope="session")
def tally() -> FaultTally:
    return TALLY


class Workers:
    """Celery workers that a supervisor thread starts again whenever one dies (as
    systemd or Kubernetes would), so that faults can kill them at will.

    With `failpoints`, each new worker is armed with the next point of the list in turn
    (at `chance` per passage), until `kills` workers have died at them: then workers start
    unarmed. `kill_one` kills from outside, `external` times at most. Both budgets bound
    the faults, so that the office can finish its work.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        count: int,
        env: dict[str, str],
        concurrency: int,
        failpoints: tuple[str, ...] = (),
        chance: float = 0.0,
        kills: int = 0,
        external: int = 0,
    ):
        self._log_dir, self._env, self._concurrency = log_dir, env, concurrency
        self._failpoints, self._chance, self.kills = failpoints, chance, kills
        self.external = external  # how many kill_one may make
        self._armed = 0
        self._lock = threading.Lock()
        self.live: list[OfficeProcess] = []
        self.dead: list[OfficeProcess] = []
        self.external_kills = 0
        self._stop = threading.Event()
        self._starters: list[threading.Thread] = []
        for _ in range(count):
            self.live.append(self._start())
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    @property
    def killing(self) -> bool:
        """Whether new workers are still armed: fewer than `kills` died at failpoints."""
        return len(self.dead) - self.external_kills < self.kills

    def _start(self) -> OfficeProcess:
        env = dict(self._env)
        with self._lock:
            if self._failpoints and self.killing:
                point = self._failpoints[self._armed % len(self._failpoints)]
                self._armed += 1
                env["ROSTER_FAILPOINTS"] = f"{point}={self._chance}"
        return start_worker(self._log_dir, concurrency=self._concurrency, env=env)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                gone = [w for w in self.live if w.proc.poll() is not None]
                for worker in gone:
                    self.live.remove(worker)
                    self.dead.append(worker)
            for _ in gone:  # started side by side: a start takes seconds
                starter = threading.Thread(target=self._replace, daemon=True)
                starter.start()
                self._starters.append(starter)
            self._stop.wait(0.1)

    def _replace(self) -> None:
        if self._stop.is_set():
            return
        replacement = self._start()
        with self._lock:
            self.live.append(replacement)

    def kill_one(self) -> bool:
        """SIGKILL a random live worker (the supervisor replaces it)."""
        with self._lock:
            if self.external_kills >= self.external:
                return False
            # One that has worked a while: a worker killed as it starts kills nothing.
            running = [
                w
                for w in self.live
                if w.proc.poll() is None and time.monotonic() - (w.ready_at or 0) > 2
            ]
            if not running:
                return False
            victim = random.choice(running)
            victim.kill()
            self.external_kills += 1
        return True

    def failpoint_kills(self) -> dict[str, int]:
        """Where the workers' failpoints killed them (each dead worker logs one line)."""
        counts: dict[str, int] = {}
        with self._lock:
            everyone = [*self.live, *self.dead]
        for worker in everyone:
            for point in FAILPOINT_LINE.findall(worker.output()):
                counts[point] = counts.get(point, 0) + 1
        return counts

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for starter in self._starters:  # a replacement being started joins `live` first
            starter.join(timeout=90)
        with self._lock:
            everyone = [*self.live, *self.dead]
        for worker in everyone:
            worker.stop()


@dataclass
class FaultOffice:
    sandbox: Sandbox
    redis: RedisServer
    beat: OfficeProcess
    log_dir: Path
    env: dict[str, str]

    def workers(self, *, count: int = 2, concurrency: int = 8, **killing: Any) -> Workers:
        return Workers(self.log_dir, count=count, env=self.env, concurrency=concurrency, **killing)

    def log_position(self) -> int:
        entries = self.sandbox.requests()
        return entries[-1]["seq"] if entries else 0


@pytest.fixture(scope="module")
def fault_office(
    django_db_setup: None,
    django_db_blocker: object,
    sandbox: Sandbox,
    process_log_dir: Path,
) -> Iterator[FaultOffice]:
    # Its own folder (one scenario's logs read together), inside the one the secret
    # canary scan reads after the run.
    process_log_dir = process_log_dir / f"fault-office-{uuid.uuid4().hex[:6]}"
    process_log_dir.mkdir()
    redis = RedisServer(process_log_dir)
    env = {**FAULT_CLOCKS, "CELERY_BROKER_URL": redis.url}
    beat = start_beat(process_log_dir, env=env)
    try:
        with broker_of_this_process(redis.url):
            yield FaultOffice(
                sandbox=sandbox, redis=redis, beat=beat, log_dir=process_log_dir, env=env
            )
    finally:
        beat.stop()
        redis.stop()
