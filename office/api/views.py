"""The task API: one view per operation; validate, call a service or selector, serialize."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from office.api.serializers import TaskCreateInputSerializer, TaskOutputSerializer
from office.errors import NotFound
from office.models import Task
from office.selectors import tasks_created_by
from office.services import task_submit


def _own_tasks(request: Request) -> QuerySet[Task]:
    # The API is for agents acting for themselves: even a staff member's token sees only
    # the tasks it submitted (the staff pages show everything).
    return tasks_created_by(user=request.user)


class TaskCreateApi(APIView):
    """POST /api/tasks/: queue a task for a role. 201 with the task."""

    InputSerializer = TaskCreateInputSerializer
    OutputSerializer = TaskOutputSerializer

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = task_submit(
            role=data["role"],
            prompt=data["prompt"],
            title=data.get("title", ""),
            max_tokens=data.get("max_tokens"),
            tier_hint=data.get("tier_hint", ""),
            kind=data["kind"],
            strategy_role=data.get("strategy_role") or None,
            urls=data.get("urls", ()),
            follow_up_of=data.get("follow_up_of"),
            created_by=request.user,
        )
        output = self.OutputSerializer(task, context={"request": request})
        return Response(output.data, status=status.HTTP_201_CREATED)


class TaskListApi(APIView):
    """GET /api/tasks/: the caller's tasks, newest first, paginated (limit/offset)."""

    OutputSerializer = TaskOutputSerializer

    def get(self, request: Request) -> Response:
        paginator = api_settings.DEFAULT_PAGINATION_CLASS()
        page = paginator.paginate_queryset(_own_tasks(request), request, view=self)
        output = self.OutputSerializer(page, many=True, context={"request": request})
        return paginator.get_paginated_response(output.data)


class TaskDetailApi(APIView):
    """GET /api/tasks/<id>/: one of the caller's tasks, or 404."""

    OutputSerializer = TaskOutputSerializer

    def get(self, request: Request, task_id: int) -> Response:
        task = _own_tasks(request).filter(pk=task_id).first()
        if task is None:
            raise NotFound(f"There is no task {task_id} of yours.")
        return Response(self.OutputSerializer(task, context={"request": request}).data)
