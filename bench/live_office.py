"""The office's real processes for the benchmarks that drive it end to end
(bench/task_path.py, bench/throughput_soak.py), and what they measure them with.

- Processes, as the Procfile runs them: the sandbox provider (`manage.py
  sandbox_provider`), gunicorn with threaded workers, Celery workers (threads pool, both
  queues), beat; and PgBouncer in front of PostgreSQL.
- The office they serve: the demo office (agents.demo: the secretary on the sandbox over
  OpenRouter's wire, with usage.cost), an office budget and a role budget that are never
  reached (so every call reserves and settles against both), and an agent's API token.
- A load generator that submits tasks through the agent API (POST /api/tasks/) on
  keep-alive connections and keeps a set number in flight, reading completion from the
  database (not the API, so the measuring adds no web load).
- /proc readings: CPU seconds and resident memory of a process tree, the machine's busy
  CPU.

Why PgBouncer: a threads-pool worker holds one database connection per busy thread for
the whole task, provider call included, so 200 slots need 200 connections; this
machine's PostgreSQL allows 100 (max_connections) for everyone who uses it. PgBouncer in
transaction mode lends a server connection for each transaction only, which is what
docs/openai.md advises for the web server in the same case. Django needs no change for
it: psycopg's client-side binding prepares no statements, and the URL's
`disable_server_side_cursors=true` covers .iterator().
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = re.compile(r"listening on http://([^:]+):(\d+)")
TERMINAL = ("done", "failed", "over_budget", "cancelled")
ROLE = "secretary"
POLLER = "bench-poller"  # the load generator's own connection, left out of the server's CPU
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- /proc ------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for thread in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (thread / "children").read_text().split()]
    except OSError:
        pass
    return found


def tree_pids(pid: int) -> list[int]:
    """The process and its live descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (those that still live)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def rss_bytes(pids: list[int]) -> int:
    """Resident memory (VmRSS) of these processes, summed."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- Processes --------------------------------------------------------------------------------


@dataclass
class Child:
    """One process of the office with its output in a log file. It stays in the
    benchmark's process group, so bench/run_all.py stops it with the benchmark."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid) if self.proc.poll() is None else []

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match:
                return match
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited early:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not print {pattern!r}:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def child_start(name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> Child:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Child(name=name, proc=proc, log_path=log_path)


def sandbox_start(log_dir: Path, *, latency: float) -> tuple[Child, str]:
    """The sandbox provider at a fixed latency, logging every request to a file (the
    judge of what was called). Returns it and its base URL."""
    child = child_start(
        "sandbox",
        [sys.executable, "manage.py", "sandbox_provider", "--port", "0",
         "--latency", str(latency), "--log-file", str(log_dir / "sandbox-requests.jsonl")],
        log_dir,
        {},
    )  # fmt: skip
    match = child.wait_for_output(READY_LINE.pattern, timeout=30)
    return child, f"http://{match.group(1)}:{match.group(2)}"


def pgbouncer_start(log_dir: Path, *, database_url: str, pool_size: int) -> tuple[Child, str]:
    """PgBouncer in transaction mode in front of the PostgreSQL of `database_url`.
    Returns it and the URL the office's processes use instead."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise SystemExit(
            "PgBouncer is missing (apt-get install pgbouncer): a worker with 200 slots "
            "needs more PostgreSQL connections than max_connections allows without it."
        )
    parts = urlsplit(database_url)
    port = free_port()
    user = parts.username or "postgres"
    config = log_dir / "pgbouncer.ini"
    users = log_dir / "pgbouncer-users.txt"
    users.write_text(f'"{user}" "{parts.password or ""}"\n')
    config.write_text(
        "[databases]\n"
        f"* = host={parts.hostname or '127.0.0.1'} port={parts.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\n"
        "max_client_conn = 2000\nlog_connections = 0\nlog_disconnections = 0\n"
    )
    args = [binary, str(config)]
    if os.geteuid() == 0:  # it refuses to run as root
        args[1:1] = ["-u", "postgres"]
        for path in (log_dir, config, users):
            path.chmod(0o755 if path.is_dir() else 0o644)
    child = child_start("pgbouncer", args, log_dir, {})
    child.wait_for_output(r"process up", timeout=15)
    return child, f"postgres://{user}@127.0.0.1:{port}{parts.path}"


def office_env(*, pooled_url: str, broker_url: str) -> dict[str, str]:
    """What the web and worker processes run with."""
    return {
        "DATABASE_URL": pooled_url + "?disable_server_side_cursors=true",
        "CELERY_BROKER_URL": broker_url,
        # Connections to PgBouncer are cheap to keep; the docs advise keeping them.
        "ROSTER_DB_CONN_MAX_AGE": "60",
        # The benchmark submits thousands of tasks a minute with one token; the per-token
        # rate limit is for agents, not for measuring the path.
        "ROSTER_API_THROTTLE_RATE": "1000000/minute",
    }


def web_start(
    log_dir: Path, env: dict[str, str], *, workers: int, threads: int
) -> tuple[Child, str]:
    """gunicorn as the Procfile runs it (threaded workers, access log). Returns it and
    its base URL."""
    port = free_port()
    child = child_start(
        "web",
        [sys.executable, "-m", "gunicorn", "office.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
         "--backlog", "2048", "--access-logfile", "-"],
        log_dir,
        env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return child, f"http://127.0.0.1:{port}"
        except OSError:
            if child.proc.poll() is not None:
                break
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not start:\n{child.output()[-3000:]}")


def worker_start(log_dir: Path, env: dict[str, str], *, concurrency: int, name: str) -> Child:
    """A Celery worker as the Procfile runs it: threads pool, both queues."""
    child = child_start(
        name,
        [sys.executable, "-m", "celery", "-A", "office", "worker", "--pool", "threads",
         "--concurrency", str(concurrency), "--queues", "celery,helper", "--loglevel", "INFO",
         "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
        log_dir,
        env,
    )  # fmt: skip
    child.wait_for_output(r"ready\.", timeout=90)
    return child


def beat_start(log_dir: Path, env: dict[str, str]) -> Child:
    child = child_start(
        "beat",
        [sys.executable, "-m", "celery", "-A", "office", "beat", "--loglevel", "INFO",
         "--schedule", str(log_dir / "celerybeat-schedule")],
        log_dir,
        env,
    )  # fmt: skip
    child.wait_for_output(r"beat: Starting", timeout=60)
    return child


def log_errors(children: list[Child]) -> dict[str, int]:
    """Tracebacks and ERROR/CRITICAL lines in each process's log."""
    counts = {}
    for child in children:
        text = child.output()
        counts[child.name] = len(re.findall(r"Traceback \(most recent call last\)", text)) + len(
            re.findall(r"\b(ERROR|CRITICAL)\b", text)
        )
    return counts


def broker_flush(broker_url: str) -> None:
    """Empty the benchmark's own Redis database (messages a killed run left behind)."""
    import redis

    redis.Redis.from_url(broker_url).flushdb()


# --- The office --------------------------------------------------------------------------------


def office_seed(*, sandbox_url: str) -> str:
    """The demo office on the sandbox, budgets that never block, and an API token for the
    demo's staff member. Returns the raw token."""
    from django.contrib.auth import get_user_model

    from agents.demo import demo_seed
    from billing.models import Budget
    from office.models import Role
    from office.services import api_token_create

    demo_seed(sandbox_url=sandbox_url)
    role = Role.objects.get(slug=ROLE)
    Budget.objects.create(name="office", scope="office", period="month", limit=Decimal(10**6))
    Budget.objects.create(name=ROLE, scope="role", role=role, period="month", limit=Decimal(10**6))
    staff = get_user_model().objects.filter(groups__name="staff").first()
    assert staff is not None, "the demo seed made no staff member"
    _, raw = api_token_create(user=staff, name="bench")
    return raw


# --- The load generator ------------------------------------------------------------------------


@dataclass
class Submitted:
    task_id: int
    submitted: float  # wall clock, just before the request was written
    created: float  # wall clock, when the API's answer arrived
    status: str = ""
    finished: float = 0.0  # the task's finished_at (wall clock, from the database)
    seen: float = 0.0  # when the poller saw it end


@dataclass
class LoadState:
    tasks: list[Submitted] = field(default_factory=list)
    in_flight: int = 0  # submitted (or being submitted) and not seen ended
    http_errors: int = 0
    reconnects: int = 0  # keep-alive connections the web server closed while idle
    http_error_samples: list[str] = field(default_factory=list)
    ended: int = 0
    api_latencies: list[float] = field(default_factory=list)


class LoadGenerator:
    """Keeps `target()` tasks in flight through POST /api/tasks/ on `connections`
    keep-alive connections; learns of ended tasks by polling the database every
    `poll_interval` seconds."""

    def __init__(
        self,
        *,
        web_url: str,
        token: str,
        dsn: str,
        connections: int,
        poll_interval: float,
        prompt: Callable[[int], str],
        max_tokens: int = 200,
    ) -> None:
        parts = urlsplit(web_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token
        self.dsn = dsn
        self.connections = connections
        self.poll_interval = poll_interval
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.state = LoadState()
        self._open: dict[int, Submitted] = {}
        self._room = asyncio.Event()
        self._numbers = 0  # the next task's number (its prompt and idempotency key)
        self._run = uuid.uuid4().hex[:8]

    def _request(self, number: int) -> bytes:
        body = json.dumps(
            {"role": ROLE, "prompt": self.prompt(number), "max_tokens": self.max_tokens}
        ).encode()
        # A request that has to be sent again on a new connection (below) must not make a
        # second task: the API's idempotency key makes the resend answer with the first.
        head = (
            f"POST /api/tasks/ HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: bench-{self._run}-{number}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def _submitter(self, target: Callable[[], int], stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            while not stop.is_set():
                if self.state.in_flight >= target():
                    self._room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), timeout=0.5)
                    continue
                self.state.in_flight += 1
                number = self._numbers
                self._numbers += 1
                request = self._request(number)
                submitted = time.time()
                for attempt in range(3):
                    try:
                        writer.write(request)
                        status, body = await _read_response(reader)
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        # gunicorn closes a keep-alive connection left idle for its
                        # keep-alive time (2 s), as the queue can leave one here.
                        writer.close()
                        if attempt == 2:
                            raise
                        self.state.reconnects += 1
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                created = time.time()
                if status != 201:
                    self.state.in_flight -= 1
                    self.state.http_errors += 1
                    if len(self.state.http_error_samples) < 5:
                        self.state.http_error_samples.append(f"HTTP {status}: {body[:200]!r}")
                    continue
                self.state.api_latencies.append(created - submitted)
                task = Submitted(
                    task_id=json.loads(body)["id"], submitted=submitted, created=created
                )
                self.state.tasks.append(task)
                self._open[task.task_id] = task
        finally:
            writer.close()

    async def _poller(self, stop: asyncio.Event) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=POLLER
        ) as conn:
            # in_flight, not _open: a request sent before the stop may not be answered yet.
            while not stop.is_set() or self.state.in_flight > 0:
                await asyncio.sleep(self.poll_interval)
                if not self._open:
                    continue
                rows = await (
                    await conn.execute(
                        "SELECT id, status, finished_at FROM office_task "
                        "WHERE id = ANY(%s) AND status = ANY(%s)",
                        [list(self._open), list(TERMINAL)],
                    )
                ).fetchall()
                now = time.time()
                for task_id, status, finished_at in rows:
                    task = self._open.pop(task_id)
                    task.status = status
                    task.finished = finished_at.timestamp() if finished_at else now
                    task.seen = now
                    self.state.in_flight -= 1
                    self.state.ended += 1
                if rows:
                    self._room.set()
                if stop.is_set() and time.time() > self._drain_deadline:
                    return

    async def run(self, target: Callable[[], int], stop: asyncio.Event, *, drain: float) -> None:
        """Submit until `stop` is set, then wait up to `drain` seconds for the tasks in
        flight to end."""
        self._drain_deadline = float("inf")

        async def stopper() -> None:
            await stop.wait()
            self._drain_deadline = time.time() + drain

        await asyncio.gather(
            stopper(),
            self._poller(stop),
            *(self._submitter(target, stop) for _ in range(self.connections)),
        )

    def unfinished(self) -> int:
        return len(self._open)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: (status, body), Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length:
        return status, await reader.readexactly(int(length.group(1)))
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        body += await reader.readexactly(size + 2)
        if size == 0:
            return status, body


