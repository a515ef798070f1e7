"""API authentication: per-agent tokens, stored hashed (office.models.ApiToken)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from office.models import ApiToken

# `Bearer` is the OAuth-style spelling most HTTP clients default to; `Token` is DRF's.
KEYWORDS = ("bearer", "token")

# last_used_at is for people ("is this token still in use?"); writing it on every request
# would turn each read into a write, so it is refreshed at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer rst_...` (or `Token rst_...`).

    Returns (user, token) for a known, unrevoked, unexpired token of an active user;
    raises AuthenticationFailed (401) with the reason otherwise; returns None when the
    request carries no token of this kind, so the permission check answers 401.
    """

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].decode("latin-1").lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer <token>'.")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid API token.") from None

        token = (
            ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_of(raw)).first()
        )
        if token is None:
            raise AuthenticationFailed("Invalid API token.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise AuthenticationFailed("This API token has been revoked.")
        if not token.is_usable(now=now):
            raise AuthenticationFailed("This API token has expired.")
        if not token.user.is_active:
            raise AuthenticationFailed("The account this API token belongs to is disabled.")
        _touch(token, now=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Having a challenge makes DRF answer 401 rather than 403 to anonymous requests.
        return 'Bearer realm="api"'


def _touch(token: ApiToken, *, now: datetime) -> None:
    # The row just read says whether it is due: most requests write nothing.
    if token.last_used_at is not None and token.last_used_at >= now - LAST_USED_RESOLUTION:
        return
    # Conditional update: of many concurrent requests in the same minute, one writes.
    ApiToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
