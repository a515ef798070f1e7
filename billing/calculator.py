"""The cost calculator: what each role would cost per month on a model of your choice.

A row is a role, a model and a workload (tasks per month, tokens per task, the share of
input tokens read from the provider's cache). Its monthly cost is

    tasks/month x (uncached input x input price
                   + cached input x cache-read price (else the input price)
                   + output x output price)

computed exactly in `billing.money.EXACT`. This is a planning estimate, not a bill: it
leaves out per-request, image and web-search prices, reasoning-token prices, cache
writes, batch discounts and long-context tiers, which depend on calls the calculator
does not model (the ledger prices real calls with all of them).

Workload defaults come from history: the role's tokens in the last `HISTORY_DAYS` local
days (rollups) divided by the role's tasks created in those days.

Roles are bound to models by `agents.RoleBinding`. `billing` does not import `agents`
(DESIGN.md: dependencies point one way), so bindings are read and written through the
`Role.binding` reverse accessor.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Count, OuterRef, Subquery, Sum
from django.utils import timezone

from billing.models import CatalogModel, CatalogSource, ModelPrice, UsageRollup
from billing.money import EXACT, ZERO, money_sum
from billing.periods import local_day, local_midnight, office_tz
from billing.pricing import UnitPrices
from office.fields import decimal_text
from office.models import Role, Task

HISTORY_DAYS = 30
# Used when a role has no usable history (no tasks, or no tokens billed for them).
DEFAULT_TASKS_PER_MONTH = 100
DEFAULT_INPUT_TOKENS = 1_000
DEFAULT_OUTPUT_TOKENS = 500
DEFAULT_CACHE_HIT_PERCENT = Decimal("0")

# Bounds on what a person may type. They keep every product within EXACT's 60 digits
# (price digits + 9 + 9 + 5), so a computation can never trap as inexact.
MAX_TASKS_PER_MONTH = 1_000_000_000
MAX_TOKENS_PER_TASK = 100_000_000
PERCENT_PLACES = Decimal("0.01")

HUNDRED = Decimal(100)
MILLION = Decimal(1_000_000)


class CalculatorError(Exception):
    """A choice the calculator cannot apply; `messages` says what is wrong, per role."""

    def __init__(self, messages: Sequence[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = list(messages)


# --- The catalog, as the calculator offers it -------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """A catalog model the calculator can price: its unit prices in force (USD/token)."""

    slug: str
    name: str
    context_length: int | None
    prompt: Decimal
    completion: Decimal
    input_cache_read: Decimal | None
    # Free local models have no catalog price; an admin marked them free (cost zero).
    is_free: bool = False

    @property
    def prices(self) -> UnitPrices:
        return UnitPrices(
            prompt=self.prompt,
            completion=self.completion,
            input_cache_read=self.input_cache_read,
        )

    @property
    def prompt_per_million(self) -> Decimal:
        return EXACT.multiply(self.prompt, MILLION)

    @property
    def completion_per_million(self) -> Decimal:
        return EXACT.multiply(self.completion, MILLION)

    @property
    def cache_read_per_million(self) -> Decimal | None:
        if self.input_cache_read is None:
            return None
        return EXACT.multiply(self.input_cache_read, MILLION)

    @property
    def prompt_text(self) -> str:
        return per_million_text(self.prompt_per_million)

    @property
    def completion_text(self) -> str:
        return per_million_text(self.completion_per_million)

    @property
    def cache_read_text(self) -> str:
        """The cache-read price per 1M tokens, or "" when the model has none."""
        per_million = self.cache_read_per_million
        return per_million_text(per_million) if per_million is not None else ""

    @property
    def label(self) -> str:
        """One line for a picker: name, input/output USD per 1M tokens, context length."""
        context = f"{self.context_length:,} context" if self.context_length else "context ?"
        return (
            f"{self.name} · in {self.prompt_text} / out {self.completion_text} per 1M · {context}"
        )


def per_million_text(amount: Decimal) -> str:
    """A price per million tokens for people: "$0.30", or every digit when there are more
    than cents ("$0.083333333333333334"), never rounded."""
    if amount == amount.quantize(Decimal("0.01")):
        return f"${amount.quantize(Decimal('0.01')):,}"
    return f"${decimal_text(amount)}"


def calculator_model_choices(*, at: datetime | None = None) -> dict[str, ModelChoice]:
    """The models a role can be bound to from the calculator, by slug, ordered by slug.

    Only available models with an input and output price in force at `at` (default now),
    plus unpriced models an admin marked free (priced at zero); never the local helper's
    own record. Two queries, whatever the size of the catalog.
    """
    at = at or timezone.now()
    in_force = (
        ModelPrice.objects.filter(model=OuterRef("pk"), valid_from__lte=at)
        .order_by("-valid_from", "-id")
        .values("pk")[:1]
    )
    models = list(
        CatalogModel.objects.filter(is_available=True)
        # The local helper's record is free but no model a role can be bound to.
        .exclude(source=CatalogSource.LOCAL_HELPER)
        .annotate(price_id=Subquery(in_force))
        .order_by("slug")
    )
    prices = ModelPrice.objects.in_bulk([m.price_id for m in models if m.price_id is not None])
    choices: dict[str, ModelChoice] = {}
    for model in models:
        price = prices.get(model.price_id)
        unit = price.unit_prices() if price is not None else UnitPrices()
        choice = model_choice(model=model, prices=unit)
        if choice is not None:
            choices[model.slug] = choice
    return choices


def model_choice(*, model: CatalogModel, prices: UnitPrices) -> ModelChoice | None:
    """The calculator's view of `model` at `prices`; None when it cannot be priced."""
    if prices.is_priced:
        assert prices.prompt is not None
        assert prices.completion is not None
        return ModelChoice(
            slug=model.slug,
            name=model.name,
            context_length=model.context_length,
            prompt=prices.prompt,
            completion=prices.completion,
            input_cache_read=prices.input_cache_read,
        )
    if model.free_when_unpriced:
        return ModelChoice(
            slug=model.slug,
            name=model.name,
            context_length=model.context_length,
            prompt=ZERO,
            completion=ZERO,
            input_cache_read=None,
            is_free=True,
        )
    return None


