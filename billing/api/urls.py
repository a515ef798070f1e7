"""Usage API URLs, included by office.api.urls under /api/ (namespace office_api)."""

from __future__ import annotations

from django.urls import path

from billing.api import views

urlpatterns = [path("usage/", views.UsageApi.as_view(), name="usage")]
