"""How long the monthly spend report takes with 10M calls in the ledger.

PostgreSQL only (DATABASE_URL; SQLite is refused): it drops and recreates the database
named there and fills one month with calls. Rows are generated inside PostgreSQL
(INSERT ... SELECT over generate_series), not shipped through a Python client. With an
empty ledger and a superuser (the usual case), one statement (month_fill) computes the
calls once and writes from that one stream the ledger rows, their tasks with totals and
the rollups, with the ledger's and the tasks' secondary indexes dropped meanwhile and
built afterwards: that is where the time went before (ten million inserts into each of
ten indexes, then the ledger read back twice and sorted for the rollups). A day of the
rollups is checked against billing.rollups.rollups_rebuild, the reference.

The report is timed as the page runs it (billing.reports.spend_report: totals, four
breakdowns, the daily trend, top tasks, cost per task, savings) and as a full page
render; p50 and p95 over --runs runs, after --warmup untimed ones. The report reads the
rollups and the task table, never the ledger, so the ledger's size does not enter it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_bench_report \\
    .venv/bin/python bench/report_bench.py [--sizes 10000000] [--runs 10] [--reuse]

With --reuse (make bench) a database that an earlier run filled and checked with this same
generator, schema and sizes (it leaves a mark in the database's comment) is kept, and
only the timings run: the fill takes minutes and is not what is measured.

The data helpers (ledger_fill, rollups_fill, office_create) are also used by
tests/billing/test_report_million.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    # Standalone: make the project importable and configure Django before the imports
    # below touch models.
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "office.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    import django

    django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, models, transaction  # noqa: E402

from billing.models import CatalogModel, ModelPrice, Usage, UsageRollup  # noqa: E402
from billing.periods import local_midnight, office_tz  # noqa: E402
from office.models import Role, Task  # noqa: E402

# (input, output) USD per token, catalog-like; the first has more digits than a float.
PRICES = [
    (Decimal("0.00000008333333333333334"), Decimal("0.00000033333333333333336")),
    (Decimal("0.000000435"), Decimal("0.00000087")),
    (Decimal("0.000003"), Decimal("0.000015")),
    (Decimal("0.0000001"), Decimal("0.0000004")),
    (Decimal("0.00000125"), Decimal("0.00001")),
    (Decimal("0.000000075"), Decimal("0.0000003")),
    (Decimal("0.0000002"), Decimal("0.0000006")),
    (Decimal("0.0000008"), Decimal("0.000004")),
    (Decimal("0.00000015"), Decimal("0.0000006")),
    (Decimal("0.0000025"), Decimal("0.00001")),
    (Decimal("0.00000005"), Decimal("0.0000002")),
    (Decimal("0.0000004"), Decimal("0.0000016")),
]
PROVIDERS = ["openrouter", "openai", "anthropic", "google"]
MODELS_PER_ROLE = 3
TARGET_MS = 100.0  # the billing issue's target for the monthly report
TARGET_CALLS = 10_000_000  # at this ledger size


@dataclass(frozen=True)
class Office:
    """The fixed rows calls refer to: roles, people (None: no one), models and prices."""

    role_ids: list[int]
    person_ids: list[int | None]
    model_ids: list[int]
    price_ids: list[int]
    providers: list[str]
    prices: list[tuple[Decimal, Decimal]]


def office_create(*, roles: int, people: int, models: int, prefix: str = "bench") -> Office:
    """Roles, people and priced catalog models for generated calls."""
    role_rows = Role.objects.bulk_create(
        [Role(slug=f"{prefix}-role-{n}", name=f"Role {n}") for n in range(roles)]
    )
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        [user_model(username=f"{prefix}-person-{n}") for n in range(people)]
    )
    prices = [PRICES[n % len(PRICES)] for n in range(models)]
    catalog = CatalogModel.objects.bulk_create(
        [CatalogModel(slug=f"{prefix}/model-{n}", name=f"Model {n}") for n in range(models)]
    )
    versions = ModelPrice.objects.bulk_create(
        [
            ModelPrice(model=model, source="sync", prompt=p_in, completion=p_out)
            for model, (p_in, p_out) in zip(catalog, prices, strict=True)
        ]
    )
    return Office(
        role_ids=[r.pk for r in role_rows],
        person_ids=[*(u.pk for u in users), None],
        model_ids=[m.pk for m in catalog],
        price_ids=[p.pk for p in versions],
        providers=[PROVIDERS[n % len(PROVIDERS)] for n in range(models)],
        prices=prices,
    )


def _insert_sql(
    model: type[models.Model], given: dict[str, str]
) -> tuple[str, str, dict[str, Any]]:
    """Columns, SELECT expressions and parameters for an INSERT ... SELECT into `model`.

    `given` maps field attnames to SQL expressions (named parameters allowed); every
    other NOT NULL column gets its Python default as a parameter, so a field added later
    does not break the bench.
    """
    columns, expressions, params = [], [], {}
    for field in model._meta.concrete_fields:
        if field.attname in given:
            expressions.append(given[field.attname])
        elif field.primary_key or field.null:
            continue
        else:
            name = f"default_{len(params)}"
            expressions.append(f"%({name})s")
            params[name] = field.get_db_prep_save(field.get_default(), connection)
        columns.append(connection.ops.quote_name(field.column))
    return ", ".join(columns), ", ".join(expressions), params


def calls_generate(
    *,
    office: Office,
    tasks: int,
    calls_per_task: int,
    since: datetime,
    until: datetime,
    first_task_id: int,
    first_call: int,
    seed: float = 0.42,
) -> int:
    """Ledger rows for the tasks made by tasks_generate, `calls_per_task` each.

    Each call follows its task by a few seconds; about 4% failed, 2% pending, 2%
    estimated after a worker died, 1% unpriced (cost unknown), 20% with a provider-
    reported cost, 30% with cached input. Costs are tokens x unit prices in `numeric`:
    exact. Returns the number of rows written.
    """
    rows = tasks * calls_per_task
    billed = "c.status IN ('settled', 'estimated')"
    priced = f"({billed} AND c.basis <> 'unpriced')"
    cost = "(c.inp * c.p_in + c.out * c.p_out)"
    columns, expressions, params = _insert_sql(
        Usage,
        {
            "call_id": "lpad(to_hex(%(first_call)s + c.i), 32, '0')",
            "task_id": "%(first_task)s + c.n",
            "role_id": "(%(roles)s::bigint[])[1 + mod(c.n, %(n_roles)s)]",
            "person_id": "(%(people)s::bigint[])[1 + mod(c.n, %(n_people)s)]",
            "model_id": "(%(models)s::bigint[])[1 + c.m]",
            "price_id": "(%(prices)s::bigint[])[1 + c.m]",
            "provider": "(%(providers)s::text[])[1 + c.m]",
            "status": "c.status",
            "basis": "c.basis",
            "input_tokens": f"CASE WHEN {billed} THEN c.inp ELSE 0 END",
            "output_tokens": f"CASE WHEN {billed} THEN c.out ELSE 0 END",
            "cached_input_tokens": f"CASE WHEN {billed} AND c.r_cache < 0.3 "
            "THEN floor(c.r_cache / 0.3 * c.inp / 2)::bigint ELSE 0 END",
            "cache_write_tokens": f"CASE WHEN {billed} THEN floor(c.r_out * 50)::int ELSE 0 END",
            "reasoning_tokens": f"CASE WHEN {billed} THEN floor(c.r_in * 500)::int ELSE 0 END",
            "price_prompt": f"CASE WHEN {priced} THEN c.p_in END",
            "price_completion": f"CASE WHEN {priced} THEN c.p_out END",
            "price_input_cache_read": f"CASE WHEN {priced} THEN c.p_in / 10 END",
            "cost": f"CASE WHEN {priced} THEN {cost} ELSE 0 END",
            "reported_cost": f"CASE WHEN {priced} AND c.basis = 'reported' "
            f"THEN round({cost}, 8) END",
            "budget_periods": "'[]'",
            "created_at": "c.created_at",
            "settled_at": "CASE WHEN c.status <> 'pending' THEN c.created_at END",
        },
    )
    calls = f"""
        SELECT s.*,
               CASE WHEN s.r_status < 0.04 THEN 'failed' WHEN s.r_status < 0.06 THEN 'pending'
                    WHEN s.r_status < 0.08 THEN 'estimated' ELSE 'settled' END AS status,
               CASE WHEN s.r_status < 0.04 THEN 'computed' WHEN s.r_status < 0.06 THEN ''
                    WHEN s.r_status < 0.08 THEN 'estimated' WHEN s.r_status < 0.09 THEN 'unpriced'
                    WHEN s.r_status < 0.30 THEN 'reported' ELSE 'computed' END AS basis,
               1 + floor(s.r_in * 30000)::bigint AS inp,
               floor(s.r_out * 3000)::bigint AS out,
               (%(p_in)s::numeric[])[1 + s.m] AS p_in,
               (%(p_out)s::numeric[])[1 + s.m] AS p_out,
               %(since)s + (%(until)s - %(since)s) * ((s.n + 0.5) / %(tasks)s)::float8
                   + mod(s.i, %(per_task)s) * interval '15 seconds'
                   + s.r_in * interval '10 seconds' AS created_at
          FROM (
              SELECT i, i / %(per_task)s AS n,
                     mod(mod(i / %(per_task)s, %(n_roles)s) * {MODELS_PER_ROLE}
                         + floor(random() * {MODELS_PER_ROLE})::int, %(n_models)s) AS m,
                     random() AS r_status, random() AS r_in, random() AS r_out,
                     random() AS r_cache
                FROM generate_series(0, %(rows)s - 1) AS i
          ) AS s
    """
    sql = f"INSERT INTO {Usage._meta.db_table} ({columns}) SELECT {expressions} FROM ({calls}) AS c"
    params |= {
        "first_call": first_call,
        "first_task": first_task_id,
        "roles": office.role_ids,
        "n_roles": len(office.role_ids),
        "people": office.person_ids,
        "n_people": len(office.person_ids),
        "models": office.model_ids,
        "n_models": len(office.model_ids),
        "prices": office.price_ids,
        "providers": office.providers,
        "p_in": [p for p, _ in office.prices],
        "p_out": [p for _, p in office.prices],
        "since": since,
        "until": until,
        "tasks": tasks,
        "per_task": calls_per_task,
        "rows": rows,
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [seed])
        cursor.execute(sql, params)
        return cursor.rowcount


def tasks_generate(
    *, office: Office, count: int, since: datetime, until: datetime, first_id: int
) -> None:
    """`count` done tasks with ids first_id.., created evenly over [since, until), with
    the totals billing keeps on a task: the sums of its billed calls (generate those
    first, with calls_generate).

    Task n belongs to role n mod roles and person n mod (people + 1), as its calls do.
    """
    given = {
        "id": "%(first)s + n",
        "role_id": "(%(roles)s::bigint[])[1 + mod(n, %(n_roles)s)]",
        "created_by_id": "(%(people)s::bigint[])[1 + mod(n, %(n_people)s)]",
        "prompt": "'Bench task ' || n",
        "status": "'done'",
        "created_at": "%(since)s + (%(until)s - %(since)s) * ((n + 0.5) / %(count)s)::float8",
        "cost": "COALESCE(s.cost, 0)",
        "input_tokens": "COALESCE(s.inp, 0)",
        "output_tokens": "COALESCE(s.out, 0)",
        "provider_calls": "COALESCE(s.calls, 0)",
    }
    columns, expressions, params = _insert_sql(Task, given)
    sql = f"""
        INSERT INTO {Task._meta.db_table} ({columns})
        SELECT {expressions}
          FROM generate_series(0, %(count)s - 1) AS n
          LEFT JOIN (
              SELECT task_id, SUM(cost) AS cost, SUM(input_tokens) AS inp,
                     SUM(output_tokens) AS out, COUNT(*) AS calls
                FROM {Usage._meta.db_table}
               WHERE status IN ('settled', 'estimated')
                 AND task_id BETWEEN %(first)s AND %(first)s + %(count)s - 1
               GROUP BY task_id
          ) AS s ON s.task_id = %(first)s + n
    """
    params |= {
        "first": first_id,
        "roles": office.role_ids,
        "n_roles": len(office.role_ids),
        "people": office.person_ids,
        "n_people": len(office.person_ids),
        "since": since,
        "until": until,
        "count": count,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Ids were given explicitly: move the identity sequence past them.
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{Task._meta.db_table}', 'id'), "
            f"(SELECT MAX(id) FROM {Task._meta.db_table}))"
        )


@dataclass(frozen=True)
class Fill:
    calls: int
    first_task_id: int
    tasks: int


def ledger_fill(
    *,
    office: Office,
    calls: int,
    calls_per_task: int,
    since: datetime,
    until: datetime,
    seed: float,
    check_foreign_keys: bool = True,
) -> Fill:
    """`calls` ledger rows and their tasks (with totals), created over [since, until).

    In one transaction: calls first, then tasks summed from them; the foreign keys are
    deferred to the commit. `check_foreign_keys=False` skips those checks (superuser
    only): the generated ids are consistent by construction, and checking five keys per
    row would triple the fill time of the bench.
    """
    tasks = calls // calls_per_task
    first_task = (Task.objects.aggregate(m=models.Max("id"))["m"] or 0) + 1
    first_call = Usage.objects.count()
    with transaction.atomic(), connection.cursor() as cursor:
        # More memory for the big aggregates of the fill only (SET LOCAL: this
        # transaction); the report is timed with the server's own settings.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        if not check_foreign_keys:
            cursor.execute("SET LOCAL session_replication_role = replica")
        written = calls_generate(
            office=office,
            tasks=tasks,
            calls_per_task=calls_per_task,
            since=since,
            until=until,
            first_task_id=first_task,
            first_call=first_call,
            seed=seed,
        )
        tasks_generate(office=office, count=tasks, since=since, until=until, first_id=first_task)
    return Fill(calls=written, first_task_id=first_task, tasks=tasks)


# A float in [0, 1) from a 52-bit slice of a hash: the call's status, which must be a
# function of the call's number (not of random()) so that whether a call is its task's
# first to close can be computed from its number, without sorting the ledger.
_HASH_UNIT = (
    "((hashint8extended({i}, %(hash_seed)s) & 4503599627370495)::float8 / 4503599627370496.0)"
)


def month_fill(
    *,
    office: Office,
    calls: int,
    calls_per_task: int,
    since: datetime,
    until: datetime,
    seed: float,
) -> Fill:
    """`calls` ledger rows, their tasks (with totals) and the rollups of every day they
    touch, in one statement over one generated stream, into an empty ledger.

    The same office, mix and arithmetic as ledger_fill + rollups_fill, but the ledger is
    not read back: the stream is computed once (a materialized CTE) and feeds the three
    inserts, and a call's being its task's first to close comes from its number instead
    of a window over ten million rows. The caller checks the rollups against
    billing.rollups.rollups_rebuild. Foreign keys are not checked (superuser only), as
    with ledger_fill(check_foreign_keys=False).
    """
    tasks = calls // calls_per_task
    status_of = _HASH_UNIT.format(i="i")

    def pending(offset: int) -> str:
        unit = _HASH_UNIT.format(i=f"(i - {offset})")
        return f"({unit} >= 0.04 AND {unit} < 0.06)"

    # A call is its task's first to close when it is not pending and every earlier call
    # of its task is (settled_at follows the call's place in its task).
    earlier_all_pending = " ".join(
        f"WHEN {place} THEN "
        + (" AND ".join(pending(k) for k in range(1, place + 1)) if place else "TRUE")
        for place in range(calls_per_task)
    )
    billed = "status IN ('settled', 'estimated')"
    stream = f"""
        WITH generated AS (
            SELECT i, i / %(per_task)s AS n,
                   mod(mod(i / %(per_task)s, %(n_roles)s) * {MODELS_PER_ROLE}
                       + floor(random() * {MODELS_PER_ROLE})::int, %(n_models)s) AS m,
                   {status_of} AS r_status,
                   CASE mod(i, %(per_task)s) {earlier_all_pending} END AS earlier_all_pending,
                   random() AS r_in, random() AS r_out, random() AS r_cache
              FROM generate_series(0, %(rows)s - 1) AS i
        ), classified AS (
            SELECT g.*,
                   CASE WHEN r_status < 0.04 THEN 'failed' WHEN r_status < 0.06 THEN 'pending'
                        WHEN r_status < 0.08 THEN 'estimated' ELSE 'settled' END AS status,
                   CASE WHEN r_status < 0.04 THEN 'computed' WHEN r_status < 0.06 THEN ''
                        WHEN r_status < 0.08 THEN 'estimated' WHEN r_status < 0.09 THEN 'unpriced'
                        WHEN r_status < 0.30 THEN 'reported' ELSE 'computed' END AS basis,
                   1 + floor(r_in * 30000)::bigint AS inp,
                   floor(r_out * 3000)::bigint AS out,
                   (%(p_in)s::numeric[])[1 + m] AS p_in,
                   (%(p_out)s::numeric[])[1 + m] AS p_out,
                   %(since)s + (%(until)s - %(since)s) * ((n + 0.5) / %(tasks)s)::float8
                       + mod(i, %(per_task)s) * interval '15 seconds'
                       + r_in * interval '10 seconds' AS created_at
              FROM generated AS g
        ), calls AS MATERIALIZED (
            SELECT i, n, status, basis, created_at,
                   status <> 'pending' AND earlier_all_pending AS first_of_task,
                   (%(roles)s::bigint[])[1 + mod(n, %(n_roles)s)] AS role_id,
                   (%(people)s::bigint[])[1 + mod(n, %(n_people)s)] AS person_id,
                   (%(models)s::bigint[])[1 + m] AS model_id,
                   (%(prices)s::bigint[])[1 + m] AS price_id,
                   (%(providers)s::text[])[1 + m] AS provider,
                   CASE WHEN {billed} THEN inp ELSE 0 END AS input_tokens,
                   CASE WHEN {billed} THEN out ELSE 0 END AS output_tokens,
                   CASE WHEN {billed} AND r_cache < 0.3
                        THEN floor(r_cache / 0.3 * inp / 2)::bigint ELSE 0 END
                       AS cached_input_tokens,
                   CASE WHEN {billed} THEN floor(r_out * 50)::int ELSE 0 END
                       AS cache_write_tokens,
                   CASE WHEN {billed} THEN floor(r_in * 500)::int ELSE 0 END AS reasoning_tokens,
                   CASE WHEN {billed} AND basis <> 'unpriced' THEN p_in END AS price_prompt,
                   CASE WHEN {billed} AND basis <> 'unpriced' THEN p_out END AS price_completion,
                   CASE WHEN {billed} AND basis <> 'unpriced' THEN p_in / 10 END
                       AS price_input_cache_read,
                   CASE WHEN {billed} AND basis <> 'unpriced' THEN inp * p_in + out * p_out
                        ELSE 0 END AS cost
              FROM classified
        )"""
    usage_columns, usage_values, params = _insert_sql(
        Usage,
        {
            "call_id": "lpad(to_hex(%(first_call)s + i), 32, '0')",
            "task_id": "%(first_task)s + n",
            **{
                name: name
                for name in (
                    "role_id", "person_id", "model_id", "price_id", "provider", "status",
                    "basis", "input_tokens", "output_tokens", "cached_input_tokens",
                    "cache_write_tokens", "reasoning_tokens", "price_prompt",
                    "price_completion", "price_input_cache_read", "cost", "created_at",
                )
            },
            "reported_cost": "CASE WHEN basis = 'reported' AND price_prompt IS NOT NULL "
            "THEN round(cost, 8) END",
            "budget_periods": "'[]'",
            "settled_at": "CASE WHEN status <> 'pending' THEN created_at END",
        },
    )  # fmt: skip
    task_columns, task_values, task_params = _insert_sql(
        Task,
        {
            "id": "%(first_task)s + n",
            "role_id": "(%(roles)s::bigint[])[1 + mod(n, %(n_roles)s)]",
            "created_by_id": "(%(people)s::bigint[])[1 + mod(n, %(n_people)s)]",
            "prompt": "'Bench task ' || n",
            "status": "'done'",
            "created_at": "%(since)s + (%(until)s - %(since)s) * ((n + 0.5) / %(tasks)s)::float8",
            "cost": "cost",
            "input_tokens": "input_tokens",
            "output_tokens": "output_tokens",
            "provider_calls": "provider_calls",
        },
    )
    rollup_columns, rollup_values, rollup_params = _insert_sql(
        UsageRollup,
        {
            "day": "(created_at AT TIME ZONE %(tz)s)::date",
            "role_id": "role_id",
            "model_id": "model_id",
            "provider": "provider",
            "person_id": "person_id",
            "tasks": "COUNT(*) FILTER (WHERE first_of_task)",
            "calls": "COUNT(*) FILTER (WHERE status <> 'failed')",
            "failed_calls": "COUNT(*) FILTER (WHERE status = 'failed')",
            "estimated_calls": "COUNT(*) FILTER (WHERE status <> 'failed' AND basis = 'estimated')",
            "unpriced_calls": "COUNT(*) FILTER (WHERE status <> 'failed' AND basis = 'unpriced')",
            "input_tokens": "SUM(input_tokens)",
            "output_tokens": "SUM(output_tokens)",
            "cached_input_tokens": "SUM(cached_input_tokens)",
            "cache_write_tokens": "SUM(cache_write_tokens)",
            "reasoning_tokens": "SUM(reasoning_tokens)",
            "cost": "SUM(cost)",
            "reported_cost": "COALESCE(SUM(round(cost, 8)) FILTER (WHERE basis = 'reported' "
            "AND price_prompt IS NOT NULL), 0)",
            "cache_savings": "COALESCE(SUM(cached_input_tokens "
            "* (price_prompt - price_input_cache_read)) FILTER (WHERE cached_input_tokens > 0 "
            "AND price_input_cache_read < price_prompt), 0)",
        },
    )
    # The three lists of defaults have their own parameter names; keep them apart.
    params |= {f"t_{k}": v for k, v in task_params.items()}
    params |= {f"r_{k}": v for k, v in rollup_params.items()}
    for name in task_params:
        task_values = task_values.replace(f"%({name})s", f"%(t_{name})s")
    for name in rollup_params:
        rollup_values = rollup_values.replace(f"%({name})s", f"%(r_{name})s")
    sql = f"""{stream}, ledger AS (
            INSERT INTO {Usage._meta.db_table} ({usage_columns}) SELECT {usage_values} FROM calls
        ), tasks AS (
            INSERT INTO {Task._meta.db_table} ({task_columns})
            SELECT {task_values}
              FROM (SELECT n,
                           SUM(cost) AS cost,
                           SUM(input_tokens) AS input_tokens,
                           SUM(output_tokens) AS output_tokens,
                           COUNT(*) FILTER (WHERE {billed}) AS provider_calls
                      FROM calls GROUP BY n) AS per_task
        )
        INSERT INTO {UsageRollup._meta.db_table} ({rollup_columns})
        SELECT {rollup_values} FROM calls WHERE status <> 'pending' GROUP BY 1, 2, 3, 4, 5
    """
    first_task = (Task.objects.aggregate(m=models.Max("id"))["m"] or 0) + 1
    params |= {
        "first_call": Usage.objects.count(),
        "first_task": first_task,
        "hash_seed": int(seed * 2**31),
        "roles": office.role_ids,
        "n_roles": len(office.role_ids),
        "people": office.person_ids,
        "n_people": len(office.person_ids),
        "models": office.model_ids,
        "n_models": len(office.model_ids),
        "prices": office.price_ids,
        "providers": office.providers,
        "p_in": [p for p, _ in office.prices],
        "p_out": [p for _, p in office.prices],
        "since": since,
        "until": until,
        "tasks": tasks,
        "per_task": calls_per_task,
        "rows": tasks * calls_per_task,
        "tz": str(office_tz()),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '512MB'")
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SELECT setseed(%s)", [seed])
        cursor.execute(sql, params)
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{Task._meta.db_table}', 'id'), "
            f"(SELECT MAX(id) FROM {Task._meta.db_table}))"
        )
    return Fill(calls=tasks * calls_per_task, first_task_id=first_task, tasks=tasks)


def rollups_fill(*, start: date, end: date) -> int:
    """Replace the rollups of local days [start, end) with sums over the ledger, in SQL.

    The same figures as billing.rollups (delta_of) computes per call, grouped by the
    call's local day in TIME_ZONE; `numeric` sums are exact. Returns the rollup rows.
    """
    tz = office_tz()
    billed = "status <> 'failed'"
    with transaction.atomic(), connection.cursor() as cursor:
        # Memory for the ranking's sort and the join (this transaction only).
        cursor.execute("SET LOCAL work_mem = '512MB'")
        cursor.execute("DELETE FROM billing_usagerollup WHERE day >= %s AND day < %s", [start, end])
        cursor.execute(
            f"""
            INSERT INTO {UsageRollup._meta.db_table} (
                day, role_id, model_id, provider, person_id, tasks, calls, failed_calls,
                estimated_calls, unpriced_calls, input_tokens, output_tokens,
                cached_input_tokens, cache_write_tokens, reasoning_tokens, cost,
                reported_cost, cache_savings
            )
            SELECT (created_at AT TIME ZONE %(tz)s)::date, role_id, model_id, provider,
                   person_id,
                   COUNT(*) FILTER (WHERE first_of_task),
                   COUNT(*) FILTER (WHERE {billed}),
                   COUNT(*) FILTER (WHERE status = 'failed'),
                   COUNT(*) FILTER (WHERE {billed} AND basis = 'estimated'),
                   COUNT(*) FILTER (WHERE {billed} AND basis = 'unpriced'),
                   COALESCE(SUM(input_tokens) FILTER (WHERE {billed}), 0),
                   COALESCE(SUM(output_tokens) FILTER (WHERE {billed}), 0),
                   COALESCE(SUM(cached_input_tokens) FILTER (WHERE {billed}), 0),
                   COALESCE(SUM(cache_write_tokens + cache_write_1h_tokens)
                            FILTER (WHERE {billed}), 0),
                   COALESCE(SUM(reasoning_tokens) FILTER (WHERE {billed}), 0),
                   COALESCE(SUM(cost) FILTER (WHERE {billed}), 0),
                   COALESCE(SUM(reported_cost) FILTER (WHERE {billed}), 0),
                   COALESCE(SUM(cached_input_tokens * (price_prompt - price_input_cache_read))
                            FILTER (WHERE {billed} AND cached_input_tokens > 0
                                    AND price_input_cache_read < price_prompt), 0)
              FROM (
                    -- A task counts once, in the rollup of its first call to close
                    -- (settlement order), as billing.rollups does. The ranking sorts
                    -- three narrow columns, not whole rows: at ten million rows that is
                    -- the difference between a sort in memory and gigabytes on disk.
                    SELECT usage.*, firsts.id IS NOT NULL AS first_of_task
                      FROM billing_usage AS usage
                      LEFT JOIN (
                            SELECT id
                              FROM (SELECT id, row_number() OVER (
                                               PARTITION BY task_id ORDER BY settled_at, id
                                           ) AS n
                                      FROM billing_usage
                                     WHERE status <> 'pending') AS ranked
                             WHERE n = 1
                           ) AS firsts ON firsts.id = usage.id
                     WHERE usage.status <> 'pending'
                   ) AS closed
             WHERE created_at >= %(start)s AND created_at < %(end)s
             GROUP BY 1, 2, 3, 4, 5
            """,
            {
                "tz": str(tz),
                "start": local_midnight(start, tz),
                "end": local_midnight(end, tz),
            },
        )
        return cursor.rowcount


# --- Timing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    name: str
    p50_ms: float
    p95_ms: float


def timed(name: str, run: Callable[[], object], *, runs: int, warmup: int = 2) -> Timing:
    """p50 and p95 wall time of `run` over `runs` runs, after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        run()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return Timing(name=name, p50_ms=statistics.median(samples), p95_ms=p95)