# --- Roles and their history ------------------------------------------------------------


def calculator_roles() -> list[Role]:
    """Active roles by slug, with their binding and bound model loaded (or no binding)."""
    return list(
        Role.objects.filter(is_active=True).select_related("binding__model").order_by("slug")
    )


def role_bound_model_slug(role: Role) -> str | None:
    """The catalog slug the role is bound to now, or None when it has no binding."""
    binding = getattr(role, "binding", None)  # a missing reverse one-to-one raises
    return binding.model.slug if binding is not None else None


@dataclass(frozen=True)
class RoleWorkload:
    """A role's workload defaults: measured over the history window, or the defaults."""

    tasks_per_month: int
    input_tokens_per_task: int
    output_tokens_per_task: int
    cache_hit_percent: Decimal
    from_history: bool
    # What was measured, to show where the defaults come from.
    history_tasks: int = 0
    history_input_tokens: int = 0
    history_output_tokens: int = 0
    history_cached_input_tokens: int = 0


DEFAULT_WORKLOAD = RoleWorkload(
    tasks_per_month=DEFAULT_TASKS_PER_MONTH,
    input_tokens_per_task=DEFAULT_INPUT_TOKENS,
    output_tokens_per_task=DEFAULT_OUTPUT_TOKENS,
    cache_hit_percent=DEFAULT_CACHE_HIT_PERCENT,
    from_history=False,
)


def history_window(*, now: datetime) -> tuple[date, date]:
    """The last HISTORY_DAYS local days up to and including today: (first, last)."""
    today = local_day(now)
    return today - timedelta(days=HISTORY_DAYS - 1), today


