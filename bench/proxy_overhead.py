"""What /v1/chat/completions adds to a provider call: its latency over calling the
sandbox provider directly, at concurrency 1 and 64, p50 and p99.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_bench_proxy \\
        .venv/bin/python bench/proxy_overhead.py

Without DATABASE_URL it runs on SQLite in a temporary folder. A PostgreSQL database named
by DATABASE_URL is dropped and recreated. Starts the sandbox provider with a fixed
latency (--latency, default 1 s: a short answer from a real model) and the production
web server (gunicorn, threaded workers: --workers x --threads), seeds one role bound to
the sandbox (an office budget and a role budget, never reached, so every call reserves
and settles against both), an agent and its API token. Then, for each concurrency,
sends the same chat completion directly to the sandbox and through Roster (keep-alive
connections, warm-up requests left out) and prints p50 and p99 of each and of the
difference. Targets at concurrency 64: added p50 <= 3 ms, added p99 <= 15 ms. With
--floor it measures
bench/wsgi_floor.py the same way: what a bare Python WSGI proxy adds on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "office.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
os.environ.setdefault("ROSTER_FERNET_KEYS", "x4SWdW0nE9qRk1a5ub8UTSSTvPDkA7zdeXtXwEbx1Xs=")
# Without DATABASE_URL: SQLite in a folder of the bench's own, deleted at the end (never
# an ROSTER_VAR_DIR of the caller's).
BENCH_VAR_DIR = None
if "DATABASE_URL" not in os.environ:
    BENCH_VAR_DIR = tempfile.mkdtemp(prefix="roster-proxy-bench-")
    os.environ["ROSTER_VAR_DIR"] = BENCH_VAR_DIR

READY_LINE = re.compile(r"listening on http://([^:]+):(\d+)")
MODEL = "openai/gpt-4.1-mini"
UPSTREAM = "gpt-4.1-mini"
SYSTEM = "You are the finance role of a small office. Be brief."
QUESTION = (
    "Summarise last month's spending by supplier and flag anything that looks like a "
    "duplicate invoice."
)
MAX_TOKENS = 256
TARGET_P50_MS = 3.0
TARGET_P99_MS = 15.0


def setup_django() -> None:
    import django

    django.setup()


def prepare_database() -> str:
    """A fresh, migrated database; return what it is, for the report."""
    from django.conf import settings
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        from databases import database_recreate

        return f"PostgreSQL {database_recreate()}"
    call_command("migrate", verbosity=0)
    return f"SQLite {db['NAME']}"


def seed(sandbox_url: str) -> str:
    """One role bound to the sandbox, budgets that never block, an agent's token.
    Returns the raw token."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from agents.models import RoleBinding
    from agents.services import credential_create
    from billing.catalog import catalog_parse, catalog_sync
    from billing.models import Budget, CatalogModel
    from office.models import ApiToken, Role

    data = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text())
    data["data"] = [entry for entry in data["data"] if entry["id"] == MODEL]
    catalog_sync(entries=catalog_parse(data))
    role = Role.objects.create(slug="finance", name="Finance", system_prompt=SYSTEM)
    credential = credential_create(
        label="sandbox", provider="openai", base_url=sandbox_url + "/v1",
        raw_secret="sandbox-bench-key",
    )  # fmt: skip
    RoleBinding.objects.create(
        role=role, model=CatalogModel.objects.get(slug=MODEL), credential=credential,
        max_tokens=MAX_TOKENS,
    )  # fmt: skip
    Budget.objects.create(name="office", scope="office", period="month", limit=Decimal(10**6))
    Budget.objects.create(
        name="finance", scope="role", role=role, period="month", limit=Decimal(10**6)
    )
    user = get_user_model().objects.create(username="bench-agent")
    raw = ApiToken.new_raw_key()
    token = ApiToken(user=user, name="bench")
    token.set_key(raw)
    token.save()
    return raw


