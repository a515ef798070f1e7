"""Admin for rows that are history: shown, never written by hand."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


class HistoryAdminMixin:
    """No add, change or delete in the admin: services write these rows (the ledger,
    budget counters, alerts, worker heartbeats), people only read them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
