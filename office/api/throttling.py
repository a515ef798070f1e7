"""Throttling of the agent API: each API token has its own request rate.

Counted in Django's default cache (CACHES: Redis, or files every process on the machine
shares), so the limit holds across web processes. Over it, the answer is 429 with a
Retry-After header (office.api.errors).
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from office.models import ApiToken


class ApiTokenRateThrottle(SimpleRateThrottle):
    """ROSTER_API_THROTTLE_RATE requests per period, per API token (not per person: two
    agents of one person are limited apart, and revoking one frees nothing for the
    other)."""

    scope = "api_token"

    def get_rate(self) -> str:
        # Read per request rather than at import (DRF's default), so the setting is the
        # one in force.
        return str(settings.ROSTER_API_THROTTLE_RATE)

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        token = request.auth
        if not isinstance(token, ApiToken):
            return None  # not authenticated by a token: refused before this matters
        return throttle_cache_key(token=token)


def throttle_cache_key(*, token: ApiToken) -> str:
    """The cache key holding one token's recent request times: its id, and the start of
    its hash, so that a token re-created under a reused id (a restored database, a test
    database) starts with a clean count."""
    return f"throttle_api_token_{token.pk}_{token.key_hash[:12]}"
