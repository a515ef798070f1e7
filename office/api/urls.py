"""Task API URLs (namespace "office_api"), mounted at /api/."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.views import APIView

from office.api import views

app_name = "office_api"

View = Callable[..., HttpResponse]


def by_method(**views_by_method: View) -> View:
    """Serve one URL with one view per HTTP method (`GET=..., POST=...`).

    Keeps "one view per operation" where a collection URL has two operations. Any other
    method gets DRF's JSON 405 (after authentication) with an Allow header naming the
    methods served.
    """
    allowed = sorted({*views_by_method, "OPTIONS"})

    class MethodNotServed(APIView):
        def _allowed_methods(self) -> list[str]:
            return allowed

    fallback = MethodNotServed.as_view()

    @csrf_exempt  # as DRF's own views: token authentication is not cookie based
    def dispatch(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        method = "GET" if request.method == "HEAD" else request.method
        view = views_by_method.get(method or "", fallback)
        return view(request, *args, **kwargs)

    return dispatch


urlpatterns = [
    path(
        "tasks/",
        by_method(GET=views.TaskListApi.as_view(), POST=views.TaskCreateApi.as_view()),
        name="task_list",
    ),
    path("tasks/<int:task_id>/", views.TaskDetailApi.as_view(), name="task_detail"),
]
