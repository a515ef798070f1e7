"""Ledger settle + rollup + budget update throughput, and budget-check latency at two
ledger sizes, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_bench \
        .venv/bin/python bench/settle_bench.py

Creates (and drops first) its own database named by DATABASE_URL. Targets: settle
throughput >= 2,000/s; budget check p99 <= 10 ms, independent of ledger size. After the
settlements, their rollups must equal a recomputation from the ledger (no difference)
and every call must be settled.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SETTLE_PER_S = 2000
TARGET_BUDGET_P99_MS = 10.0
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "office.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
os.environ.setdefault("ROSTER_FERNET_KEYS", "x4SWdW0nE9qRk1a5ub8UTSSTvPDkA7zdeXtXwEbx1Xs=")


def setup_django() -> None:
    import django

    django.setup()


def seed(roles: int) -> None:
    from django.contrib.auth import get_user_model

    from billing.models import Budget, CatalogModel, ModelPrice
    from office.models import Role

    user = get_user_model().objects.create(username="bench")
    model = CatalogModel.objects.create(slug="bench/model", name="Bench")
    ModelPrice.objects.create(
        model=model, source="sync", prompt=Decimal("0.000000435"),
        completion=Decimal("0.00000087"), input_cache_read=Decimal("0.00000001"),
    )  # fmt: skip
    Budget.objects.create(name="office", scope="office", period="month", limit=Decimal(10**9))
    for n in range(roles):
        role = Role.objects.create(slug=f"role-{n}", name=f"Role {n}")
        Budget.objects.create(
            name=f"role {n}", scope="role", role=role, period="day", limit=Decimal(10**9)
        )
    _ = user


def open_pending(count: int, *, timed: int, threads: int = 8) -> list[float]:
    """Open `count` pending calls through the real path: the first `timed` one after
    another, timing each call's budget check (reserve against every applicable budget,
    in its own committed transaction, as the worker does before a paid call); the rest
    from `threads` threads at once, untimed (the settlement only needs them to exist,
    and each opening waits for a durable commit). Returns the timed latencies, in
    seconds."""
    import threading

    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from billing.budgets import budget_reserve
    from billing.ledger import CallTarget, usage_open
    from billing.models import CatalogModel
    from office.models import Role, Task

    model = CatalogModel.objects.get()
    user = get_user_model().objects.get()
    roles = list(Role.objects.all())
    target = CallTarget(model=model, provider="openrouter", credential_id=None,
                        credential_label="bench", upstream_model=model.slug)  # fmt: skip
    tasks = Task.objects.bulk_create(
        [Task(role=roles[n % len(roles)], prompt="bench", created_by=user) for n in range(count)]
    )

    def open_call(task: Task) -> float:
        started = time.perf_counter()
        with transaction.atomic():
            budget_reserve(role=task.role, model=model, amount=Decimal("0.0004"),
                           at=timezone.now())  # fmt: skip
        checked = time.perf_counter() - started
        usage_open(task=task, target=target, attempt=1, estimated_input_tokens=300,
                   input_tokens_bound=1200, max_output_tokens=500)  # fmt: skip
        return checked

    latencies = [open_call(task) for task in tasks[:timed]]

    def open_share(share: list[Task]) -> None:
        for task in share:
            open_call(task)
        connection.close()

    rest = tasks[timed:]
    pool = [threading.Thread(target=open_share, args=(rest[n::threads],)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies


def settle_worker(
    ids: list[int], threads: int, ready: multiprocessing.Barrier, out: multiprocessing.Queue
) -> None:
    """One process settling its share on `threads` threads, as a threads-pool worker
    settles concurrent calls (each thread has its own connection, so commits group)."""
    setup_django()
    import threading

    from django.db import connection

    from billing.ledger import usage_settle
    from billing.models import Usage
    from billing.pricing import TokenUsage

    rows = list(Usage.objects.select_related("price").filter(pk__in=ids))
    usage = TokenUsage(input_tokens=300, output_tokens=120, cached_input_tokens=100)
    go = threading.Barrier(threads + 1)

    def settle(share: list[Usage]) -> None:
        connection.ensure_connection()
        go.wait()
        for row in share:
            usage_settle(usage=row, token_usage=usage, reported_cost=None)
        connection.close()

    pool = [threading.Thread(target=settle, args=(rows[n::threads],)) for n in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()
    go.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    out.put((len(rows), time.perf_counter() - started))


def settle_throughput(processes: int, threads: int) -> tuple[int, float]:
    from billing.models import Usage, UsageStatus

    ids = list(Usage.objects.filter(status=UsageStatus.PENDING).values_list("pk", flat=True))
    from django.db import connections

    connections.close_all()
    ready = multiprocessing.Barrier(processes + 1)
    out: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=settle_worker, args=(ids[n::processes], threads, ready, out))
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait()
    started = time.perf_counter()
    results = [out.get() for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return sum(count for count, _ in results), elapsed


def grow_ledger(rows: int) -> None:
    """Add settled history rows in SQL (fast), spread over the past year."""
    from django.db import connection

    from billing.models import Usage

    sample = Usage.objects.exclude(status="pending").first()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO billing_usage (call_id, task_id, role_id, model_id, price_id, person_id,
                provider, credential_label, upstream_model, attempt, status, basis,
                estimated_input_tokens, max_output_tokens, input_tokens, output_tokens,
                cached_input_tokens, cache_write_tokens, cache_write_1h_tokens,
                reasoning_tokens, images, web_searches, is_batch, cost, reserved,
                budget_periods, error, provider_request_id, created_at, settled_at)
            SELECT 'hist-' || g, %s, %s, %s, %s, %s, 'openrouter', 'bench', 'bench/model', 1,
                'settled', 'computed', 300, 500, 300, 120, 100, 0, 0, 0, 0, 0, false,
                0.0002415, 0, '[]'::jsonb, '', '', now() - (g %% 365) * interval '1 day',
                now()
            FROM generate_series(1, %s) AS g
            """,
            [sample.task_id, sample.role_id, sample.model_id, sample.price_id,
             sample.person_id, rows],
        )  # fmt: skip
        cursor.execute("ANALYZE billing_usage")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def report_latency(label: str, latencies: list[float]) -> float:
    warm = latencies[len(latencies) // 10 :]  # the first tenth is warm-up
    p50, p99 = percentile(warm, 50) * 1000, percentile(warm, 99) * 1000
    print(f"{label}: budget check p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(warm)} calls")
    return p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16, help="per process")
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument(
        "--timed-checks", type=int, default=5_000, help="budget checks timed, empty ledger"
    )
    parser.add_argument("--roles", type=int, default=5)
    args = parser.parse_args()

    setup_django()
    from databases import database_recreate
    from results import result_print

    began = time.perf_counter()
    database_recreate()
    seed(args.roles)
    p99_empty = report_latency(
        "ledger ~0 rows", open_pending(args.calls, timed=min(args.calls, args.timed_checks))
    )
    print(f"  ({time.perf_counter() - began:.0f} s so far)", flush=True)
    count, elapsed = settle_throughput(args.processes, args.threads)
    rate = count / elapsed
    print(
        f"settle + rollup + budget update: {count} calls in {elapsed:.2f} s with "
        f"{args.processes} processes x {args.threads} threads = {rate:,.0f}/s"
    )
    from billing.models import Usage, UsageStatus
    from billing.rollups import rollups_rebuild

    # The settlements' own rollups, checked against a recomputation from the ledger
    # before the history (inserted beside the ledger path, without rollups) arrives.
    check = rollups_rebuild(dry_run=True)
    unsettled = Usage.objects.exclude(status=UsageStatus.SETTLED).count()
    print(
        f"rollups of the {check.ledger_rows:,} settled calls against a rebuild: "
        f"{len(check.differences)} differences; {unsettled} calls not settled"
    )
    correct = not check.differences and unsettled == 0

    grown = time.perf_counter()
    from databases import secondary_indexes_deferred

    # One sorted build per index after the insert, not a million inserts into each.
    with secondary_indexes_deferred("billing_usage"):
        grow_ledger(args.history)
    print(
        f"ledger grown to {Usage.objects.count():,} rows in {time.perf_counter() - grown:.0f} s",
        flush=True,
    )
    p99_big = report_latency(f"ledger {args.history:,} rows", open_pending(2_000, timed=2_000))
    print(f"  ({time.perf_counter() - began:.0f} s in all)")

    result_print(
        benchmark="ledger settle + rollup + budget update (PostgreSQL)",
        target=f">= {TARGET_SETTLE_PER_S:,}/s",
        figure=f"{rate:,.0f}/s ({count:,} calls, {args.processes} processes x "
        f"{args.threads} threads)",
        passed=rate >= TARGET_SETTLE_PER_S and correct,
        note="" if correct else "the settlements' rollups or statuses are wrong",
    )
    result_print(
        benchmark="budget check p99, empty ledger / "
        f"{args.history / 1e6:g}M-row ledger (PostgreSQL)",
        target=f"<= {TARGET_BUDGET_P99_MS:g} ms, independent of ledger size",
        figure=f"p99 {p99_empty:.2f} ms / {p99_big:.2f} ms (each includes its commit)",
        passed=max(p99_empty, p99_big) <= TARGET_BUDGET_P99_MS,
    )


if __name__ == "__main__":
    main()
