"""Office reads."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, QuerySet

from office.models import Role, Task


def _tasks_with_relations() -> QuerySet[Task]:
    """Tasks with what a list shows of each loaded in bulk: role, creator, strategy role
    and a spec-then-execute task's steps (in order, with their roles)."""
    return Task.objects.select_related("role", "created_by", "strategy_role").prefetch_related(
        Prefetch("steps", queryset=Task.objects.select_related("role").order_by("pk"))
    )


def tasks_visible_to(*, user: AbstractBaseUser) -> QuerySet[Task]:
    """Tasks a person may read: everything for staff members, their own otherwise."""
    tasks = _tasks_with_relations()
    if getattr(user, "is_staff", False):
        return tasks
    return tasks.filter(created_by=user)


def tasks_created_by(*, user: AbstractBaseUser) -> QuerySet[Task]:
    """Tasks a person or agent submitted themselves."""
    return _tasks_with_relations().filter(created_by=user)


def roles_active() -> QuerySet[Role]:
    """Roles that accept tasks, by slug."""
    return Role.objects.filter(is_active=True).order_by("slug")
