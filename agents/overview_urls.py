"""The office overview at the site root (namespace "overview")."""

from django.urls import path

from agents import overview_views

app_name = "overview"

urlpatterns = [
    path("", overview_views.office_overview_page, name="office"),
]
