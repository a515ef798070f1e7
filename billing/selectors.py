"""Billing reads: the catalog and its prices in force."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils import timezone

from billing.models import (
    Budget,
    BudgetPeriod,
    BudgetScope,
    CatalogModel,
    CatalogSource,
    ModelPrice,
    Usage,
    UsageRollup,
)
from billing.money import EXACT, ZERO, money_sum
from billing.periods import local_day, period_days
from billing.reports import Spend, spend_breakdown
from office.models import Role, Task


def price_current(*, model: CatalogModel, at: datetime | None = None) -> ModelPrice | None:
    """Return the price version of `model` in force at `at` (default: now), or None.

    The version in force is the one with the latest `valid_from` not after `at`, whatever
    its source (a sync or an admin override); two versions from the same instant are
    told apart by the higher id, i.e. the one written last.
    """
    at = at or timezone.now()
    return (
        ModelPrice.objects.filter(model=model, valid_from__lte=at)
        .order_by("-valid_from", "-id")
        .first()
    )


def catalog_models_available() -> QuerySet[CatalogModel]:
    """Return the models a role can use, ordered by slug: those in the latest catalog
    sync and those added by hand, but not the local helper's own ledger record."""
    return (
        CatalogModel.objects.filter(is_available=True)
        .exclude(source=CatalogSource.LOCAL_HELPER)
        .order_by("slug")
    )


def usage_for_task(*, task: Task) -> QuerySet[Usage]:
    """Every ledger row of one task (failed calls too, and the local helper's
    operations), oldest first."""
    return (
        Usage.objects.filter(task=task)
        .select_related("model", "shadow_model")
        .order_by("created_at", "id")
    )


@dataclass(frozen=True)
class BudgetState:
    """A budget in its current period: the limit, what is spent and reserved by calls in
    flight, and what remains before the limit (never below zero)."""

    budget: Budget
    start: date
    end: date
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal


def budget_states(
    *, role_ids: Collection[int] | None = None, at: datetime | None = None
) -> list[BudgetState]:
    """Active budgets that apply to the roles `role_ids` (None: every role), in their
    periods containing `at` (default now): the office's and those roles' own, office
    first, then by name.

    A budget no call has reserved against yet this period has no counter row; its spent
    is then read from the rollups, as billing.budgets does when it creates the row.
    """
    day = local_day(at or timezone.now())
    budgets = Budget.objects.filter(is_active=True).select_related("role")
    if role_ids is not None:
        budgets = budgets.filter(Q(scope=BudgetScope.OFFICE) | Q(role_id__in=list(role_ids)))
    states = []
    for budget in budgets.order_by("scope", "name", "pk"):
        start, end = period_days(period=budget.period, day=day)
        period = BudgetPeriod.objects.filter(budget=budget, start=start).first()
        if period is not None:
            spent, reserved = period.spent, period.reserved
        else:
            rollups = UsageRollup.objects.filter(day__gte=start, day__lt=end)
            if budget.role_id is not None:
                rollups = rollups.filter(role_id=budget.role_id)
            spent, reserved = money_sum(rollups.values_list("cost", flat=True)), ZERO
        left = EXACT.subtract(EXACT.subtract(budget.limit, spent), reserved)
        states.append(
            BudgetState(
                budget=budget,
                start=start,
                end=end,
                limit=budget.limit,
                spent=spent,
                reserved=reserved,
                remaining=max(ZERO, left),
            )
        )
    return states


@dataclass(frozen=True)
class RoleSpend:
    """One role's spend over a range of local days (zero when it made no call)."""

    role: Role
    spend: Spend


def role_spend(*, roles: Sequence[Role], start: date, end: date) -> list[RoleSpend]:
    """The spend of each of `roles` on local days [start, end), in the order given, from
    the rollups (billing.reports)."""
    by_slug = {row.key: row.spend for row in spend_breakdown(start=start, end=end, by="role")}
    return [RoleSpend(role=role, spend=by_slug.get(role.slug, Spend())) for role in roles]
