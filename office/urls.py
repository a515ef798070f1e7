"""Root URLs: the admin, Django's auth views, the task API and the staff pages."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("office.api.urls")),
    # The OpenAI-compatible endpoint (agents.chat_api; docs/openai.md).
    path("v1/", include("agents.chat_api.urls")),
    # Manager pages (reports, calculator, what-if); included by name, office imports no app.
    path("billing/", include("billing.urls")),
    path("billing/", include("billing.planning_urls")),
    # Health checks and Prometheus metrics (docs/operations.md); by name, like billing.
    path("", include("agents.ops_urls")),
    # The office overview (the site root) reads agents and billing, so agents serves it.
    path("", include("agents.overview_urls")),
    path("", include("office.web_urls")),
]
