"""Spend reports: reads over the rollups (and, for tasks, over the task totals).

Every selector takes a half-open range of local days, [start, end), in the office's time
zone (billing.periods). Spend comes from `UsageRollup`, never from the ledger, so a
month costs O(days x roles x models x providers x persons) rows however many calls it
made. The one exception is tasks (top tasks, tasks per role), which read `Task`: its
totals are kept by billing as calls settle.

Money is exact. On PostgreSQL the rollups are summed in SQL (`numeric` sums are exact).
On SQLite money is stored as text and an SQL SUM would go through floats, so there the
rows are fetched and summed in Python with billing.money; SQLite offices are small and
rollups keep the row count low.
"""

from __future__ import annotations

import decimal
import heapq
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import QuerySet, Sum

from billing.models import CatalogModel, UsageRollup
from billing.money import EXACT, ZERO
from billing.periods import local_midnight, office_tz
from office.fields import decimal_text
from office.models import Role, Task

Dimension = Literal["role", "model", "provider", "person", "day"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
# What the breakdown tables and `manage.py cost breakdown --by` offer; "day" is the trend.
BREAKDOWNS: tuple[Dimension, ...] = ("role", "model", "provider", "person")
# What the CSV export offers: the dimensions, and tasks (from task totals).
EXPORTS: tuple[str, ...] = (*DIMENSIONS, "task")

# The rollup column each dimension groups on.
_GROUP_COLUMNS: dict[Dimension, str] = {
    "role": "role_id",
    "model": "model_id",
    "provider": "provider",
    "person": "person_id",
    "day": "day",
}

TOP_TASKS = 10

# An average is a derived figure, not an amount anyone is billed: divide with 34
# significant digits (more than any display shows) instead of EXACT, which would trap
# the inexact quotient.
_AVERAGE = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)

_MONTH = re.compile(r"(\d{4})-(\d{2})")


# --- Report rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """Calls, tokens and money of a set of rollups.

    `calls` are billed calls (settled, or estimated after a worker died); `failed_calls`
    cost nothing. `unpriced_calls` are billed calls to a model without a price: their cost
    is unknown and is NOT in `cost` (it is not zero), so a page must say so.

    The `helper_*` figures are the local helper's operations, apart from the provider
    calls: their tokens are in neither `input_tokens` nor `output_tokens`, and
    `helper_savings` is what they would have cost on the role's paid model, except for
    the `helper_unpriced_calls` whose paid model had no price (unknown, not in the sum).

    Field order matters: counts first, then money (the aggregation builds rows in that
    order).
    """

    calls: int = 0
    failed_calls: int = 0
    estimated_calls: int = 0
    unpriced_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    helper_calls: int = 0
    helper_unpriced_calls: int = 0
    helper_input_tokens: int = 0
    helper_output_tokens: int = 0
    cost: Decimal = ZERO
    reported_cost: Decimal = ZERO
    cache_savings: Decimal = ZERO
    helper_savings: Decimal = ZERO

    @property
    def is_empty(self) -> bool:
        """True when no call at all (billed or failed) and no helper operation was made."""
        return self.calls == 0 and self.failed_calls == 0 and self.helper_calls == 0

    @property
    def cache_hit_ratio(self) -> Decimal | None:
        """Cached input tokens over input tokens (0 to 1), or None without input tokens."""
        if not self.input_tokens:
            return None
        return _AVERAGE.divide(Decimal(self.cached_input_tokens), Decimal(self.input_tokens))

    @property
    def helper_tokens(self) -> int:
        """Tokens the local helper read and wrote instead of a paid model."""
        return self.helper_input_tokens + self.helper_output_tokens

    @property
    def helper_token_share(self) -> Decimal | None:
        """The helper's tokens over all tokens, paid and helper (0 to 1), or None when
        there are none."""
        total = self.input_tokens + self.output_tokens + self.helper_tokens
        if not total:
            return None
        return _AVERAGE.divide(Decimal(self.helper_tokens), Decimal(total))

    def as_record(self) -> dict[str, int | str]:
        """The figures for CSV and JSON: counts as integers, money as exact decimal text,
        the cache hit ratio to six places ("" without input tokens)."""
        return {
            **{name: getattr(self, name) for name in COUNT_FIELDS},
            **{f"{name}_usd": decimal_text(getattr(self, name)) for name in MONEY_FIELDS},
            "cache_hit_ratio": ratio_text(self.cache_hit_ratio),
        }


COUNT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Spend) if f.type == "int")
MONEY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Spend) if f.type == "Decimal")
MEASURES: tuple[str, ...] = (*COUNT_FIELDS, *MONEY_FIELDS)
SPEND_COLUMNS: tuple[str, ...] = (
    *COUNT_FIELDS,
    *(f"{name}_usd" for name in MONEY_FIELDS),
    "cache_hit_ratio",
)
RATIO_PLACES = Decimal("0.000001")


def ratio_percent(ratio: Decimal | None) -> str:
    """A ratio for people: a percentage to one place ("16.7 %"), or "—" when there is
    none (nothing to divide by)."""
    if ratio is None:
        return "—"
    value = (ratio * 100).quantize(Decimal("0.1"), rounding=decimal.ROUND_HALF_UP)
    return f"{value} %"


def ratio_text(ratio: Decimal | None) -> str:
    """A ratio for CSV and JSON: six places, no trailing zeros ("0.166667", "0.5"), or ""
    when there is none. A derived figure: the counts beside it give it exactly."""
    if ratio is None:
        return ""
    return decimal_text(ratio.quantize(RATIO_PLACES, rounding=decimal.ROUND_HALF_UP))


@dataclass(frozen=True)
class BreakdownRow:
    """One role, model, provider, person or day of a breakdown.

    `key` is stable (role slug, model slug, provider kind, username, ISO date; "" for
    calls made for no one); `label` is for people.
    """

    key: str
    label: str
    spend: Spend

    def as_record(self, *, by: str) -> dict[str, int | str]:
        """A CSV/JSON record: the key under the dimension's name, its label, the figures."""
        return {by: self.key, "name": self.label, **self.spend.as_record()}


