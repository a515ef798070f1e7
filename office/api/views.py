"""The task API: one view per operation; validate, call a service or selector, serialize."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from office.api.base import MAX_ID, AgentApiView, CanSubmitTasks, Pagination, token_of
from office.api.schema import error_responses
from office.api.serializers import (
    EmptyInputSerializer,
    TaskCreateInputSerializer,
    TaskFollowUpInputSerializer,
    TaskOutputSerializer,
    TaskPageSerializer,
)
from office.errors import NotFound
from office.models import Task
from office.selectors import tasks_created_by
from office.services import task_cancel, task_retry, task_submit, task_submit_idempotent

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "A key of your choosing (1-200 visible ASCII characters, e.g. a UUID). Sending "
        "the same request again with the same key returns the task the first one created "
        "(header `Idempotent-Replayed: true`) instead of a second task; the same key with "
        "different inputs is 422 `idempotency_key_reused`."
    ),
)
REPLAYED_PARAMETER = OpenApiParameter(
    REPLAYED_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[201],
    enum=["true"],
    description="Present (`true`) when the task was created by an earlier request with "
    "the same Idempotency-Key: nothing new was created.",
)
TASK_ID_PARAMETER = OpenApiParameter(
    "task_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The task's id."
)


def _own_tasks(request: Request) -> QuerySet[Task]:
    # The API is for agents acting for themselves: even a staff member's token sees only
    # the tasks it submitted (the staff pages show everything), and a token scoped to
    # some roles only those roles' tasks.
    tasks = tasks_created_by(user=request.user)
    scope = list(token_of(request).roles.all())
    return tasks.filter(role__in=scope) if scope else tasks


def _own_task(request: Request, task_id: int) -> Task:
    """One of the caller's tasks. Raises NotFound for any other (existence not told)."""
    task = _own_tasks(request).filter(pk=task_id).first() if task_id <= MAX_ID else None
    if task is None:
        raise NotFound(f"There is no task {task_id} of yours.")
    return task


def _task_response(
    request: Request, task: Task, *, status_code: int = status.HTTP_200_OK, replayed: bool = False
) -> Response:
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    body = TaskOutputSerializer(task, context={"request": request}).data
    return Response(body, status=status_code, headers=headers)


def _submit(request: Request, **inputs: Any) -> Response:
    """Submit a task (once per Idempotency-Key when the request has one): 201 with it."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        task = task_submit(created_by=request.user, token=token_of(request), **inputs)
        return _task_response(request, task, status_code=status.HTTP_201_CREATED)
    submission = task_submit_idempotent(
        idempotency_key=key, created_by=request.user, token=token_of(request), **inputs
    )
    # A replay answers as the first request did (201), as Stripe does, and says so.
    return _task_response(
        request,
        submission.task,
        status_code=status.HTTP_201_CREATED,
        replayed=submission.replayed,
    )


class TaskCreateApi(AgentApiView):
    """POST /api/tasks/: queue a task for a role. 201 with the task."""

    permission_classes = [IsAuthenticated, CanSubmitTasks]

    InputSerializer = TaskCreateInputSerializer

    @extend_schema(
        operation_id="task_create",
        summary="Give a role a task",
        parameters=[IDEMPOTENCY_PARAMETER, REPLAYED_PARAMETER],
        request=TaskCreateInputSerializer,
        examples=[
            OpenApiExample(
                "A task",
                value={"role": "coder", "prompt": "Write a Python function that checks an IBAN."},
                request_only=True,
            ),
            OpenApiExample(
                "With every option",
                value={
                    "role": "coder",
                    "prompt": "Now handle the checksum rules on this page.",
                    "title": "IBAN checksum",
                    "max_tokens": 800,
                    "tier_hint": "medium",
                    "urls": ["https://en.wikipedia.org/wiki/International_Bank_Account_Number"],
                },
                request_only=True,
            ),
        ],
        responses={201: TaskOutputSerializer, **error_responses(400, 401, 403, 415, 422, 429)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return _submit(
            request,
            role=data["role"],
            prompt=data["prompt"],
            title=data.get("title", ""),
            max_tokens=data.get("max_tokens"),
            tier_hint=data.get("tier_hint", ""),
            kind=data["kind"],
            strategy_role=data.get("strategy_role") or None,
            urls=data.get("urls", ()),
            follow_up_of=data.get("follow_up_of"),
        )


class TaskListApi(AgentApiView):
    """GET /api/tasks/: the caller's tasks, newest first, paginated (limit/offset)."""

    @extend_schema(
        operation_id="task_list",
        summary="List your tasks",
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 200; 50 by default."),
            OpenApiParameter("offset", OpenApiTypes.INT, description="Tasks to skip."),
        ],
        responses={200: TaskPageSerializer, **error_responses(401, 429)},
    )
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(_own_tasks(request), request, view=self)
        output = TaskOutputSerializer(page, many=True, context={"request": request})
        return paginator.get_paginated_response(output.data)


