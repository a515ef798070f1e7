"""Start and stop the office's real processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """The URL of the database pytest-django created, for processes we start."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class OfficeProcess:
    """One child process with its output in a log file; stopped with its process group."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.ready_at: float | None = None  # when wait_for_output last found its line
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                self.ready_at = time.monotonic()
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not print {needle!r}:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup runs, as in a crash."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


DEFAULT_QUEUES = ("celery", "helper")


def start_worker(
    log_dir: Path,
    *,
    concurrency: int = 8,
    queues: tuple[str, ...] = DEFAULT_QUEUES,
    env: dict[str, str] | None = None,
) -> OfficeProcess:
    """A Celery worker against the test database; by default it consumes both queues
    (role calls and the helper's preparation), as the office's own worker does."""
    worker = OfficeProcess(
        "worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "office",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--queues",
            ",".join(queues),
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"test-{uuid.uuid4().hex[:6]}@%h",
        ],
        log_dir,
        {"DATABASE_URL": test_database_url(), **(env or {})},
    )
    worker.wait_for_output("ready.", timeout=60)
    return worker


def start_beat(log_dir: Path, *, env: dict[str, str] | None = None) -> OfficeProcess:
    schedule = log_dir / f"beat-{uuid.uuid4().hex[:6]}"
    beat = OfficeProcess(
        "beat",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "office",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(schedule),
        ],
        log_dir,
        {"DATABASE_URL": test_database_url(), **(env or {})},
    )
    beat.wait_for_output("beat: Starting", timeout=60)
    return beat


class Sandbox:
    """The sandbox provider process and a client for its request log."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = OfficeProcess(
            "sandbox",
            [sys.executable, "manage.py", "sandbox_provider", "--port", str(self.port)],
            log_dir,
            {},
        )
        wait_until(self._healthy, timeout=30, what="sandbox health")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/_sandbox/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def requests(self, *, call_id: str | None = None, since: int = 0) -> list[dict]:
        """The request log (newest 100,000), or one call's entries, or those after `since`
        (a `seq`)."""
        params: dict[str, str | int] = {"since": since}
        if call_id:
            params["call_id"] = call_id
        response = httpx.get(f"{self.url}/_sandbox/requests", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["requests"]

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sandbox/reset", timeout=5).raise_for_status()


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A private redis-server on a free port (no persistence, as the machine's), which a
    test may stop and start again on the same port without touching anyone else's data."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log_dir = log_dir
        self.process: OfficeProcess | None = None
        self.restarts = 0
        self.start()

    def start(self) -> None:
        self.process = OfficeProcess(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            self._log_dir,
            {},
        )
        wait_until(self._ping, timeout=15, what=f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def restart(self, *, down_for: float = 1.0) -> None:
        """SIGKILL the server (everything it held is lost) and start it again."""
        assert self.process is not None
        self.process.kill()
        self.process.stop()
        time.sleep(down_for)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@contextmanager
def broker_of_this_process(url: str) -> Iterator[None]:
    """Point this (test) process's Celery app at another broker for the block: the tasks
    it submits are then dispatched there. Celery keeps its connection pools per app, so
    they are dropped on the way in and out (as Celery itself does after a fork)."""
    from office.celery import app

    def reset_pools() -> None:
        if app._pool is not None:
            app._pool.force_close_all()
        app._pool = None
        app.__dict__.get("amqp") and setattr(app.amqp, "_producer_pool", None)

    previous = app.conf.broker_url
    reset_pools()
    app.conf.broker_url = url
    try:
        yield
    finally:
        reset_pools()
        app.conf.broker_url = previous
