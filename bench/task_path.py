"""What the office adds to a provider call: the time from submitting a task through the
agent API to the task being done, less the provider's latency, at 1 and at 200 tasks in
flight. Targets: p50 <= 15 ms, p99 <= 50 ms.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_bench_task_path \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python bench/task_path.py [--latency 0.2] [--slots 200]

Recreates the database DATABASE_URL names and empties the broker's Redis database. Starts
the office's real processes (bench/live_office.py): the sandbox provider at a fixed
latency, PgBouncer, gunicorn (threaded) and one Celery worker (threads pool, --slots
threads, both queues), on the demo office. A load generator submits tasks (POST
/api/tasks/, the secretary, no title: the helper writes it) on keep-alive connections and
keeps 1, then 200, in flight; it learns that a task ended from the database.

A task's overhead is its `finished_at` (written by the worker) less the moment its
request was sent, less the sandbox's latency. The first tasks of each phase are warm-up
and left out; so are the tasks submitted after the measured ones, which only keep the
load up while those finish. Per phase it prints p50/p99, where the time goes (from the
task's and its ledger row's timestamps), and the CPU per task of each process (from
/proc). At the end every task must be done and every provider call in the sandbox's log
must be one settled ledger row.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/roster_bench_task_path")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")

import live_office as live  # noqa: E402  (bench/ is the script's folder)
from results import result_print  # noqa: E402

TARGET_P50_MS = 15.0
TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class Phase:
    in_flight: int
    warmup: int
    measured: int


@dataclass(frozen=True)
class PhaseResult:
    phase: Phase
    overhead_ms: list[float]
    seconds: float
    ended: int
    cpu_ms_per_task: dict[str, float]
    machine_busy: float  # share of both cores busy, whoever used them
    breakdown: dict[str, tuple[float, float]]  # segment -> (p50, p99) ms
    api_ms: tuple[float, float]


def prompt(number: int) -> str:
    return (
        f"Draft a two-line note to the team (note {number}): the Friday review moves to "
        "3 pm in the small meeting room."
    )


def phase_run(
    phase: Phase, *, web_url: str, token: str, dsn: str, latency: float, meters: dict
) -> tuple[PhaseResult, list[live.Submitted]]:
    generator = live.LoadGenerator(
        web_url=web_url,
        token=token,
        dsn=dsn,
        connections=min(phase.in_flight, 8),
        # At 1 in flight the next task goes as soon as one ends; the figure itself comes
        # from finished_at, not from when the poller noticed.
        poll_interval=0.02 if phase.in_flight == 1 else 0.05,
        prompt=prompt,
    )
    measured = range(phase.warmup, phase.warmup + phase.measured)

    async def drive() -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            while True:
                await asyncio.sleep(0.05)
                tasks = generator.state.tasks
                if len(tasks) >= measured.stop and all(tasks[n].status for n in measured):
                    stop.set()
                    return

        await asyncio.gather(watch(), generator.run(lambda: phase.in_flight, stop, drain=120))

    cpu_before = {name: live.cpu_seconds(pids()) for name, pids in meters.items()}
    busy_before, total_before = live.machine_busy()
    started = time.time()
    asyncio.run(drive())
    seconds = time.time() - started
    busy_after, total_after = live.machine_busy()
    cpu_after = {name: live.cpu_seconds(pids()) for name, pids in meters.items()}
    ended = generator.state.ended
    if generator.unfinished() or generator.state.http_errors:
        raise SystemExit(
            f"{generator.unfinished()} tasks did not end within the drain; "
            f"HTTP errors: {generator.state.http_errors} {generator.state.http_error_samples}"
        )
    tasks = [generator.state.tasks[n] for n in measured]
    overhead = [(t.finished - t.submitted - latency) * 1000 for t in tasks]
    api = [(t.created - t.submitted) * 1000 for t in tasks]
    result = PhaseResult(
        phase=phase,
        overhead_ms=overhead,
        seconds=seconds,
        ended=ended,
        cpu_ms_per_task={
            name: (cpu_after[name] - cpu_before[name]) * 1000 / ended for name in meters
        },
        machine_busy=(busy_after - busy_before) / (total_after - total_before),
        breakdown=breakdown(tasks, latency=latency),
        api_ms=(live.percentile(api, 50), live.percentile(api, 99)),
    )
    return result, generator.state.tasks


def breakdown(tasks: list[live.Submitted], *, latency: float) -> dict[str, tuple[float, float]]:
    """Where each measured task's time went, from its timestamps: p50 and p99 (ms) of
    each segment."""
    from billing.models import Usage
    from office.models import Task

    submitted = {t.task_id: t.submitted for t in tasks}
    rows = Task.objects.filter(pk__in=list(submitted)).values_list(
        "pk", "created_at", "prepared_at", "started_at", "finished_at"
    )
    calls = {
        task_id: (created, settled)
        for task_id, created, settled in Usage.objects.filter(
            task_id__in=list(submitted), helper_operation=""
        ).values_list("task_id", "created_at", "settled_at")
    }
    segments: dict[str, list[float]] = {
        "request to task row (API)": [],
        "to prepared (queue, helper title)": [],
        "to execution claimed (queue)": [],
        "to pending ledger row (route, budget)": [],
        "provider call beyond its latency, settle": [],
        "settled to done": [],
    }
    names = list(segments)
    for task_id, created, prepared, started, finished in rows:
        call_created, settled = calls[task_id]
        marks = [
            submitted[task_id],
            created.timestamp(),
            prepared.timestamp(),
            started.timestamp(),
            call_created.timestamp(),
            settled.timestamp() - latency,
            finished.timestamp() - latency,
        ]
        for name, (a, b) in zip(names, itertools.pairwise(marks), strict=True):
            segments[name].append((b - a) * 1000)
    return {
        name: (live.percentile(values, 50), live.percentile(values, 99))
        for name, values in segments.items()
    }


def phase_print(result: PhaseResult) -> None:
    phase = result.phase
    p50, p99 = live.percentile(result.overhead_ms, 50), live.percentile(result.overhead_ms, 99)
    print(
        f"\n{phase.in_flight} in flight: {phase.measured} tasks measured after {phase.warmup} "
        f"warm-up; {result.ended} ended in {result.seconds:.1f} s "
        f"({result.ended / result.seconds:.1f} tasks/s); machine CPU busy "
        f"{100 * result.machine_busy:.0f} % of 2 cores"
    )
    print(
        f"  submit to done less the provider's latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"(POST /api/tasks/ answered in p50 {result.api_ms[0]:.1f} ms, "
        f"p99 {result.api_ms[1]:.1f} ms)"
    )
    for name, (s50, s99) in result.breakdown.items():
        print(f"    {name:<42} p50 {s50:8.1f} ms  p99 {s99:8.1f} ms")
    cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in result.cpu_ms_per_task.items())
    print(f"  CPU per task (ms): {cpu}")


def ledger_check(tasks: list[live.Submitted], sandbox_log: Path) -> list[str]:
    """Every task done, and every call the sandbox answered one settled ledger row."""
    from django.db.models import Count

    from billing.models import Usage
    from office.models import Task

    problems = []
    ids = [t.task_id for t in tasks]
    statuses = dict(
        Task.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("id")).order_by()
    )
    if statuses != {"done": len(ids)}:
        problems.append(f"tasks by status {statuses}, expected all {len(ids)} done")
    rows = dict(Usage.objects.filter(helper_operation="").values_list("call_id", "status"))
    answered = {c.call_id for c in live.sandbox_calls(sandbox_log) if c.status == 200}
    if set(rows) != answered:
        problems.append(
            f"{len(set(rows) - answered)} ledger rows the sandbox did not answer, "
            f"{len(answered - set(rows))} answered calls not in the ledger"
        )
    unsettled = sum(status != "settled" for status in rows.values())
    if unsettled:
        problems.append(f"{unsettled} provider calls not settled")
    print(
        f"\nchecked: {len(ids)} tasks {statuses}; {len(rows)} provider calls in the ledger, "
        f"{len(answered)} answered by the sandbox, {unsettled} unsettled"
    )
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="sandbox latency, s")
    parser.add_argument("--slots", type=int, default=200, help="worker threads")
    parser.add_argument("--busy", type=int, default=200, help="tasks in flight, phase two")
    parser.add_argument("--solo-tasks", type=int, default=50, help="measured at 1 in flight")
    parser.add_argument("--busy-tasks", type=int, default=400, help="measured at --busy")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=32)
    parser.add_argument("--pool", type=int, default=20, help="PgBouncer server connections")
    args = parser.parse_args()

    import django

    django.setup()
    from databases import database_recreate
    from django.conf import settings
    from django.db import connections

    database = database_recreate()
    broker = settings.CELERY_BROKER_URL
    live.broker_flush(broker)
    work = Path(tempfile.mkdtemp(prefix="roster-task-path-"))
    children: list[live.Child] = []
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
        worker = live.worker_start(work, env, concurrency=args.slots, name="worker")
        children.append(worker)
        print(
            f"database {database} through PgBouncer ({args.pool} server connections); broker "
            f"{broker}; sandbox latency {args.latency * 1000:.0f} ms; web: gunicorn "
            f"{args.web_workers} x {args.web_threads} threads; one worker, {args.slots} "
            f"threads; {os.cpu_count()} CPUs; load average {live.loadavg()}",
            flush=True,
        )
        me = os.getpid()
        meters = {
            "worker": worker.pids,
            "web": web.pids,
            "postgres": lambda: live.postgres_backend_pids(database),
            "pgbouncer": bouncer.pids,
            "sandbox": sandbox.pids,
            "generator": lambda: [me],
        }
        results, everything = [], []
        for phase in (
            Phase(in_flight=1, warmup=10, measured=args.solo_tasks),
            Phase(in_flight=args.busy, warmup=args.busy, measured=args.busy_tasks),
        ):
            result, tasks = phase_run(
                phase, web_url=web_url, token=token, dsn=direct, latency=args.latency,
                meters=meters,
            )  # fmt: skip
            phase_print(result)
            results.append(result)
            everything += tasks
        problems = ledger_check(everything, work / "sandbox-requests.jsonl")
        errors = live.log_errors(children)
        if any(errors.values()):
            problems.append(f"errors in the logs: {errors}")
    finally:
        for child in reversed(children):
            child.stop()
    if problems:
        print(f"load average at the end {live.loadavg()}; the processes' logs are in {work}")
    else:
        print(f"load average at the end {live.loadavg()}")
        shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    for result in results:
        p50 = live.percentile(result.overhead_ms, 50)
        p99 = live.percentile(result.overhead_ms, 99)
        worker_cpu = result.cpu_ms_per_task["worker"]
        result_print(
            benchmark=f"task path overhead (API submit to done, less the provider's "
            f"{args.latency * 1000:.0f} ms), {result.phase.in_flight} in flight",
            target=f"p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms",
            figure=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({result.ended / result.seconds:.0f} "
            f"tasks/s; worker CPU {worker_cpu:.1f} ms a task; machine "
            f"{100 * result.machine_busy:.0f} % busy)",
            passed=p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS and not problems,
            note="; ".join(problems),
            sandbox_rps=result.ended / result.seconds,
        )


if __name__ == "__main__":
    main()