def breakdown_columns(*, by: str) -> list[str]:
    """The CSV header of a breakdown by `by` (the keys of BreakdownRow.as_record)."""
    return [by, "name", *SPEND_COLUMNS]


@dataclass(frozen=True)
class DailyPoint:
    """One local day of the trend (days without calls are there, with zero spend)."""

    day: date
    spend: Spend


@dataclass(frozen=True)
class TaskSpend:
    """A task created in the period, with its whole cost (later calls included)."""

    task_id: int
    title: str
    role_slug: str
    role_name: str
    person: str
    status: str
    created_at: datetime
    provider_calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal

    def as_record(self) -> dict[str, int | str]:
        """A CSV/JSON record, money as exact decimal text."""
        return {
            "task": self.task_id,
            "title": self.title,
            "role": self.role_slug,
            "person": self.person,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "provider_calls": self.provider_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": decimal_text(self.cost),
        }


TASK_COLUMNS: tuple[str, ...] = (
    "task",
    "title",
    "role",
    "person",
    "status",
    "created_at",
    "provider_calls",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)


@dataclass(frozen=True)
class RoleTaskCost:
    """What a task of one role cost on average: the role's spend in the period over the
    number of its tasks created in the period (None when it has no such task)."""

    role_slug: str
    role_name: str
    tasks: int
    cost: Decimal
    unpriced_calls: int
    cost_per_task: Decimal | None


@dataclass(frozen=True)
class Savings:
    """What the office did not pay: cache reads below the input price, and the overhead
    the local helper absorbed, priced at the roles' paid models.

    `local_helper_unpriced` counts helper operations whose paid model had no price: what
    they saved is unknown and not in `local_helper`.
    """

    cache: Decimal
    local_helper: Decimal
    local_helper_unpriced: int = 0

    @property
    def total(self) -> Decimal:
        return EXACT.add(self.cache, self.local_helper)


@dataclass(frozen=True)
class SpendReport:
    """Everything the monthly report page shows, for local days [start, end)."""

    start: date
    end: date
    totals: Spend
    by_role: list[BreakdownRow]
    by_model: list[BreakdownRow]
    by_provider: list[BreakdownRow]
    by_person: list[BreakdownRow]
    daily: list[DailyPoint]
    top_tasks: list[TaskSpend]
    role_task_costs: list[RoleTaskCost]
    savings: Savings

    @property
    def is_empty(self) -> bool:
        return self.totals.is_empty and not self.top_tasks


# --- Periods -------------------------------------------------------------------------------


