"""Throttling of the agent API: each API token has its own request rate.

Counted in Django's default cache (CACHES: Redis, or files every process on the machine
shares), so the limit holds across web processes. Over it, the answer is 429 with a
Retry-After header (office.api.errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

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


@dataclass(frozen=True)
class _TokenOnly:
    """What the throttle reads of a request: the token that authenticated it."""

    auth: ApiToken


def token_throttle_wait(*, token: ApiToken) -> float | None:
    """Count one request of `token` against ROSTER_API_THROTTLE_RATE, for a surface
    outside DRF (the OpenAI-compatible /v1/): the same count as the agent API's, so a
    token has one rate whichever door it uses. Returns None when the request is
    allowed, else the seconds until it would be."""
    throttle = ApiTokenRateThrottle()
    if throttle.allow_request(cast(Request, _TokenOnly(auth=token)), cast(APIView, None)):
        return None
    return throttle.wait() or 1.0
