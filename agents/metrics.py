"""Prometheus metrics for `GET /metrics`, read from the database at each scrape.

Why from the database and not from counters kept in memory: the figures are made by
many processes (worker processes, each with many threads, the web process serving the
OpenAI-compatible endpoint, on one host or several), and the ledger already records
every provider call with its latency, tokens and cost. Reading it at scrape time gives
the same answer whichever web process Prometheus reaches, survives restarts, and needs no
shared directory (prometheus-client's multiprocess mode only aggregates processes of one
host that share a folder, which the worker and web containers of docker-compose do not).
Counters stay monotonic because the ledger is append-only and a call's latency, cost and
tokens are written once, when it settles.

Cost of a scrape: tasks by status reads the status index; spend, calls and tokens read
the daily rollups (O(days x roles x models) rows, as the reports do); the latency
histogram is one aggregate over the ledger's provider calls (a scan of the ledger, about
a second per few million calls on PostgreSQL): scrape every 30 s or slower on a big ledger.

Money is Decimal in the database and in the sums; it becomes a float only here, at the
edge, because the Prometheus text format has no other number type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Count, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from agents.models import WorkerHeartbeat
from billing.models import Usage, UsageRollup
from billing.money import money_sum
from office.models import Role, Task, TaskStatus

# Upper bounds of the latency histogram's buckets, in milliseconds (what the ledger
# stores): from a cached answer to the longest provider timeout.
LATENCY_BUCKETS_MS = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000)

TOKEN_KINDS = ("input", "output", "cached_input", "cache_write", "reasoning")


def _usd(amount: Decimal | None) -> float:
    """Decimal dollars as the float Prometheus needs (the edge; never used for sums)."""
    return float(amount or Decimal("0"))


class OfficeCollector(Collector):
    """Yields the office's metric families, each read from the database when collected."""

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield self._workers()
        yield from self._spend()
        yield self._latency()

    def describe(self) -> Iterable[Metric]:
        # Nothing up front: describing would run the queries at registration.
        return []

    def _tasks(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "roster_tasks",
            "Tasks by role and status, read from the database at scrape time.",
            labels=["role", "status"],
        )
        counts = {
            (row["role"], row["status"]): row["count"]
            for row in Task.objects.order_by().values("role", "status").annotate(count=Count("pk"))
        }
        # Every status of every role, zeros included, so that a series does not vanish
        # when the last task leaves a status (alerts on `queued` need the zero).
        for role_id, slug in Role.objects.order_by("slug").values_list("pk", "slug"):
            for status in TaskStatus.values:
                tasks.add_metric([slug, status], counts.get((role_id, status), 0))
        yield tasks

    def _workers(self) -> Metric:
        stale_before = timezone.now() - timedelta(seconds=settings.ROSTER_WORKER_STALE_AFTER)
        alive = WorkerHeartbeat.objects.filter(last_seen__gte=stale_before).count()
        return GaugeMetricFamily(
            "roster_workers_alive",
            "Worker processes whose heartbeat is newer than ROSTER_WORKER_STALE_AFTER.",
            value=alive,
        )

    def _spend(self) -> Iterator[Metric]:
        labels = ["role", "model", "provider"]
        spend = CounterMetricFamily(
            "roster_spend_usd",
            "Cost of provider calls in USD, from the ledger's daily rollups.",
            labels=labels,
        )
        calls = CounterMetricFamily(
            "roster_provider_calls",
            "Provider calls that were billed (settled, or estimated after a worker died).",
            labels=labels,
        )
        failed = CounterMetricFamily(
            "roster_provider_failed_calls",
            "Provider calls that failed (nothing billed).",
            labels=labels,
        )
        tokens = CounterMetricFamily(
            "roster_tokens",
            "Tokens of billed provider calls by kind (input includes cached input).",
            labels=[*labels, "kind"],
        )
        helper_ops = CounterMetricFamily(
            "roster_helper_operations",
            "Local helper operations (free) by role.",
            labels=["role"],
        )
        helper_savings = CounterMetricFamily(
            "roster_helper_savings_usd",
            "What the local helper's operations would have cost on the role's paid model.",
            labels=["role"],
        )
        rows = _rollup_sums()
        helper: dict[str, tuple[int, Decimal]] = {}
        for row in rows:
            role = row["role__slug"]
            if row["helper_calls"]:
                count, saved = helper.get(role, (0, Decimal("0")))
                helper[role] = (
                    count + row["helper_calls"],
                    money_sum((saved, row["helper_savings"])),
                )
            # The helper's own rollup rows carry no provider calls.
            if not (row["calls"] or row["failed_calls"]):
                continue
            values = [role, row["model__slug"], row["provider"]]
            spend.add_metric(values, _usd(row["cost"]))
            calls.add_metric(values, row["calls"])
            failed.add_metric(values, row["failed_calls"])
            for kind in TOKEN_KINDS:
                tokens.add_metric([*values, kind], row[f"{kind}_tokens"])
        for role, (count, saved) in sorted(helper.items()):
            helper_ops.add_metric([role], count)
            helper_savings.add_metric([role], _usd(saved))
        yield from (spend, calls, failed, tokens, helper_ops, helper_savings)

    def _latency(self) -> Metric:
        latency = HistogramMetricFamily(
            "roster_provider_call_duration_seconds",
            "Duration of provider calls (request sent to answer read), from the ledger.",
            labels=["provider", "outcome"],
        )
        buckets = {
            f"le_{bound}": Count("pk", filter=Q(latency_ms__lte=bound))
            for bound in LATENCY_BUCKETS_MS
        }
        rows = (
            Usage.objects.filter(helper_operation="", latency_ms__isnull=False)
            .order_by()
            .values("provider", "status")
            .annotate(count=Count("pk"), total_ms=Sum("latency_ms"), **buckets)
            .order_by("provider", "status")
        )
        for row in rows:
            cumulative = [
                (floatToGoString(bound / 1000), row[f"le_{bound}"]) for bound in LATENCY_BUCKETS_MS
            ]
            latency.add_metric(
                [row["provider"], row["status"]],
                buckets=[*cumulative, ("+Inf", row["count"])],
                sum_value=(row["total_ms"] or 0) / 1000,
            )
        return latency


