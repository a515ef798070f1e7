"""Agent API URLs (namespace "office_api"), mounted at /api/: tasks here, roles from
agents.api, usage and budgets from billing.api (included by name: office imports
neither), the schema and its pages, and a JSON 404 for anything else under /api/."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from office.api import schema, views  # noqa: F401  schema registers the token scheme
from office.api.base import AgentApiView

app_name = "office_api"

View = Callable[..., HttpResponse]


def by_method(**views_by_method: View) -> View:
    """Serve one URL with one view per HTTP method (`GET=..., POST=...`).

    Keeps "one view per operation" where a collection URL has two operations. Any other
    method gets DRF's JSON 405 (after authentication) with an Allow header naming the
    methods served.
    """
    allowed = sorted({*views_by_method, "OPTIONS"})

    class MethodNotServed(AgentApiView):
        def _allowed_methods(self) -> list[str]:
            return allowed

    fallback = MethodNotServed.as_view()

    @csrf_exempt  # as DRF's own views: token authentication is not cookie based
    def dispatch(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        method = "GET" if request.method == "HEAD" else request.method
        view = views_by_method.get(method or "", fallback)
        return view(request, *args, **kwargs)

    # What the schema generator reads (office.api.schema.only_agent_api swaps in each
    # method's own view): the methods served, as an APIView would say.
    dispatch.cls = MethodNotServed  # type: ignore[attr-defined]
    dispatch.initkwargs = {}  # type: ignore[attr-defined]
    dispatch.views_by_method = views_by_method  # type: ignore[attr-defined]
    return dispatch


urlpatterns = [
    path(
        "tasks/",
        by_method(GET=views.TaskListApi.as_view(), POST=views.TaskCreateApi.as_view()),
        name="task_list",
    ),
    path("tasks/<int:task_id>/", views.TaskDetailApi.as_view(), name="task_detail"),
    path(
        "tasks/<int:task_id>/follow-up/",
        views.TaskFollowUpApi.as_view(),
        name="task_follow_up",
    ),
    path("tasks/<int:task_id>/cancel/", views.TaskCancelApi.as_view(), name="task_cancel"),
    path("tasks/<int:task_id>/retry/", views.TaskRetryApi.as_view(), name="task_retry"),
    path("", include("agents.api.urls")),
    path("", include("billing.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="office_api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="office_api:schema"), name="redoc"),
    re_path(r"^(?P<path>.*)$", views.api_not_found, name="not_found"),
]
