"""Office reads."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from office.models import Role, Task


def tasks_visible_to(*, user: AbstractBaseUser) -> QuerySet[Task]:
    """Tasks a person may read: everything for staff members, their own otherwise."""
    tasks = Task.objects.select_related("role", "created_by")
    if getattr(user, "is_staff", False):
        return tasks
    return tasks.filter(created_by=user)


def tasks_created_by(*, user: AbstractBaseUser) -> QuerySet[Task]:
    """Tasks a person or agent submitted themselves."""
    return Task.objects.select_related("role", "created_by").filter(created_by=user)


def roles_active() -> QuerySet[Role]:
    """Roles that accept tasks, by slug."""
    return Role.objects.filter(is_active=True).order_by("slug")