# --- Figures ------------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """The value below which `pct` percent of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * pct / 100 + 0.5) - 1))]


def postgres_backend_pids(database: str) -> list[int]:
    """The server processes serving `database` (PgBouncer's pooled connections and any
    other), for their CPU."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND application_name <> %s",
            [database, POLLER],
        )
        return [row[0] for row in cursor.fetchall()]


@dataclass(frozen=True)
class SandboxCall:
    call_id: str | None
    status: int
    start: float
    end: float


def sandbox_calls(log_path: Path) -> list[SandboxCall]:
    """Every request the sandbox answered, from its log file: when it came (its answer's
    time less the latency it waited) and when it was answered."""
    from datetime import datetime

    calls = []
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        end = datetime.fromisoformat(entry["time"]).timestamp()
        calls.append(
            SandboxCall(
                call_id=entry.get("call_id"),
                status=entry["status"],
                start=end - float(entry.get("latency") or 0),
                end=end,
            )
        )
    return calls


def in_flight_levels(calls: list[SandboxCall], start: float, end: float) -> tuple[float, int]:
    """(time-weighted mean, maximum) of the calls the sandbox held at once in [start,
    end]."""
    events = sorted(
        [(c.start, 1) for c in calls if c.end > start and c.start < end]
        + [(c.end, -1) for c in calls if c.end > start and c.start < end]
    )
    level, peak, area, last = 0, 0, 0.0, start
    for moment, change in events:
        clipped = min(max(moment, start), end)
        area += level * (clipped - last)
        last = clipped
        level += change
        # Every call that ends before the window is filtered out, so the events before
        # it only raise the level to what it is when the window opens.
        peak = max(peak, level)
    area += level * (end - last)
    return area / (end - start), peak