def start_sandbox(latency: float) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox_provider", "--port", "0",
         "--latency", str(latency)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    match = READY_LINE.search(server.stdout.readline())
    if not match:
        server.kill()
        raise SystemExit("the sandbox did not start")
    return server, f"http://{match.group(1)}:{match.group(2)}"


def start_web(
    workers: int,
    threads: int,
    port: int,
    *,
    app: str = "office.wsgi",
    env_extra: dict | None = None,
) -> subprocess.Popen[bytes]:
    """gunicorn as the Procfile runs it, with threaded workers (a streaming or waiting
    request holds a thread, not a process)."""
    from django.conf import settings

    env = dict(os.environ, **(env_extra or {}))
    # The benchmark sends thousands of calls a minute with one token; the per-token rate
    # limit is for agents, not for measuring the path.
    env.setdefault("ROSTER_API_THROTTLE_RATE", "100000/second")
    db = settings.DATABASES["default"]
    if "DATABASE_URL" not in env:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
         "--backlog", "2048", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


def http_request(url: str, body: dict, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """(host, port, the request's bytes): a keep-alive POST of `body` as JSON."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head += ["Content-Type: application/json", f"Content-Length: {len(payload)}", "", ""]
    return parts.hostname or "127.0.0.1", parts.port or 80, "\r\n".join(head).encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: (status, body), Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length:
        return status, await reader.readexactly(int(length.group(1)))
    body = b""
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        body += await reader.readexactly(size + 2)
        if size == 0:
            return status, body


async def measure(
    url: str, body: dict, headers: dict[str, str], *, concurrency: int, requests: int,
    warmup: int,
) -> list[float]:  # fmt: skip
    """Send `warmup + requests` requests from `concurrency` keep-alive connections;
    return the latencies (seconds) of the measured ones. Any non-200 aborts.

    Raw asyncio streams, not an HTTP client library: at 64 connections a library's own
    CPU per request would be measured as latency on both sides."""
    host, port, request = http_request(url, body, headers)
    latencies: list[float] = []
    remaining = warmup + requests

    async def one_connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining > 0:
                remaining -= 1
                measured = remaining < requests
                started = time.perf_counter()
                writer.write(request)
                status, answer = await read_response(reader)
                elapsed = time.perf_counter() - started
                if status != 200:
                    raise SystemExit(f"{url}: HTTP {status}: {answer[:300]!r}")
                if measured:
                    latencies.append(elapsed)
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children, from /proc."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(process_cpu_seconds(int(child)) for child in children)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=1.0, help="sandbox latency, s")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=64,
        help="threads per worker (a call holds one; keep-alive connections stay on one worker)",
    )
    parser.add_argument("--requests", type=int, default=100, help="measured, at concurrency 1")
    parser.add_argument("--requests-64", type=int, default=1280, help="measured at 64")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of requests left out")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="ROSTER_DB_CONN_MAX_AGE for the web server (0: a new connection per request)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure bench/wsgi_floor.py: a bare WSGI proxy, no Django, no database",
    )
    args = parser.parse_args()

    setup_django()
    database = prepare_database()
    sandbox, sandbox_url = start_sandbox(args.latency)
    raw = seed(sandbox_url)
    from django.db import connections

    connections.close_all()
    os.environ["ROSTER_DB_CONN_MAX_AGE"] = str(args.conn_max_age)
    direct_body = {
        "model": UPSTREAM,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
    }
    direct = (
        f"{sandbox_url}/v1/chat/completions",
        direct_body,
        {"Authorization": "Bearer sandbox-bench-key"},
    )
    targets = {}
    servers = []
    try:
        port = free_port()
        servers.append(start_web(args.workers, args.threads, port))
        targets["/v1"] = (
            servers[-1],
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {"model": "finance", "messages": [{"role": "user", "content": QUESTION}]},
            {"Authorization": f"Bearer {raw}"},
        )
        if args.floor:
            port = free_port()
            servers.append(
                start_web(
                    args.workers, args.threads, port, app="wsgi_floor",
                    env_extra={"PYTHONPATH": str(ROOT / "bench"),
                               "ROSTER_FLOOR_UPSTREAM": sandbox_url},
                )
            )  # fmt: skip
            targets["floor"] = (
                servers[-1],
                f"http://127.0.0.1:{port}/",
                {"upstream": UPSTREAM, "messages": direct_body["messages"]},
                {},
            )
        print(
            f"web: gunicorn {args.workers} workers x {args.threads} threads (gthread); "
            f"database: {database} (ROSTER_DB_CONN_MAX_AGE={args.conn_max_age}); "
            f"sandbox latency {args.latency * 1000:.0f} ms; "
            f"{os.cpu_count()} CPUs"
        )
        results = {name: {} for name in targets}
        cpu_per_call: dict[str, float] = {}
        for concurrency, count in ((1, args.requests), (64, args.requests_64)):
            warmup = max(concurrency, int(count * args.warmup))
            baseline = asyncio.run(
                measure(*direct, concurrency=concurrency, requests=count, warmup=warmup)
            )
            d50, d99 = percentile(baseline, 50) * 1000, percentile(baseline, 99) * 1000
            print(
                f"concurrency {concurrency:>2}, {count} requests each: "
                f"direct p50 {d50:.1f} ms p99 {d99:.1f} ms"
            )
            for name, (server, url, body, headers) in targets.items():
                cpu_before = process_cpu_seconds(server.pid)
                latencies = asyncio.run(
                    measure(url, body, headers, concurrency=concurrency, requests=count,
                            warmup=warmup)
                )  # fmt: skip
                cpu_ms = (process_cpu_seconds(server.pid) - cpu_before) * 1000 / (count + warmup)
                p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
                results[name][concurrency] = (p50 - d50, p99 - d99)
                cpu_per_call[name] = cpu_ms
                print(
                    f"  through {name:<5} p50 {p50:.1f} ms p99 {p99:.1f} ms; "
                    f"added p50 {p50 - d50:.1f} ms p99 {p99 - d99:.1f} ms; "
                    f"server CPU {cpu_ms:.1f} ms per request"
                )
        from billing.models import Usage, UsageStatus
        from office.models import Task, TaskStatus

        settled = Usage.objects.filter(status=UsageStatus.SETTLED).count()
        done = Task.objects.filter(status=TaskStatus.DONE).count()
        proxied = sum(
            count + max(concurrency, int(count * args.warmup))
            for concurrency, count in ((1, args.requests), (64, args.requests_64))
        )
        print(f"ledger: {settled} calls settled, {done} tasks done, {proxied} calls proxied")
        consistent = settled == done == proxied
        ledger_note = f"{proxied} calls proxied, {settled} settled, {done} tasks done"
    finally:
        for server in servers:
            server.terminate()
        sandbox.terminate()
        for server in servers:
            server.wait(timeout=30)
        sandbox.wait(timeout=30)
        if BENCH_VAR_DIR is not None:
            shutil.rmtree(BENCH_VAR_DIR, ignore_errors=True)
    from results import result_print

    for name, by_concurrency in results.items():
        (c1_50, c1_99), (added50, added99) = by_concurrency[1], by_concurrency[64]
        passed = added50 <= TARGET_P50_MS and added99 <= TARGET_P99_MS
        label = "/v1/chat/completions" if name == "/v1" else "bare WSGI proxy (bench/wsgi_floor.py)"
        result_print(
            benchmark=f"{label} added latency at 64 in flight, sandbox at "
            f"{args.latency * 1000:.0f} ms ({database.split()[0]})",
            target=f"p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms"
            if name == "/v1"
            else "- (the floor under the target)",
            figure=f"p50 {added50:.1f} ms, p99 {added99:.1f} ms (at 1 in flight: p50 "
            f"{c1_50:.1f} ms, p99 {c1_99:.1f} ms; server CPU {cpu_per_call[name]:.1f} ms a call)",
            passed=passed if name == "/v1" else None,
            note="" if consistent else ledger_note,
            sandbox_rps=64 / args.latency,
        )


if __name__ == "__main__":
    main()
