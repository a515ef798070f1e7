"""Office reads."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Prefetch, QuerySet

from office.models import UNFINISHED_STATUSES, Role, Task

# Who may do what (docs/people.md); the groups hold these (office migration 0007).
PERM_VIEW_TASK = "office.view_task"
PERM_VIEW_ALL_TASKS = "office.view_all_tasks"
PERM_ADD_TASK = "office.add_task"


def _tasks_with_relations() -> QuerySet[Task]:
    """Tasks with what a list shows of each loaded in bulk: role, creator, strategy role
    and a spec-then-execute task's steps (in order, with their roles)."""
    return Task.objects.select_related("role", "created_by", "strategy_role").prefetch_related(
        Prefetch("steps", queryset=Task.objects.select_related("role").order_by("pk"))
    )


def user_reads_all_tasks(*, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether a person reads everyone's tasks: superusers and holders of
    office.view_all_tasks (managers, admins) always; people who may read tasks
    (office.view_task) when ROSTER_STAFF_SEE_ALL_TASKS is on."""
    if not user.is_authenticated:
        return False
    if user.has_perm(PERM_VIEW_ALL_TASKS):  # True for active superusers
        return True
    return settings.ROSTER_STAFF_SEE_ALL_TASKS and user.has_perm(PERM_VIEW_TASK)


def tasks_visible_to(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Task]:
    """Tasks a person may read: everyone's for those `user_reads_all_tasks` allows, their
    own otherwise (none for an anonymous visitor)."""
    tasks = _tasks_with_relations()
    if user_reads_all_tasks(user=user):
        return tasks
    if not user.is_authenticated:
        return tasks.none()
    return tasks.filter(created_by=user)


def task_controllable_by(*, task: Task, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether a person may cancel or retry a task: someone who may submit tasks
    (office.add_task) and either submitted this one or reads everyone's
    (office.view_all_tasks: admins). Managers read all tasks but submit none, so they
    cannot; staff who see all tasks by ROSTER_STAFF_SEE_ALL_TASKS act on their own only."""
    if not user.is_authenticated or not user.has_perm(PERM_ADD_TASK):
        return False
    return task.created_by_id == user.pk or user.has_perm(PERM_VIEW_ALL_TASKS)


def tasks_created_by(*, user: AbstractBaseUser) -> QuerySet[Task]:
    """Tasks a person or agent submitted themselves."""
    return _tasks_with_relations().filter(created_by=user)


def roles_active() -> QuerySet[Role]:
    """Roles that accept tasks, by slug."""
    return Role.objects.filter(is_active=True).order_by("slug")


def queue_depth_by_role() -> dict[int, dict[str, int]]:
    """Tasks not yet ended, per role id and status (queued, preparing, running); a role
    with none is absent. One grouped query."""
    depth: dict[int, dict[str, int]] = {}
    rows = (
        Task.objects.filter(status__in=UNFINISHED_STATUSES)
        .order_by()
        .values_list("role_id", "status")
        .annotate(count=Count("id"))
    )
    for role_id, status, count in rows:
        depth.setdefault(role_id, {})[status] = count
    return depth