def report_timings(*, start: date, end: date, runs: int, warmup: int = 2) -> list[Timing]:
    """The report as the page computes it, its parts, and the whole page."""
    from django.contrib.auth.models import Permission
    from django.test import Client

    from billing import reports

    manager, _ = get_user_model().objects.get_or_create(username="bench-manager")
    manager.user_permissions.add(
        Permission.objects.get(content_type__app_label="billing", codename="view_reports")
    )
    client = Client(HTTP_HOST="localhost")  # one of the default ALLOWED_HOSTS
    client.force_login(manager)
    month = f"{start:%Y-%m}"

    by_role = reports.spend_breakdown(start=start, end=end, by="role")

    def selectors() -> None:
        reports.spend_report(start=start, end=end)

    def rollups() -> None:
        reports._grouped(start=start, end=end, dimensions=reports.DIMENSIONS)

    def top_tasks() -> None:
        reports.tasks_top(start=start, end=end)

    def tasks_per_role() -> None:
        reports.role_cost_per_task(start=start, end=end, by_role=by_role)

    def page() -> None:
        response = client.get("/billing/reports/", {"month": month})
        assert response.status_code == 200, response.status_code

    return [
        timed("spend_report (all the page's selectors)", selectors, runs=runs, warmup=warmup),
        timed("  of which rollups, all dimensions", rollups, runs=runs, warmup=warmup),
        timed("  of which tasks_top", top_tasks, runs=runs, warmup=warmup),
        timed("  of which tasks per role", tasks_per_role, runs=runs, warmup=warmup),
        timed("the page (GET, rendered)", page, runs=runs, warmup=warmup),
    ]