class TaskDetailApi(AgentApiView):
    """GET /api/tasks/<id>/: one of the caller's tasks, or 404."""

    @extend_schema(
        operation_id="task_read",
        summary="Read one of your tasks",
        parameters=[TASK_ID_PARAMETER],
        responses={200: TaskOutputSerializer, **error_responses(401, 404, 429)},
    )
    def get(self, request: Request, task_id: int) -> Response:
        return _task_response(request, _own_task(request, task_id))


class TaskFollowUpApi(AgentApiView):
    """POST /api/tasks/<id>/follow-up/: continue a finished task's thread. 201."""

    permission_classes = [IsAuthenticated, CanSubmitTasks]

    InputSerializer = TaskFollowUpInputSerializer

    @extend_schema(
        operation_id="task_follow_up",
        summary="Follow up one of your finished tasks",
        parameters=[TASK_ID_PARAMETER, IDEMPOTENCY_PARAMETER, REPLAYED_PARAMETER],
        request=TaskFollowUpInputSerializer,
        examples=[
            OpenApiExample(
                "A follow-up", value={"prompt": "Now add unit tests."}, request_only=True
            )
        ],
        responses={
            201: TaskOutputSerializer,
            **error_responses(400, 401, 403, 404, 415, 422, 429),
        },
    )
    def post(self, request: Request, task_id: int) -> Response:
        earlier = _own_task(request, task_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return _submit(
            request,
            role=data.get("role") or earlier.role,
            prompt=data["prompt"],
            title=data.get("title", ""),
            max_tokens=data.get("max_tokens"),
            tier_hint=data.get("tier_hint", ""),
            urls=data.get("urls", ()),
            follow_up_of=earlier,
        )


class TaskCancelApi(AgentApiView):
    """POST /api/tasks/<id>/cancel/: stop a task that has not ended. 200 with it."""

    permission_classes = [IsAuthenticated, CanSubmitTasks]

    @extend_schema(
        operation_id="task_cancel",
        summary="Cancel one of your tasks",
        parameters=[TASK_ID_PARAMETER],
        request=None,
        responses={200: TaskOutputSerializer, **error_responses(400, 401, 403, 404, 409, 415, 429)},
    )
    def post(self, request: Request, task_id: int) -> Response:
        task = _own_task(request, task_id)
        EmptyInputSerializer(data=request.data).is_valid(raise_exception=True)
        return _task_response(request, task_cancel(task=task, by=request.user))


class TaskRetryApi(AgentApiView):
    """POST /api/tasks/<id>/retry/: try a failed, over-budget or cancelled task again, as
    a new task. 201 with the new task."""

    permission_classes = [IsAuthenticated, CanSubmitTasks]

    @extend_schema(
        operation_id="task_retry",
        summary="Retry one of your tasks that ended without a result",
        parameters=[TASK_ID_PARAMETER],
        request=None,
        responses={
            201: TaskOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, 415, 429),
        },
    )
    def post(self, request: Request, task_id: int) -> Response:
        task = _own_task(request, task_id)
        EmptyInputSerializer(data=request.data).is_valid(raise_exception=True)
        retry = task_retry(task=task, by=request.user, token=token_of(request))
        return _task_response(request, retry, status_code=status.HTTP_201_CREATED)


@csrf_exempt  # a POST to a wrong URL is a 404, not a missing CSRF cookie (no cookies here)
def api_not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any /api/ URL that names no endpoint: the API's JSON 404, not the site's HTML."""
    message = f"There is no API endpoint at {request.path[:200]!r}."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.url_name != "not_found":
            message += f" Did you mean {request.path[:200] + '/'!r}?"
    body = {"error": {"code": "not_found", "message": message, "field": None}}
    return JsonResponse(body, status=404)