def month_days(*, month: str) -> tuple[date, date]:
    """The first local day of a "YYYY-MM" month and the first day after it.

    Raises ValueError with a message fit for people ("2026-13": there is no month 13).
    """
    match = _MONTH.fullmatch(month.strip())
    if match is None:
        raise ValueError(f"Enter a month as YYYY-MM, e.g. 2026-06 (got {month[:20]!r}).")
    year, number = int(match[1]), int(match[2])
    if not 1 <= number <= 12:
        raise ValueError(f"There is no month {number:02d}: use 01 to 12.")
    # Bounded so that the months either side (the page links to them) exist too.
    if not 1900 <= year <= 9998:
        raise ValueError(f"The year {year} is out of range: use 1900 to 9998.")
    first = date(year, number, 1)
    return first, (first + timedelta(days=32)).replace(day=1)


# --- Selectors -----------------------------------------------------------------------------


def spend_totals(*, start: date, end: date) -> Spend:
    """Everything spent on local days [start, end): calls, tokens by kind, exact cost."""
    _check_range(start, end)
    return spend_sum(_grouped(start=start, end=end, dimensions=("role",))["role"].values())


def spend_breakdown(*, start: date, end: date, by: Dimension) -> list[BreakdownRow]:
    """Spend on local days [start, end) per role, model, provider, person or day.

    Only keys with calls appear. Days come in calendar order; the other dimensions most
    expensive first, then by key. Raises ValueError for an unknown dimension.
    """
    _check_range(start, end)
    if by not in DIMENSIONS:
        raise ValueError(f"Unknown breakdown {by!r}; expected one of {', '.join(DIMENSIONS)}.")
    groups = _grouped(start=start, end=end, dimensions=(by,))[by]
    return _breakdown_rows(by, groups)


def spend_daily(*, start: date, end: date) -> list[DailyPoint]:
    """One point per local day in [start, end), zero-filled, in calendar order."""
    _check_range(start, end)
    return _daily_points(start, end, _grouped(start=start, end=end, dimensions=("day",))["day"])


def tasks_top(*, start: date, end: date, limit: int = TOP_TASKS) -> list[TaskSpend]:
    """The `limit` most expensive tasks created on local days [start, end).

    Reads task totals (the whole cost of each task, calls after the period included).
    Ties go to the older task.
    """
    _check_range(start, end)
    tasks = _tasks_created(start, end)
    if connections[tasks.db].vendor == "postgresql":
        # Sort the narrow task rows alone, then load the few chosen with their role and
        # person: joining first would drag every task of the month through the sort.
        ids = list(tasks.order_by("-cost", "id").values_list("id", flat=True)[:limit])
        by_id = tasks.in_bulk(ids)
        chosen = [by_id[task_id] for task_id in ids]
    else:
        # Money is text on SQLite: ORDER BY would sort "9" after "10". Pick in Python.
        ids = [
            task_id
            for _, task_id in heapq.nlargest(
                limit,
                ((cost, -task_id) for task_id, cost in tasks.values_list("id", "cost")),
            )
        ]
        by_id = tasks.in_bulk([-task_id for task_id in ids])
        chosen = [by_id[-task_id] for task_id in ids]
    return [_task_spend(task) for task in chosen]


def tasks_all(*, start: date, end: date) -> Iterable[TaskSpend]:
    """Every task created on local days [start, end), most expensive first (for CSV)."""
    _check_range(start, end)
    tasks = _tasks_created(start, end)
    if connections[tasks.db].vendor == "postgresql":
        return (_task_spend(t) for t in tasks.order_by("-cost", "id").iterator(chunk_size=2000))
    ordered = sorted(tasks, key=lambda task: (-task.cost, task.pk))
    return (_task_spend(task) for task in ordered)


def role_cost_per_task(
    *, start: date, end: date, by_role: Sequence[BreakdownRow] | None = None
) -> list[RoleTaskCost]:
    """Per role: spend on local days [start, end) over the role's tasks that called a
    provider then (counted at their first closed call).

    `by_role` may pass the role breakdown already computed for the period. Roles with
    spend or tasks appear, most expensive first.
    """
    _check_range(start, end)
    if by_role is None:
        by_role = spend_breakdown(start=start, end=end, by="role")
    # Tasks are counted in the rollups (once, at their first closed call), so this reads
    # O(days x roles x models) rows rather than every task of the period.
    counts = {
        role_id: n
        for role_id, n in UsageRollup.objects.filter(day__gte=start, day__lt=end)
        .order_by()
        .values("role_id")
        .annotate(n=Sum("tasks"))
        .values_list("role_id", "n")
        if n
    }
    roles = Role.objects.in_bulk(list(counts))
    tasks_by_slug = {roles[role_id].slug: n for role_id, n in counts.items()}
    names = {role.slug: role.name for role in roles.values()}
    # Roles whose only rows are the local helper's made no provider call: not listed.
    spent = {row.key: row for row in by_role if row.spend.calls or row.spend.failed_calls}
    report = []
    for slug in spent.keys() | tasks_by_slug.keys():
        row = spent.get(slug)
        tasks = tasks_by_slug.get(slug, 0)
        cost = row.spend.cost if row else ZERO
        report.append(
            RoleTaskCost(
                role_slug=slug,
                role_name=row.label if row else names[slug],
                tasks=tasks,
                cost=cost,
                unpriced_calls=row.spend.unpriced_calls if row else 0,
                cost_per_task=_AVERAGE.divide(cost, Decimal(tasks)) if tasks else None,
            )
        )
    report.sort(key=lambda r: (-r.cost, -r.tasks, r.role_slug))
    return report


