"""Staff pages: list, create and follow tasks. Thin: forms check, services act.

Who may do what is docs/people.md: reading tasks needs office.view_task, submitting
office.add_task, and cancel and retry `task_controllable_by`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from office.errors import DomainError, TaskRejected
from office.forms import TaskFilterForm, TaskForm
from office.models import RETRYABLE_STATUSES, SUBMITTABLE_KINDS, Task, TaskKind
from office.selectors import (
    PERM_ADD_TASK,
    PERM_VIEW_TASK,
    task_controllable_by,
    tasks_visible_to,
    user_reads_all_tasks,
)
from office.services import task_cancel, task_retry, task_submit

TASKS_PER_PAGE = 25
# Fields of the new-task form a link may fill in.
FORM_PREFILL = ("role", "follow_up_of")

# Why a page answered 403, in words the 403 page shows.
CANNOT_READ = (
    "Reading tasks needs the office.view_task permission, which the staff, manager and "
    "admin groups give. Ask an admin to add you to a group."
)
CANNOT_SUBMIT = (
    "Submitting tasks needs the office.add_task permission, which the staff and admin "
    "groups give (managers read tasks but do not submit them)."
)
CANNOT_CONTROL = "Only the person who submitted this task, or an admin, can cancel or retry it."


def _require(request: HttpRequest, perm: str, why: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied(why)


@require_GET
@login_required
def task_list(request: HttpRequest) -> HttpResponse:
    """Tasks the user may see, newest first, filtered by role, status, person and the
    day they were created (in the office's time zone)."""
    _require(request, PERM_VIEW_TASK, CANNOT_READ)
    tasks = tasks_visible_to(user=request.user)
    filters = TaskFilterForm(request.GET, with_person=user_reads_all_tasks(user=request.user))
    # An invalid filter value (a role since deleted) is reported and ignored; the valid
    # ones still apply.
    filters.is_valid()
    data = filters.cleaned_data
    if role := data.get("role"):
        tasks = tasks.filter(role=role)
    if status := data.get("status"):
        tasks = tasks.filter(status=status)
    if person := data.get("person"):
        tasks = tasks.filter(created_by=person)
    if start := data.get("created_from"):
        tasks = tasks.filter(created_at__date__gte=start)
    if end := data.get("created_to"):
        tasks = tasks.filter(created_at__date__lte=end)
    page = Paginator(tasks, TASKS_PER_PAGE).get_page(request.GET.get("page"))
    filtered = any(data.get(name) for name in filters.fields)
    return render(
        request,
        "office/task_list.html",
        {
            "filters": filters,
            "filtered": filtered,
            "page_obj": page,
            "can_submit": request.user.has_perm(PERM_ADD_TASK),
        },
    )


@require_http_methods(["GET", "POST"])
@login_required
def task_create(request: HttpRequest) -> HttpResponse:
    """The new-task form; a valid submission is queued and opens the task's page.

    `?follow_up_of=ID&role=SLUG` fills the form in for a follow-up (the task page's
    "Follow up" link).
    """
    _require(request, PERM_ADD_TASK, CANNOT_SUBMIT)
    if request.method == "POST":
        form = TaskForm(request.POST)
    else:
        form = TaskForm(
            initial={key: request.GET[key] for key in FORM_PREFILL if key in request.GET}
        )
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            task = task_submit(
                role=data["role"],
                prompt=data["prompt"],
                title=data["title"],
                max_tokens=data["max_tokens"],
                tier_hint=data["tier_hint"],
                kind=data["kind"] or TaskKind.TASK,
                strategy_role=data["strategy_role"],
                urls=data["urls"],
                follow_up_of=data["follow_up_of"],
                created_by=request.user,
            )
        except TaskRejected as exc:
            form.add_domain_error(exc)
        else:
            return redirect("office:task_detail", task_id=task.pk)
    return render(request, "office/task_form.html", {"form": form})


@require_GET
@login_required
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    """One task with its result, totals and ledger; a running task refreshes itself."""
    task = _visible_task(request, task_id)
    # A thread belongs to one person: only they can follow the task up (task_submit).
    can_follow_up = (
        task.is_terminal
        and task.created_by_id == request.user.pk
        and request.user.has_perm(PERM_ADD_TASK)
    )
    return render(
        request,
        "office/task_detail.html",
        {
            "task": task,
            "can_follow_up": can_follow_up,
            "retries": list(task.retries.order_by("pk").values_list("pk", flat=True)),
            **_controls(request, task),
        },
    )


@require_GET
@login_required
def task_status(request: HttpRequest, task_id: int) -> HttpResponse:
    """The detail page's status block alone, polled by htmx until the task ends."""
    task = _visible_task(request, task_id)
    return render(request, "office/_task_status.html", {"task": task, **_controls(request, task)})


@require_POST
@login_required
def task_cancel_view(request: HttpRequest, task_id: int) -> HttpResponse:
    """Cancel a task that has not ended; back to its page, which says what happened."""
    task = _controllable_task(request, task_id)
    try:
        task_cancel(task=task, by=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Task #{task.pk} is cancelled: no further model call starts.")
    return redirect("office:task_detail", task_id=task.pk)


@require_POST
@login_required
def task_retry_view(request: HttpRequest, task_id: int) -> HttpResponse:
    """Retry a failed, over-budget or cancelled task as a new task, and open that one;
    a refusal goes back to the old task's page with the reason."""
    task = _controllable_task(request, task_id)
    try:
        retry = task_retry(task=task, by=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("office:task_detail", task_id=task.pk)
    messages.success(request, f"Task #{retry.pk} retries task #{task.pk}.")
    return redirect("office:task_detail", task_id=retry.pk)


def _controls(request: HttpRequest, task: Task) -> dict[str, Any]:
    """Which of cancel and retry the page offers; the services decide in the end (a
    task may end between the page and the click)."""
    allowed = task_controllable_by(task=task, user=request.user)
    return {
        # A step is cancelled or retried through its spec-then-execute task (the
        # services refuse a step).
        "can_cancel": allowed and not task.is_terminal and task.kind in SUBMITTABLE_KINDS,
        "can_retry": allowed
        and task.status in RETRYABLE_STATUSES
        and task.kind in SUBMITTABLE_KINDS,
    }


def _visible_task(request: HttpRequest, task_id: int) -> Task:
    _require(request, PERM_VIEW_TASK, CANNOT_READ)
    # A task the user may not see answers 404, not 403: its existence is not disclosed.
    return get_object_or_404(tasks_visible_to(user=request.user), pk=task_id)


def _controllable_task(request: HttpRequest, task_id: int) -> Task:
    task = _visible_task(request, task_id)
    if not task_controllable_by(task=task, user=request.user):
        raise PermissionDenied(CANNOT_CONTROL)
    return task
