"""Billing reads: the catalog and its prices in force."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import QuerySet
from django.utils import timezone

from billing.models import (
    CatalogModel,
    CatalogSource,
    ModelPrice,
    Usage,
)
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
class RoleSpend:
    """One role's spend over a range of local days (zero when it made no call)."""

    role: Role
    spend: Spend


def role_spend(*, roles: Sequence[Role], start: date, end: date) -> list[RoleSpend]:
    """The spend of each of `roles` on local days [start, end), in the order given, from
    the rollups (billing.reports)."""
    by_slug = {row.key: row.spend for row in spend_breakdown(start=start, end=end, by="role")}
    return [RoleSpend(role=role, spend=by_slug.get(role.slug, Spend())) for role in roles]
