"""Staff pages: list, create and follow tasks. Thin: forms check, services act."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from office.errors import TaskRejected
from office.forms import TaskFilterForm, TaskForm
from office.models import Task, TaskKind
from office.selectors import tasks_visible_to
from office.services import task_submit

TASKS_PER_PAGE = 25
# Fields of the new-task form a link may fill in.
FORM_PREFILL = ("role", "follow_up_of")


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The site root: the task list is the start page."""
    return redirect("office:task_list")


@require_GET
@login_required
def task_list(request: HttpRequest) -> HttpResponse:
    """Tasks the user may see, newest first, filtered by role and status."""
    tasks = tasks_visible_to(user=request.user)
    filters = TaskFilterForm(request.GET)
    # An invalid filter value (a role since deleted) is reported and ignored; the valid
    # ones still apply.
    filters.is_valid()
    if role := filters.cleaned_data.get("role"):
        tasks = tasks.filter(role=role)
    if status := filters.cleaned_data.get("status"):
        tasks = tasks.filter(status=status)
    page = Paginator(tasks, TASKS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "office/task_list.html", {"filters": filters, "page_obj": page})


@require_http_methods(["GET", "POST"])
@login_required
def task_create(request: HttpRequest) -> HttpResponse:
    """The new-task form; a valid submission is queued and opens the task's page.

    `?follow_up_of=ID&role=SLUG` fills the form in for a follow-up (the task page's
    "Follow up" link).
    """
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
    can_follow_up = task.is_terminal and task.created_by_id == request.user.pk
    return render(
        request, "office/task_detail.html", {"task": task, "can_follow_up": can_follow_up}
    )


@require_GET
@login_required
def task_status(request: HttpRequest, task_id: int) -> HttpResponse:
    """The detail page's status block alone, polled by htmx until the task ends."""
    task = _visible_task(request, task_id)
    return render(request, "office/_task_status.html", {"task": task})


def _visible_task(request: HttpRequest, task_id: int) -> Task:
    # A task the user may not see answers 404, not 403: its existence is not disclosed.
    return get_object_or_404(tasks_visible_to(user=request.user), pk=task_id)
