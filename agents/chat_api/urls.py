"""OpenAI-compatible URLs (namespace "chat_api"), mounted at /v1/."""

from __future__ import annotations

from django.urls import path

from agents.chat_api import views

app_name = "chat_api"

urlpatterns = [
    path("chat/completions", views.chat_completions, name="chat_completions"),
    path("models", views.model_list, name="model_list"),
    path("models/<str:model>", views.model_detail, name="model_detail"),
]