def calculator_workloads(
    *, roles: Iterable[Role], now: datetime | None = None
) -> dict[int, RoleWorkload]:
    """Each role's workload defaults, by role id, from the last HISTORY_DAYS local days.

    Tokens come from the rollups (whatever model served the role); tasks are the role's
    tasks created in the same days, so retries and escalations count in the tokens per
    task, as they count in the bill. Averages are rounded half up to whole tokens and the
    cache hit ratio to 0.01 %. A role with no tasks or no tokens in the window gets the
    defaults (DEFAULT_WORKLOAD); one with tasks but no tokens keeps its task count.
    """
    role_ids = [role.pk for role in roles]
    first, last = history_window(now=now or timezone.now())
    tz = office_tz()
    tokens = {
        row["role_id"]: row
        for row in UsageRollup.objects.filter(role_id__in=role_ids, day__gte=first, day__lte=last)
        .order_by()
        .values("role_id")
        .annotate(
            input=Sum("input_tokens"),
            output=Sum("output_tokens"),
            cached=Sum("cached_input_tokens"),
        )
    }
    tasks = dict(
        Task.objects.filter(
            role_id__in=role_ids,
            created_at__gte=local_midnight(first, tz),
            created_at__lt=local_midnight(last + timedelta(days=1), tz),
        )
        .order_by()
        .values("role_id")
        .annotate(n=Count("id"))
        .values_list("role_id", "n")
    )
    workloads: dict[int, RoleWorkload] = {}
    for role_id in role_ids:
        task_count = tasks.get(role_id, 0)
        row = tokens.get(role_id) or {}
        input_tokens = row.get("input") or 0
        output_tokens = row.get("output") or 0
        cached = row.get("cached") or 0
        if task_count == 0 or input_tokens + output_tokens == 0:
            # Tasks without tokens (all failed, or still queued) still say how many
            # tasks a month the role gets.
            workloads[role_id] = replace(
                DEFAULT_WORKLOAD,
                tasks_per_month=task_count or DEFAULT_TASKS_PER_MONTH,
                history_tasks=task_count,
            )
            continue
        workloads[role_id] = RoleWorkload(
            tasks_per_month=task_count,
            input_tokens_per_task=_average(input_tokens, task_count),
            output_tokens_per_task=_average(output_tokens, task_count),
            cache_hit_percent=(
                (Decimal(cached) * HUNDRED / Decimal(input_tokens)).quantize(
                    PERCENT_PLACES, rounding=ROUND_HALF_UP
                )
                if input_tokens
                else ZERO
            ),
            from_history=True,
            history_tasks=task_count,
            history_input_tokens=input_tokens,
            history_output_tokens=output_tokens,
            history_cached_input_tokens=cached,
        )
    return workloads