def local_helper_savings(*, start: date, end: date) -> Decimal:
    """What the local helper saved on local days [start, end), exactly: the shadow cost of
    its operations (their tokens at the role's paid model's prices then), from the
    rollups. Operations whose paid model had no price are not in it (see Savings)."""
    return spend_totals(start=start, end=end).helper_savings


def savings(*, start: date, end: date, totals: Spend | None = None) -> Savings:
    """Cache savings and local-helper savings on local days [start, end). `totals` may
    pass the period's totals already read."""
    totals = totals if totals is not None else spend_totals(start=start, end=end)
    return Savings(
        cache=totals.cache_savings,
        local_helper=totals.helper_savings,
        local_helper_unpriced=totals.helper_unpriced_calls,
    )


def spend_report(*, start: date, end: date, top: int = TOP_TASKS) -> SpendReport:
    """Everything the report page shows for local days [start, end).

    Reads the rollups once for all dimensions (one grouped query on PostgreSQL, one pass
    in Python elsewhere), then the tasks created in the period.
    """
    _check_range(start, end)
    groups = _grouped(start=start, end=end, dimensions=DIMENSIONS)
    by_role = _breakdown_rows("role", groups["role"])
    totals = spend_sum(row.spend for row in by_role)
    return SpendReport(
        start=start,
        end=end,
        totals=totals,
        by_role=by_role,
        by_model=_breakdown_rows("model", groups["model"]),
        by_provider=_breakdown_rows("provider", groups["provider"]),
        by_person=_breakdown_rows("person", groups["person"]),
        daily=_daily_points(start, end, groups["day"]),
        top_tasks=tasks_top(start=start, end=end, limit=top),
        role_task_costs=role_cost_per_task(start=start, end=end, by_role=by_role),
        savings=savings(start=start, end=end, totals=totals),
    )


# --- Aggregation ---------------------------------------------------------------------------


def _check_range(start: date, end: date) -> None:
    if start >= end:
        raise ValueError(f"The period is empty: {start} is not before {end}.")


def _grouped(
    *, start: date, end: date, dimensions: Sequence[Dimension]
) -> dict[Dimension, dict[Any, Spend]]:
    """Rollups of local days [start, end) summed per key, for each dimension asked."""
    rollups = UsageRollup.objects.filter(day__gte=start, day__lt=end).order_by()
    if connections[rollups.db].vendor == "postgresql":
        return _grouped_in_sql(start=start, end=end, dimensions=dimensions)
    return _grouped_in_python(rollups.values_list(*_columns(dimensions), *MEASURES), dimensions)


def _columns(dimensions: Sequence[Dimension]) -> list[str]:
    return [_GROUP_COLUMNS[d] for d in dimensions]


def _grouped_in_python(
    rows: Iterable[Sequence[Any]], dimensions: Sequence[Dimension]
) -> dict[Dimension, dict[Any, Spend]]:
    """Sum rollup rows (key columns, then MEASURES) per key of each dimension, exactly."""
    width = len(dimensions)
    counts = len(COUNT_FIELDS)
    sums: dict[Dimension, dict[Any, list[Any]]] = {d: {} for d in dimensions}
    for row in rows:
        measures = row[width:]
        for index, dimension in enumerate(dimensions):
            acc = sums[dimension].get(row[index])
            if acc is None:
                sums[dimension][row[index]] = list(measures)
                continue
            for i in range(counts):
                acc[i] += measures[i]
            for i in range(counts, len(measures)):
                acc[i] = EXACT.add(acc[i], measures[i])
    return {d: {key: Spend(*acc) for key, acc in sums[d].items()} for d in dimensions}


