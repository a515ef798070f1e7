"""How many requests per second the sandbox provider sustains on loopback.

Starts `manage.py sandbox_provider` on a free port, then drives it from several client
processes, each keeping many keep-alive connections busy with raw asyncio streams (no
HTTP client library in the way, so the load generator stays cheap). Prints requests/s in
the measured window, plus the CPU the server and the clients used: a server near 100% of
one core with clients below it means the figure is the server's, not the generator's.

    .venv/bin/python bench/sandbox_capacity.py [--duration 10] [--clients 1] [--connections 32]

Target: at least 2,000 requests/s, so that it is never the bottleneck of a benchmark
(bench/run_all.py shows each benchmark's request rate beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from results import result_print

ROOT = Path(__file__).resolve().parent.parent
TARGET_RPS = 2000  # the walking office's target: the sandbox never bottlenecks a benchmark
READY_LINE = re.compile(r"listening on http://([^:]+):(\d+)")

PAYLOAD = {
    "model": "openai/gpt-4o-mini",
    "max_tokens": 256,
    "messages": [
        {"role": "system", "content": "You are the finance role of a small office. Be brief."},
        {
            "role": "user",
            "content": "Summarise last month's spending by supplier and flag anything that "
            "looks like a duplicate invoice.",
        },
    ],
}


@dataclass(frozen=True)
class ClientResult:
    completed: int  # 200 responses inside the measured window
    failed: int  # anything else inside the window
    cpu_seconds: float  # client process CPU inside the window


def build_request(host: str, port: int, path: str) -> bytes:
    body = json.dumps(PAYLOAD).encode()
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Authorization: Bearer sandbox-bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


async def drive(
    host: str, port: int, request: bytes, connections: int, start: float, stop: float
) -> ClientResult:
    completed = failed = 0
    cpu_start = cpu_stop = 0.0

    async def connection() -> None:
        nonlocal completed, failed
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                now = time.time()
                if now >= stop:
                    return
                if now >= start:
                    if head.startswith(b"HTTP/1.1 200"):
                        completed += 1
                    else:
                        failed += 1
        finally:
            writer.close()

    async def cpu_marks() -> None:
        nonlocal cpu_start, cpu_stop
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu_start = time.process_time()
        await asyncio.sleep(max(0.0, stop - time.time()))
        cpu_stop = time.process_time()

    await asyncio.gather(cpu_marks(), *(connection() for _ in range(connections)))
    return ClientResult(completed=completed, failed=failed, cpu_seconds=cpu_stop - cpu_start)


def client_process(
    host: str,
    port: int,
    request: bytes,
    connections: int,
    start: float,
    stop: float,
    results: multiprocessing.Queue[ClientResult],
) -> None:
    results.put(asyncio.run(drive(host, port, request, connections, start, stop)))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sandbox() -> tuple[subprocess.Popen[str], str, int]:
    env = dict(os.environ)
    # The sandbox needs Django settings only for defaults; without a configured secret
    # key, debug settings let it start.
    if not env.get("DJANGO_SECRET_KEY"):
        env["DJANGO_DEBUG"] = "1"
    server = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox_provider", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = READY_LINE.search(line)
    if not match:
        server.kill()
        raise SystemExit(f"the sandbox did not start: {line!r}")
    return server, match.group(1), int(match.group(2))


def check_answer(host: str, port: int, request: bytes) -> None:
    """One request by hand: the benchmark must measure real answers, not errors."""

    async def once() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request.replace(b"keep-alive", b"close"))
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        body = await reader.readexactly(length)
        writer.close()
        return body

    answer = json.loads(asyncio.run(once()), parse_float=Decimal)
    usage = answer["usage"]
    print(
        f"sample answer: {answer['choices'][0]['message']['content']!r}; "
        f"usage {usage['prompt_tokens']} in / {usage['completion_tokens']} out, "
        f"cost {usage.get('cost')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--connections", type=int, default=32, help="connections per client")
    parser.add_argument("--path", default="/api/v1/chat/completions")
    args = parser.parse_args()

    server, host, port = start_sandbox()
    try:
        request = build_request(host, port, args.path)
        check_answer(host, port, request)
        start = time.time() + args.warmup
        stop = start + args.duration
        results: multiprocessing.Queue[ClientResult] = multiprocessing.Queue()
        clients = [
            multiprocessing.Process(
                target=client_process,
                args=(host, port, request, args.connections, start, stop, results),
            )
            for _ in range(args.clients)
        ]
        for client in clients:
            client.start()
        time.sleep(max(0.0, start - time.time()))
        server_cpu_start = process_cpu_seconds(server.pid)
        time.sleep(max(0.0, stop - time.time()))
        server_cpu = process_cpu_seconds(server.pid) - server_cpu_start
        outcomes = [results.get(timeout=args.duration + 30) for _ in clients]
        for client in clients:
            client.join()
    finally:
        server.terminate()
        server.wait(timeout=10)

    completed = sum(o.completed for o in outcomes)
    failed = sum(o.failed for o in outcomes)
    client_cpu = sum(o.cpu_seconds for o in outcomes)
    print(
        f"POST {args.path} (non-streaming, zero latency), {args.clients} client process(es) x "
        f"{args.connections} keep-alive connections, {args.duration:g} s measured on "
        f"{os.cpu_count()} CPUs"
    )
    print(f"completed: {completed} ok, {failed} not ok")
    print(
        f"server CPU: {100 * server_cpu / args.duration:.0f}% of one core; "
        f"clients CPU: {100 * client_cpu / args.duration:.0f}% of one core"
    )
    rate = completed / args.duration
    print(f"sandbox capacity: {rate:,.0f} requests/s")
    result_print(
        benchmark="sandbox provider capacity (non-streaming chat completion with cost)",
        target=f">= {TARGET_RPS:,} requests/s",
        figure=f"{rate:,.0f} requests/s (server {100 * server_cpu / args.duration:.0f} % of "
        f"one core, client {100 * client_cpu / args.duration:.0f} %)",
        passed=rate >= TARGET_RPS and failed == 0,
        note="" if failed == 0 else f"{failed} answers other than 200",
        sandbox_rps=rate,  # here the rate it was sent is its capacity
    )


if __name__ == "__main__":
    main()