def _average(total: int, count: int) -> int:
    return int((Decimal(total) / Decimal(count)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- The arithmetic ---------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One row's validated inputs."""

    tasks_per_month: int
    input_tokens_per_task: int
    output_tokens_per_task: int
    cache_hit_percent: Decimal  # 0..100


@dataclass(frozen=True)
class CostEstimate:
    """Exact costs of one row, USD. Per task and per month; input split by cache."""

    uncached_input_per_task: Decimal
    cached_input_per_task: Decimal
    output_per_task: Decimal
    per_task: Decimal
    monthly: Decimal


def estimate_monthly_cost(*, workload: Workload, prices: UnitPrices) -> CostEstimate:
    """Price a workload exactly (see the module docstring for the formula).

    Cached tokens are `input x ratio` and may be fractional (the ratio is an average);
    they are priced as such rather than rounded, so the result is exact. Raises
    ValueError when the prices have no input or output price, the workload is out of
    bounds (a percentage outside 0..100, a negative count), or the result has more digits
    than EXACT holds (never for inputs within the MAX_* bounds and real prices).
    """
    if prices.prompt is None or prices.completion is None:
        raise ValueError("the model has no input/output price")
    if not ZERO <= workload.cache_hit_percent <= HUNDRED:
        raise ValueError("the cache hit ratio must be between 0 and 100 %")
    counts = (
        workload.tasks_per_month,
        workload.input_tokens_per_task,
        workload.output_tokens_per_task,
    )
    if min(counts) < 0:
        raise ValueError("tasks and token counts must be 0 or more")
    cache_read = prices.input_cache_read if prices.input_cache_read is not None else prices.prompt

    try:
        input_tokens = Decimal(workload.input_tokens_per_task)
        cached = EXACT.divide(EXACT.multiply(input_tokens, workload.cache_hit_percent), HUNDRED)
        uncached_cost = EXACT.multiply(EXACT.subtract(input_tokens, cached), prices.prompt)
        cached_cost = EXACT.multiply(cached, cache_read)
        output_cost = EXACT.multiply(Decimal(workload.output_tokens_per_task), prices.completion)
        per_task = money_sum([uncached_cost, cached_cost, output_cost])
        monthly = EXACT.multiply(per_task, Decimal(workload.tasks_per_month))
    except decimal.DecimalException:
        raise ValueError("the numbers are too large to compute exactly") from None
    return CostEstimate(
        uncached_input_per_task=uncached_cost,
        cached_input_per_task=cached_cost,
        output_per_task=output_cost,
        per_task=per_task,
        monthly=monthly,
    )


# --- Applying the choices ---------------------------------------------------------------


@dataclass(frozen=True)
class BindingChange:
    """One role moved from one model to another."""

    role_slug: str
    old_model: str
    new_model: str


def calculator_apply_models(
    *, models_by_role: Mapping[str, str], at: datetime | None = None
) -> list[BindingChange]:
    """Bind each role (by slug) to the model chosen for it (by catalog slug).

    Only roles whose model changes are written; the credential, max_tokens and the
    over-budget model are kept. The binding's `upstream_model` override is cleared on a
    change: it named the old model at its provider. Everything is validated first and
    written in one transaction, so a bad choice changes nothing.

    Returns the changes made, by role slug. Raises CalculatorError (one message per
    problem) for an unknown or inactive role, a role without a binding, or a model that
    is unknown, unavailable or unpriced.
    """
    choices = calculator_model_choices(at=at)
    problems: list[str] = []
    with transaction.atomic():
        roles = {
            role.slug: role
            for role in Role.objects.select_related("binding__model").filter(
                is_active=True, slug__in=list(models_by_role)
            )
        }
        planned: list[tuple[Role, CatalogModel]] = []
        wanted_models = CatalogModel.objects.in_bulk(
            [slug for slug in models_by_role.values() if slug in choices], field_name="slug"
        )
        for role_slug, model_slug in sorted(models_by_role.items()):
            role = roles.get(role_slug)
            if role is None:
                problems.append(f"{role_slug}: no such active role.")
                continue
            bound = role_bound_model_slug(role)
            if bound is None:
                problems.append(
                    f"{role_slug}: has no model binding yet (it needs a credential); "
                    "set one up in the admin first."
                )
                continue
            if model_slug not in choices:
                problems.append(
                    f"{role_slug}: {model_slug!r} is not an available, priced catalog model."
                )
                continue
            if model_slug != bound:
                planned.append((role, wanted_models[model_slug]))
        if problems:
            raise CalculatorError(problems)
        changes: list[BindingChange] = []
        for role, model in planned:
            binding = role.binding
            changes.append(
                BindingChange(
                    role_slug=role.slug, old_model=binding.model.slug, new_model=model.slug
                )
            )
            binding.model = model
            binding.upstream_model = ""
            binding.save(update_fields=["model", "upstream_model", "updated_at"])
    return changes