def _grouped_in_sql(
    *, start: date, end: date, dimensions: Sequence[Dimension]
) -> dict[Dimension, dict[Any, Spend]]:
    """PostgreSQL: every dimension in one scan of the period's rollups (GROUPING SETS).

    `numeric` sums are exact. GROUPING(col) is 0 in the rows grouped by that column,
    which tells a NULL person ("no one") from a row not grouped by person.
    """
    connection = connections[UsageRollup.objects.db]
    qn = connection.ops.quote_name
    columns = [qn(c) for c in _columns(dimensions)]
    flags = ", ".join(f"GROUPING({c})" for c in columns)
    sums = ", ".join(f"SUM({qn(m)})" for m in MEASURES)
    sets = ", ".join(f"({c})" for c in columns)
    table, day = qn(UsageRollup._meta.db_table), qn("day")
    # Identifiers come from the model's metadata; the only values are parameters.
    sql = f"""
        SELECT {flags}, {", ".join(columns)}, {sums} FROM {table}
        WHERE {day} >= %s AND {day} < %s GROUP BY GROUPING SETS ({sets})
    """  # noqa: S608
    width = len(dimensions)
    counts = len(COUNT_FIELDS)
    result: dict[Dimension, dict[Any, Spend]] = {d: {} for d in dimensions}
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, end])
        for row in cursor.fetchall():
            index = row[:width].index(0)
            measures = row[2 * width :]
            # SUM(bigint) is numeric in PostgreSQL: back to int for the counts.
            result[dimensions[index]][row[width + index]] = Spend(
                *(int(v) for v in measures[:counts]), *measures[counts:]
            )
    return result


def spend_sum(spends: Iterable[Spend]) -> Spend:
    """The exact sum of several Spend figures (e.g. a breakdown's rows: its total)."""
    acc: list[Any] = [0] * len(COUNT_FIELDS) + [ZERO] * len(MONEY_FIELDS)
    counts = len(COUNT_FIELDS)
    for spend in spends:
        for i, name in enumerate(MEASURES):
            value = getattr(spend, name)
            acc[i] = acc[i] + value if i < counts else EXACT.add(acc[i], value)
    return Spend(*acc)


def _breakdown_rows(by: Dimension, groups: dict[Any, Spend]) -> list[BreakdownRow]:
    labels = _labels(by, list(groups))
    rows = [BreakdownRow(key=labels[k][0], label=labels[k][1], spend=s) for k, s in groups.items()]
    if by == "day":
        rows.sort(key=lambda row: row.key)
    else:
        rows.sort(key=lambda row: (-row.spend.cost, -row.spend.calls, row.key))
    return rows


def _labels(by: Dimension, keys: list[Any]) -> dict[Any, tuple[str, str]]:
    """(key, label) for each group key: slugs and names instead of ids."""
    if by == "role":
        return {
            pk: (slug, name)
            for pk, slug, name in Role.objects.filter(pk__in=keys).values_list("pk", "slug", "name")
        }
    if by == "model":
        return {
            pk: (slug, name)
            for pk, slug, name in CatalogModel.objects.filter(pk__in=keys).values_list(
                "pk", "slug", "name"
            )
        }
    if by == "person":
        labels: dict[Any, tuple[str, str]] = {None: ("", "No one (system)")}
        for user in get_user_model().objects.filter(pk__in=[k for k in keys if k is not None]):
            labels[user.pk] = (user.get_username(), user.get_full_name() or user.get_username())
        return labels
    if by == "day":
        return {day: (day.isoformat(), f"{day:%a} {day.day} {day:%b}") for day in keys}
    return {key: (key, key) for key in keys}


def _daily_points(start: date, end: date, by_day: dict[Any, Spend]) -> list[DailyPoint]:
    empty = Spend()
    return [
        DailyPoint(
            day=start + timedelta(days=n), spend=by_day.get(start + timedelta(days=n), empty)
        )
        for n in range((end - start).days)
    ]


def _tasks_created(start: date, end: date) -> QuerySet[Task]:
    tz = office_tz()
    return Task.objects.select_related("role", "created_by").filter(
        created_at__gte=local_midnight(start, tz), created_at__lt=local_midnight(end, tz)
    )


def _task_spend(task: Task) -> TaskSpend:
    return TaskSpend(
        task_id=task.pk,
        title=task.title or task.prompt[:80],
        role_slug=task.role.slug,
        role_name=task.role.name,
        person=task.created_by.get_username() if task.created_by else "",
        status=task.status,
        created_at=task.created_at,
        provider_calls=task.provider_calls,
        input_tokens=task.input_tokens,
        output_tokens=task.output_tokens,
        cost=task.cost,
    )
