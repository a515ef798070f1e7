"""Roles API URLs, included by office.api.urls under /api/ (namespace office_api)."""

from __future__ import annotations

from django.urls import path

from agents.api import views

urlpatterns = [path("roles/", views.RoleListApi.as_view(), name="role_list")]
