"""One exception handler for the API: every error is the same JSON shape.

    {"error": {"code": "prompt_too_long", "message": "...", "field": "prompt",
               "details": {...}}}

`code` is stable and machine-readable, `message` is for people, `field` names the input
at fault (or is null), `details` appears only for validation errors (every field's
messages).
"""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from office.errors import DomainError

# DRF's own exception codes, renamed where ours read better for API clients.
CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "unauthenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_request",
    exceptions.Throttled: "throttled",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Turn a DomainError or DRF/Django HTTP error into a JSON error response.

    Returns None for anything else, so a real bug still surfaces as a 500 (and is logged).
    """
    if isinstance(exc, DomainError):
        set_rollback()
        return _error(exc.status_code, code=exc.code, message=exc.message, field=exc.field)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    set_rollback()
    headers: dict[str, str] = {}
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header
    if (wait := getattr(exc, "wait", None)) is not None:
        headers["Retry-After"] = str(math.ceil(wait))

    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_error(exc.detail)
        return _error(
            exc.status_code,
            code="invalid",
            message=message,
            field=field,
            details=_as_mapping(exc.detail),
            headers=headers,
        )
    code = next((CODES[cls] for cls in type(exc).__mro__ if cls in CODES), None) or _code_of(exc)
    return _error(exc.status_code, code=code, message=str(exc.detail), headers=headers)


def _error(
    status: int,
    *,
    code: str,
    message: str,
    field: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if details is not None:
        body["details"] = details
    return Response({"error": body}, status=status, headers=headers)


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def _first_error(detail: Any, path: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """The first input at fault (dotted when nested, None for the whole request) and its
    first message."""
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        if key != api_settings.NON_FIELD_ERRORS_KEY:
            path = (*path, str(key))
        return _first_error(value, path)
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], path)
    return ".".join(path) or None, str(detail or "The request is not valid.")


def _as_mapping(detail: Any) -> dict[str, Any]:
    # A serializer's errors are a dict already; a bare ValidationError("...") is a list.
    return detail if isinstance(detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: detail}