ROLLUP_KEYS = ("role__slug", "model__slug", "provider")
ROLLUP_COUNTS = (
    "calls",
    "failed_calls",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "helper_calls",
)
ROLLUP_MONEY = ("cost", "helper_savings")


def _rollup_sums() -> list[dict[str, Any]]:
    """Every rollup summed per role, model and provider (all days, all people), ordered.

    Counts are summed in SQL. Money too on PostgreSQL (`numeric` sums are exact); SQLite
    keeps money as text (office.fields), so there it is summed here with billing.money.
    """
    rollups = UsageRollup.objects.order_by()
    if connections[rollups.db].vendor == "postgresql":
        sums = {name: Sum(name) for name in (*ROLLUP_COUNTS, *ROLLUP_MONEY)}
        rows = list(rollups.values(*ROLLUP_KEYS).annotate(**sums).order_by(*ROLLUP_KEYS))
        # SUM(bigint) is numeric in PostgreSQL: counts back to int.
        return [{**row, **{name: int(row[name]) for name in ROLLUP_COUNTS}} for row in rows]
    grouped: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rollups.values(*ROLLUP_KEYS, *ROLLUP_COUNTS, *ROLLUP_MONEY).iterator():
        key = tuple(row[name] for name in ROLLUP_KEYS)
        acc = grouped.get(key)
        if acc is None:
            grouped[key] = row
            continue
        for name in ROLLUP_COUNTS:
            acc[name] += row[name]
        for name in ROLLUP_MONEY:
            acc[name] = money_sum((acc[name], row[name]))
    return [grouped[key] for key in sorted(grouped)]


_registry = CollectorRegistry(auto_describe=False)
_registry.register(OfficeCollector())


def metrics_text() -> bytes:
    """The metrics in Prometheus' text exposition format (read from the database now)."""
    return generate_latest(_registry)
