"""URL patterns (filled in by the pages that live here)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
