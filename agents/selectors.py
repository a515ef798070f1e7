"""Agents reads: which model and credential answer a role."""

from __future__ import annotations

from django.db.models import Prefetch

from agents.models import RoleBinding, RouteCandidate
from office.errors import TaskRejected
from office.models import Role


def binding_for_role(*, role: Role) -> RoleBinding | None:
    """The role's binding with its models, credentials and route candidates loaded, or
    None if unbound."""
    return (
        RoleBinding.objects.select_related(
            "model", "credential", "role", "over_budget_model", "over_budget_credential"
        )
        .prefetch_related(
            Prefetch(
                "candidates",
                queryset=RouteCandidate.objects.select_related("model", "credential"),
            )
        )
        .filter(role=role)
        .first()
    )


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