# --- The run -------------------------------------------------------------------------------


def rollups_agree_with_rebuild(*, day: date) -> bool:
    """Whether the SQL rollups of one day equal billing.rollups' own recomputation."""
    from billing.rollups import rollups_rebuild

    check = rollups_rebuild(start=day, end=day + timedelta(days=1), dry_run=True)
    for line in check.differences[:5]:
        print(f"    difference: {line}")
    return not check.differences


def is_superuser() -> bool:
    """Whether the database user may skip foreign-key triggers (session_replication_role)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        return bool(cursor.fetchone()[0])


def measure(*, calls: int, start: date, end: date, args: argparse.Namespace, agrees: bool) -> None:
    """Time the report, print the timings and the RESULT line."""
    from results import result_print

    timings = report_timings(start=start, end=end, runs=args.runs, warmup=args.warmup)
    for timing in timings:
        print(f"  {timing.name:<42} p50 {timing.p50_ms:7.1f} ms   p95 {timing.p95_ms:7.1f} ms")
    selectors, page = timings[0], timings[-1]
    at_target = calls >= TARGET_CALLS
    result_print(
        benchmark=f"monthly report, {calls / 1e6:g}M ledger rows (PostgreSQL)",
        target=f"<= {TARGET_MS:g} ms at 10M rows (p95 of the page's selectors)"
        if at_target
        else "-",
        figure=f"p50 {selectors.p50_ms:.1f} ms, p95 {selectors.p95_ms:.1f} ms "
        f"(rendered page p50 {page.p50_ms:.1f} ms, p95 {page.p95_ms:.1f} ms; "
        f"{args.runs} runs)",
        passed=(selectors.p95_ms <= TARGET_MS and agrees) if at_target else None,
        note="" if agrees else "the generated rollups differ from rollups_rebuild",
    )


def fill_fingerprint(args: argparse.Namespace) -> str:
    """What the filled database depends on: this file (the generator), every migration
    (the schema) and the sizes asked for."""
    import hashlib

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for migration in sorted(ROOT.glob("*/migrations/*.py")):
        digest.update(migration.name.encode() + migration.read_bytes())
    digest.update(f"{args.sizes}/{args.calls_per_task}/{args.month}".encode())
    return digest.hexdigest()[:16]


def filled_mark(name: str) -> str:
    """The mark a complete, checked fill left on the database (its comment), or ""."""
    from databases import admin_connect

    with admin_connect() as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [name],
        ).fetchone()
    return (row[0] or "") if row else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per figure")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    parser.add_argument("--calls-per-task", type=int, default=5)
    parser.add_argument("--month", default="2026-03", help="the month filled and reported")
    parser.add_argument(
        "--sizes",
        default="10000000",
        help="ledger sizes to reach, in order, comma-separated (e.g. 1000000,10000000)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database when an earlier run filled and checked it with this same "
        "generator, schema and sizes (it is marked so); only the timings run",
    )
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("report_bench needs PostgreSQL: set DATABASE_URL=postgres://... (not SQLite).")

    from databases import database_recreate, secondary_indexes_deferred

    from billing.reports import month_days

    began = time.perf_counter()
    start, end = month_days(month=args.month)
    tz = office_tz()
    since, until = local_midnight(start, tz), local_midnight(end, tz)
    fingerprint = fill_fingerprint(args)
    mark = f"report_bench fill {fingerprint}"
    name = connection.settings_dict["NAME"]
    if args.reuse and filled_mark(name).startswith(mark):
        calls = int(args.sizes.split(",")[-1])
        print(
            f"database {name}: reusing the month an earlier run filled and checked with this "
            f"same generator, schema and sizes ({filled_mark(name)}); fill skipped (--reuse)",
            flush=True,
        )
        measure(calls=calls, start=start, end=end, args=args, agrees=True)
        print(f"\ntotal {time.perf_counter() - began:.0f} s")
        return
    name = database_recreate()
    office = office_create(roles=8, people=40, models=12)
    superuser = is_superuser()
    print(
        f"database {name}, month {args.month} ({tz}): 8 roles x {MODELS_PER_ROLE} of 12 "
        f"models, 4 providers, 40 people + no one, {args.calls_per_task} calls per task"
        + ("" if superuser else "; not a superuser, so foreign keys are checked (slower)"),
        flush=True,
    )
    calls = tasks = 0
    checked = True
    for size in (int(text) for text in args.sizes.split(",")):
        phase = time.perf_counter()
        # One pass (month_fill) fills an empty ledger; a later size adds to it the
        # general way, which rolls up by re-reading the ledger.
        single_pass = calls == 0 and superuser
        with (
            secondary_indexes_deferred(Usage._meta.db_table),
            secondary_indexes_deferred(Task._meta.db_table),
        ):
            if single_pass:
                fill = month_fill(
                    office=office,
                    calls=size,
                    calls_per_task=args.calls_per_task,
                    since=since,
                    until=until,
                    seed=1 / (2 + calls // 1_000_000),
                )
            else:
                fill = ledger_fill(
                    office=office,
                    calls=size - calls,
                    calls_per_task=args.calls_per_task,
                    since=since,
                    until=until,
                    seed=1 / (2 + calls // 1_000_000),
                    check_foreign_keys=not superuser,
                )
            filled = time.perf_counter()
        indexed = time.perf_counter()
        calls, tasks = calls + fill.calls, tasks + fill.tasks
        rollups = UsageRollup.objects.count()
        if not single_pass:
            # Calls of the month's last tasks spill past its end: that day is rolled up too.
            rollups = rollups_fill(start=start, end=end + timedelta(days=1))
        with connection.cursor() as cursor:
            # Fresh statistics and visibility maps, as autovacuum would leave them.
            cursor.execute("VACUUM (ANALYZE) office_task, billing_usagerollup")
        prepared = time.perf_counter()
        checked_day = start + timedelta(days=14)
        agrees = rollups_agree_with_rebuild(day=checked_day)
        how = "calls, tasks and rollups in one pass" if single_pass else "calls and tasks"
        print(
            f"\n{calls:,} calls, {tasks:,} tasks in the month, {rollups:,} rollup rows. "
            f"Fill {filled - phase:.0f} s ({how}), indexes {indexed - filled:.0f} s, "
            f"rollups and vacuum {prepared - indexed:.0f} s, "
            f"check {time.perf_counter() - prepared:.0f} s; "
            f"rollups of {checked_day} equal rollups_rebuild: {'yes' if agrees else 'NO'}",
            flush=True,
        )
        measure(calls=calls, start=start, end=end, args=args, agrees=agrees)
        checked &= agrees
    if checked:
        from databases import admin_connect

        with admin_connect() as conn:
            conn.execute(
                f'COMMENT ON DATABASE "{name}" IS '
                f"'{mark}, {calls:,} calls, checked {time.strftime('%Y-%m-%d %H:%M')}'"
            )
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
