"""The agent API's OpenAPI 3 schema (drf-spectacular): what is in it, how a token is
sent, and the errors each operation can answer with.

Schemathesis checks live answers against this schema (tests/office/test_api_schema.py),
so it must be true: every status an operation can answer is listed, request bodies
refuse unknown keys as the serializers do, and nullable fields say so.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse

from office.api.serializers import ErrorSerializer

API_PREFIX = "/api/"

ERROR_WHEN: dict[int, str] = {
    400: "Bad input: malformed JSON, a wrong type, an unknown parameter, or a value the "
    "office refuses (the code says which).",
    401: "No token, or an unknown, revoked or expired one (`unauthenticated`).",
    403: "A role outside the token's scope (`role_not_allowed`).",
    404: "No such task of yours (`not_found`).",
    409: "The task is not in a state that allows this (`task_not_cancellable`, "
    "`task_not_retryable`).",
    415: "A body that is not JSON (`unsupported_media_type`).",
    422: "The Idempotency-Key was used before for a different request (`idempotency_key_reused`).",
    429: "Too many requests for this token (`throttled`); the Retry-After header says "
    "after how many seconds to try again.",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error answers of an operation, by status, each the one error shape."""
    return {
        status: OpenApiResponse(response=ErrorSerializer, description=ERROR_WHEN[status])
        for status in statuses
    }


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer rst_...` (office.api.authentication)."""

    target_class = "office.api.authentication.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            **build_bearer_security_scheme_object("Authorization", "Bearer", "rst_..."),
            "description": "An API token from the admin (shown once when created).",
        }


def only_agent_api(endpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Preprocessing hook: keep the agent API (/api/...), not the schema and docs views
    themselves, and not other DRF views the project mounts (the OpenAI-compatible /v1/).
    A URL served by one view per method (office.api.urls.by_method) is described by
    each method's view."""
    kept = []
    for path, path_regex, method, callback in endpoints:
        if not path.startswith(API_PREFIX) or callback.cls.__module__.startswith("drf_spectacular"):
            continue
        per_method = getattr(callback, "views_by_method", None)
        if per_method is not None:
            callback = per_method[method]
        kept.append((path, path_regex, method, callback))
    return kept


def request_bodies_are_closed(
    result: dict[str, Any], generator: Any, **kwargs: Any
) -> dict[str, Any]:
    """Postprocessing hook: request bodies take no keys but their own
    (StrictInputSerializer answers `unsupported_parameter` to any other)."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result


def throttled_answers_say_when(
    result: dict[str, Any], generator: Any, **kwargs: Any
) -> dict[str, Any]:
    """Postprocessing hook: every 429 carries a Retry-After header (office.api.errors)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            throttled = operation.get("responses", {}).get("429")
            if throttled is not None:
                throttled["headers"] = {
                    "Retry-After": {
                        "schema": {"type": "integer", "minimum": 0},
                        "required": True,
                        "description": "Seconds to wait before the token may ask again.",
                    }
                }
    return result
