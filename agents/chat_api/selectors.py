"""Reads of the OpenAI-compatible endpoint: which role a `model` names, which roles a
token may use."""

from __future__ import annotations

from agents.models import RoleBinding
from agents.proxy import ProxyError
from agents.runtime import role_active, token_scope
from office.models import ApiToken, Role


def role_for_model(*, model: str, token: ApiToken) -> Role:
    """Return the active role a `model` names, if the token may use it.

    Raises ProxyError: 404 `model_not_found`, 403 `model_not_allowed`.
    """
    role = role_active(slug=model)
    if role is None:
        raise ProxyError(
            f"The model {model!r} does not exist: a model is the slug of an active Roster "
            "role; GET /v1/models lists the ones this token may use.",
            status_code=404,
            code="model_not_found",
            error_type="invalid_request_error",
            param="model",
            should_retry=False,
        )
    if not token.allows_role(role, scope=token_scope(token=token)):
        raise ProxyError(
            f"This API token may not use the model {model!r} (its roles are limited).",
            status_code=403,
            code="model_not_allowed",
            error_type="permission_error",
            param="model",
            should_retry=False,
        )
    return role


def models_for_token(*, token: ApiToken) -> list[Role]:
    """The roles a token may use as models: active, with a model bound, in its scope
    (every such role when the token is not limited), by slug."""
    roles = Role.objects.filter(
        is_active=True, pk__in=RoleBinding.objects.values("role_id")
    ).order_by("slug")
    scoped = token_scope(token=token)
    if scoped:
        roles = roles.filter(pk__in=scoped)
    return list(roles)
