"""Throughput and calls in flight of one worker process, a ten-minute soak of the office
at that steady load, then the same with two worker processes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_bench_soak \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python bench/throughput_soak.py [--soak 600] [--slots 200] [--latency 1]

Recreates the database DATABASE_URL names and empties the broker's Redis database. Starts
the office as the Procfile does (bench/live_office.py): the sandbox provider at a fixed
latency (1 s: a short answer from a real model), PgBouncer, gunicorn, one Celery worker
(threads pool, --slots threads, both queues) and beat, on the demo office. A load
generator submits tasks through the agent API (POST /api/tasks/) and keeps --in-flight
of them in flight (default: the slots and a tenth more, so the worker never waits for
work, and the queue left to drain at the end stays short), learning from the database
when one ends.

- **Throughput and concurrency** (issue 6 part 3), over the soak after its warm-up:
  tasks ended per second, and the calls the sandbox held at once (from its request log:
  each call from its arrival to its answer). Targets: >= 200 calls in flight and
  throughput >= 0.95 x slots / latency.
- **Soak** (part 6): the resident memory (VmRSS, summed over each process tree) of the
  web server and the worker when the warm-up ends and at the end of the soak, every
  minute between; growth bounded by --growth-bound (10 %: a leak of 1 KiB a task shows
  above it within the ten minutes, while caches that fill once stay under it); errors:
  failed or unfinished tasks, HTTP errors from the API, tracebacks and ERROR lines in
  any process's log, sandbox answers other than 200: 0.
- **Two workers** (part 3): a second worker process with the same slots joins, the
  generator doubles what it keeps in flight, and after a warm-up the throughput is
  measured again. Target: at least 1.6 times one worker's (the ideal is 2).

Finally every task must be done, and every call in the sandbox's log one settled ledger
row and the other way round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "office.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
os.environ.setdefault("ROSTER_FERNET_KEYS", "x4SWdW0nE9qRk1a5ub8UTSSTvPDkA7zdeXtXwEbx1Xs=")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/roster_bench_soak")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")

import live_office as live  # noqa: E402  (bench/ is the script's folder)
from results import result_print  # noqa: E402

MIB = 1024 * 1024
TARGET_SHARE_OF_SLOTS = 0.95
TARGET_IN_FLIGHT = 200
TARGET_SCALING = 1.6


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    ended: int
    in_flight: int  # tasks submitted and not ended
    web_rss: int
    worker_rss: int
    cpu: dict[str, float]


@dataclass
class Marks:
    """Moments of the run (wall clock) and the samples taken there."""

    load_start: float = 0.0
    steady: Sample | None = None  # the soak's warm-up is over
    soak_end: Sample | None = None
    scaled: Sample | None = None  # the second worker is warm
    scale_end: Sample | None = None
    samples: list[Sample] | None = None


def prompt(number: int) -> str:
    return (
        f"Draft a two-line note to the team (note {number}): the Friday review moves to "
        "3 pm in the small meeting room."
    )


def mib(value: int) -> str:
    return f"{value / MIB:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=float, default=600, help="seconds of one-worker load")
    parser.add_argument("--warmup", type=float, default=30, help="first seconds left out")
    parser.add_argument("--slots", type=int, default=200, help="threads per worker")
    parser.add_argument("--latency", type=float, default=1.0, help="sandbox latency, s")
    parser.add_argument(
        "--in-flight", type=int, default=0, help="tasks kept in flight per worker (0: slots x 1.1)"
    )
    parser.add_argument("--scale-warmup", type=float, default=10)
    parser.add_argument("--scale-seconds", type=float, default=25)
    parser.add_argument("--growth-bound", type=float, default=10.0, help="RSS growth, %%")
    parser.add_argument("--connections", type=int, default=16, help="generator connections")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=32)
    parser.add_argument("--pool", type=int, default=20, help="PgBouncer server connections")
    args = parser.parse_args()
    per_worker = args.in_flight or int(args.slots * 1.1)

    import django

    django.setup()
    from databases import database_recreate
    from django.conf import settings
    from django.db import connections

    database = database_recreate()
    broker = settings.CELERY_BROKER_URL
    live.broker_flush(broker)
    work = Path(tempfile.mkdtemp(prefix="roster-soak-"))
    children: list[live.Child] = []
    marks = Marks(samples=[])
    problems: list[str] = []
    try:
        sandbox, sandbox_url = live.sandbox_start(work, latency=args.latency)
        children.append(sandbox)
        token = live.office_seed(sandbox_url=sandbox_url)
        db = settings.DATABASES["default"]
        direct = (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{database}"
        )
        connections.close_all()
        bouncer, pooled = live.pgbouncer_start(work, database_url=direct, pool_size=args.pool)
        children.append(bouncer)
        env = live.office_env(pooled_url=pooled, broker_url=broker)
        web, web_url = live.web_start(work, env, workers=args.web_workers, threads=args.web_threads)
        children.append(web)
        worker = live.worker_start(work, env, concurrency=args.slots, name="worker1")
        children.append(worker)
        children.append(live.beat_start(work, env))
        print(
            f"database {database} through PgBouncer ({args.pool} server connections); broker "
            f"{broker}; sandbox latency {args.latency * 1000:.0f} ms; web: gunicorn "
            f"{args.web_workers} x {args.web_threads} threads; worker: {args.slots} threads; "
            f"{per_worker} tasks kept in flight per worker; soak {args.soak:.0f} s "
            f"(the first {args.warmup:.0f} s warm-up); {os.cpu_count()} CPUs; "
            f"load average {live.loadavg()}",
            flush=True,
        )
        generator = live.LoadGenerator(
            web_url=web_url,
            token=token,
            dsn=direct,
            connections=args.connections,
            poll_interval=0.1,
            prompt=prompt,
        )
        workers = [worker]
        me = os.getpid()
        meters = {
            "worker": lambda: [pid for w in workers for pid in w.pids()],
            "web": web.pids,
            "postgres": lambda: live.postgres_backend_pids(database),
            "pgbouncer": bouncer.pids,
            "sandbox": sandbox.pids,
            "generator": lambda: [me],
        }
        target = [per_worker]

        def sample() -> Sample:
            return Sample(
                at=time.time() - marks.load_start,
                ended=generator.state.ended,
                in_flight=generator.state.in_flight,
                web_rss=live.rss_bytes(web.pids()),
                worker_rss=live.rss_bytes(worker.pids()),
                cpu={name: live.cpu_seconds(pids()) for name, pids in meters.items()}
                | {"machine": live.machine_busy()[0]},
            )

        async def control(stop: asyncio.Event) -> None:
            async def until(moment: float) -> None:
                while time.time() < moment:
                    await asyncio.sleep(min(5.0, max(0.0, moment - time.time())))
                    # In a thread: Django refuses its ORM inside a running event loop.
                    marks.samples.append(await asyncio.to_thread(sample))  # type: ignore[union-attr]

            async def until_full(deadline: float) -> None:
                while generator.state.in_flight < 0.95 * target[0] and time.time() < deadline:
                    await asyncio.sleep(0.5)

            start = marks.load_start
            await until(start + args.warmup)
            marks.steady = await asyncio.to_thread(sample)
            await until(start + args.soak)
            marks.soak_end = await asyncio.to_thread(sample)
            print(f"soak done at {marks.soak_end.at:.0f} s; starting a second worker", flush=True)
            second = await asyncio.to_thread(
                live.worker_start, work, env, concurrency=args.slots, name="worker2"
            )
            workers.append(second)
            children.append(second)
            target[0] = 2 * per_worker
            # The generator fills the second worker's share at the API's pace first.
            await until_full(time.time() + 60)
            await until(time.time() + args.scale_warmup)
            marks.scaled = await asyncio.to_thread(sample)
            await until(time.time() + args.scale_seconds)
            marks.scale_end = await asyncio.to_thread(sample)
            stop.set()

        async def drive() -> None:
            stop = asyncio.Event()
            marks.load_start = time.time()
            await asyncio.gather(control(stop), generator.run(lambda: target[0], stop, drain=300))

        asyncio.run(drive())
        drained = time.time()
        problems += checks(generator, work / "sandbox-requests.jsonl")
        errors = live.log_errors(children)
        if any(errors.values()):
            problems.append(f"errors in the processes' logs: {errors}")
    finally:
        for child in reversed(children):
            child.stop()

    report(args, marks, generator, work, drained=drained, problems=problems)
    if problems:
        print(f"the processes' logs are in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def checks(generator: live.LoadGenerator, sandbox_log: Path) -> list[str]:
    """Every task done; every call the sandbox answered one settled ledger row."""
    from django.db.models import Count

    from billing.models import Usage
    from office.models import Task

    problems = []
    state = generator.state
    if generator.unfinished():
        problems.append(f"{generator.unfinished()} tasks still not ended after the drain")
    if state.http_errors:
        problems.append(f"{state.http_errors} HTTP errors: {state.http_error_samples}")
    statuses = dict(Task.objects.values_list("status").annotate(n=Count("id")).order_by())
    if set(statuses) != {"done"}:
        problems.append(f"tasks by status: {statuses}")
    rows = dict(Usage.objects.filter(helper_operation="").values_list("call_id", "status"))
    calls = live.sandbox_calls(sandbox_log)
    not_ok = sum(call.status != 200 for call in calls)
    if not_ok:
        problems.append(f"{not_ok} sandbox answers other than 200")
    answered = {call.call_id for call in calls if call.status == 200}
    if set(rows) != answered:
        problems.append(
            f"{len(set(rows) - answered)} ledger rows the sandbox did not answer, "
            f"{len(answered - set(rows))} answered calls not in the ledger"
        )
    unsettled = sum(status != "settled" for status in rows.values())
    if unsettled:
        problems.append(f"{unsettled} provider calls not settled")
    print(
        f"checked: {len(state.tasks)} tasks submitted, {statuses}; {len(rows)} provider calls "
        f"in the ledger, {len(answered)} answered by the sandbox, {unsettled} unsettled, "
        f"{state.http_errors} HTTP errors, {state.reconnects} idle connections reopened"
    )
    return problems


def report(
    args: argparse.Namespace,
    marks: Marks,
    generator: live.LoadGenerator,
    work: Path,
    *,
    drained: float,
    problems: list[str],
) -> None:
    steady, soak_end = marks.steady, marks.soak_end
    scaled, scale_end = marks.scaled, marks.scale_end
    if not (steady and soak_end and scaled and scale_end and marks.samples):
        raise SystemExit("the run stopped before its last phase")
    window = soak_end.at - steady.at
    one = (soak_end.ended - steady.ended) / window
    two = (scale_end.ended - scaled.ended) / (scale_end.at - scaled.at)
    calls = live.sandbox_calls(work / "sandbox-requests.jsonl")
    mean_calls, max_calls = live.in_flight_levels(
        calls, marks.load_start + steady.at, marks.load_start + soak_end.at
    )
    mean_calls_2, max_calls_2 = live.in_flight_levels(
        calls, marks.load_start + scaled.at, marks.load_start + scale_end.at
    )
    ended = soak_end.ended - steady.ended
    cpu = {
        name: (soak_end.cpu[name] - steady.cpu[name]) * 1000 / max(ended, 1)
        for name in steady.cpu
        if name != "machine"
    }
    busy = (soak_end.cpu["machine"] - steady.cpu["machine"]) / window / (os.cpu_count() or 1)

    print("\n   t (s)  ended  in flight  web RSS  worker RSS")
    shown = 0.0
    for s in marks.samples:
        if s.at - shown >= 60 or s is marks.samples[-1]:
            print(
                f"  {s.at:6.0f} {s.ended:6d} {s.in_flight:10d} {mib(s.web_rss):>8} "
                f"{mib(s.worker_rss):>11}"
            )
            shown = s.at
    print(
        f"\none worker, {args.slots} slots, over {window:.0f} s after a {args.warmup:.0f} s "
        f"warm-up: {one:.1f} tasks/s; calls in flight (the sandbox's log) mean "
        f"{mean_calls:.1f}, max {max_calls}; machine CPU {100 * busy:.0f} % busy"
    )
    print("  CPU per task (ms): " + ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items()))
    print(
        f"two workers over {scale_end.at - scaled.at:.0f} s: {two:.1f} tasks/s "
        f"({two / one:.2f} x one; {scaled.in_flight} tasks in flight when measured); calls in "
        f"flight mean {mean_calls_2:.1f}, max {max_calls_2}"
    )
    growth = {
        "web": (steady.web_rss, soak_end.web_rss),
        "worker": (steady.worker_rss, soak_end.worker_rss),
    }
    for name, (before, after) in growth.items():
        print(
            f"{name} RSS {mib(before)} at {steady.at:.0f} s, {mib(after)} at {soak_end.at:.0f} s "
            f"({100 * (after - before) / before:+.1f} %)"
        )
    print(
        f"drained {drained - marks.load_start - scale_end.at:.0f} s after the load stopped; "
        f"load average {live.loadavg()}"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}")

    slots_target = TARGET_SHARE_OF_SLOTS * args.slots / args.latency
    result_print(
        benchmark=f"throughput, one worker process ({args.slots} slots, "
        f"sandbox {args.latency:g} s)",
        target=f">= 0.95 x slots / latency = {slots_target:.0f} tasks/s",
        figure=f"{one:.1f} tasks/s (worker CPU {cpu['worker']:.1f} ms a task; machine "
        f"{100 * busy:.0f} % busy)",
        passed=one >= slots_target,
        sandbox_rps=max(one, two),
    )
    result_print(
        benchmark="calls in flight, one worker process",
        target=f">= {TARGET_IN_FLIGHT}",
        figure=f"mean {mean_calls:.1f}, max {max_calls} (the sandbox's log)",
        passed=mean_calls >= TARGET_IN_FLIGHT,
    )
    result_print(
        benchmark="throughput, two worker processes against one",
        target=f">= {TARGET_SCALING:g} x",
        figure=f"{two / one:.2f} x ({two:.1f} against {one:.1f} tasks/s)",
        passed=two / one >= TARGET_SCALING,
    )
    grown = {name: 100 * (after - before) / before for name, (before, after) in growth.items()}
    result_print(
        benchmark=f"soak, {args.soak / 60:g} min: memory growth after warm-up",
        target=f"<= {args.growth_bound:g} % (web and worker RSS)",
        figure=", ".join(
            f"{name} {mib(before)} to {mib(after)} ({grown[name]:+.1f} %)"
            for name, (before, after) in growth.items()
        ),
        passed=all(value <= args.growth_bound for value in grown.values()),
    )
    result_print(
        benchmark=f"soak, {args.soak / 60:g} min: errors",
        target="0",
        figure=f"{len(problems)} problem(s) in {len(generator.state.tasks)} tasks"
        + (": " + "; ".join(problems) if problems else ""),
        passed=not problems,
    )


if __name__ == "__main__":
    main()
