"""Operations endpoints at the site root (no namespace: monitors use fixed paths)."""

from django.urls import path

from agents import ops_views

urlpatterns = [
    path("healthz", ops_views.healthz, name="healthz"),
    path("metrics", ops_views.metrics, name="metrics"),
]
