"""Agents reads: which model and credential answer a role."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from django.utils import timezone

from agents.models import RoleBinding
from agents.runtime import price_in_force
from billing.models import ModelPrice
from office.errors import TaskRejected
from office.models import Role


def role_check_runnable(*, role: Role) -> None:
    """Refuse tasks for a role no model is bound to (a ROSTER_TASK_SUBMIT_CHECKS entry).

    Raises TaskRejected with code `role_unbound`.
    """
    if not RoleBinding.objects.filter(role=role).exists():
        raise TaskRejected(
            f"The role {role.slug!r} has no model bound to it; an admin can bind one "
            "under Agents > Role bindings.",
            code="role_unbound",
            field="role",
        )


@dataclass(frozen=True)
class RoleOffer:
    """A role as the agent API lists it: the model bound to it now (None: unbound) and
    that model's price in force (None: unbound or unpriced)."""

    role: Role
    binding: RoleBinding | None
    price: ModelPrice | None


def roles_offered(*, only: Collection[int] = ()) -> list[RoleOffer]:
    """Active roles by slug (only those whose ids are in `only` when it is not empty: an
    API token's scope), each with its bound model and its price in force now."""
    roles = Role.objects.filter(is_active=True).select_related("binding__model").order_by("slug")
    if only:
        roles = roles.filter(pk__in=only)
    now = timezone.now()
    offers = []
    for role in roles:
        binding = getattr(role, "binding", None)  # a missing reverse one-to-one raises
        price = price_in_force(model=binding.model, at=now) if binding is not None else None
        offers.append(RoleOffer(role=role, binding=binding, price=price))
    return offers
