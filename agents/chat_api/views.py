"""The OpenAI-compatible endpoint's views: authenticate, validate, call agents.proxy,
answer in OpenAI's shapes. Every refusal is an OpenAI error object with a 4xx (or a 502
/ 503 when the providers or the role's configuration fail), never a 500."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from functools import partial

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed

from agents.chat_api import shapes
from agents.chat_api.selectors import models_for_token, role_for_model
from agents.chat_api.validation import body_parse, chat_call_parse
from agents.proxy import ProxyError, ProxyStream, proxy_complete, proxy_stream
from agents.runtime import config_pinned
from office.api.authentication import ApiTokenAuthentication
from office.api.throttling import token_throttle_wait
from office.models import ApiToken
from office.selectors import PERM_ADD_TASK

logger = logging.getLogger(__name__)

# Where a request's own headers ask for a token: the SDKs send `Authorization: Bearer`.
AUTH_CHALLENGE = 'Bearer realm="v1"'


@csrf_exempt  # token authentication, not cookies
def chat_completions(request: HttpRequest) -> HttpResponse:
    """POST /v1/chat/completions: a role answers, whole or streamed (SSE)."""
    # The role, its binding and its prices are planned from one reading of the config.
    with config_pinned():
        return _chat_completions(request)


def _chat_completions(request: HttpRequest) -> HttpResponse:
    try:
        _method(request, "POST")
        user, token = _authenticate(request)
        try:
            body = request.body
        except RequestDataTooBig:
            raise ProxyError(
                "The request body is too large.",
                status_code=413,
                code="request_too_large",
                error_type="invalid_request_error",
                should_retry=False,
            ) from None
        call, stream = chat_call_parse(payload=body_parse(body), token=token)
        created = int(time.time())
        if stream:
            opened = proxy_stream(call=call, user=user)
            response = StreamingHttpResponse(
                _EventStream(opened, created=created), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # nginx: pass each chunk on at once
            response["X-Roster-Task-Id"] = str(opened.task.pk)
            response["X-Roster-Model"] = opened.model
            return response
        answer = proxy_complete(call=call, user=user)
    except ProxyError as exc:
        return _error(exc)
    document = shapes.completion_document(
        response_id=f"chatcmpl-{answer.usage.call_id}",
        created=created,
        role=call.role,
        text=answer.result.text,
        finish=answer.result.finish_reason,
        usage=answer.usage,
    )
    response = JsonResponse(document)
    response["X-Roster-Task-Id"] = str(answer.task.pk)
    response["X-Roster-Model"] = answer.model
    response["X-Roster-Cost"] = str(answer.usage.cost)
    return response


def model_list(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: the roles this token may use, as models."""
    try:
        _method(request, "GET")
        _, token = _authenticate(request)
    except ProxyError as exc:
        return _error(exc)
    roles = models_for_token(token=token)
    return JsonResponse({"object": "list", "data": [shapes.model_document(r) for r in roles]})


def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    """GET /v1/models/<model>: one role this token may use, as a model."""
    try:
        _method(request, "GET")
        _, token = _authenticate(request)
        role = role_for_model(model=model, token=token)
    except ProxyError as exc:
        return _error(exc)
    return JsonResponse(shapes.model_document(role))


class _EventStream:
    """The streamed body, closable before it is ever iterated: the WSGI server calls
    close() (through the response) whatever happened, and a generator that never
    started would not run its `finally`. Either way the call is settled."""

    def __init__(self, stream: ProxyStream, *, created: int) -> None:
        self._stream = stream
        self._events = _events(stream, created=created)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        try:
            self._events.close()
        finally:
            self._stream.close()


def _events(stream: ProxyStream, *, created: int) -> Iterator[bytes]:
    """The SSE body: a role delta, the text deltas, the finish reason, the usage (always:
    the last chunk carries it, as with stream_options.include_usage), then [DONE]; or an
    error event when the provider's stream breaks. Closing this generator before its end
    (the client hung up: the WSGI server calls close()) settles the call."""
    chunk_id = f"chatcmpl-{stream.call_id}"
    role = stream.task.role

    chunk = partial(shapes.chunk_event, response_id=chunk_id, created=created, role=role)

    try:
        yield chunk(delta={"role": "assistant", "content": ""})
        for piece in stream:
            yield chunk(delta={"content": piece})
        assert stream.result is not None
        yield chunk(finish=stream.result.finish_reason)
        yield chunk(usage=stream.usage)
        yield shapes.DONE
    except ProxyError as exc:
        yield shapes.sse(shapes.error_document(exc))
    finally:
        stream.close()


def _method(request: HttpRequest, allowed: str) -> None:
    if request.method != allowed:
        raise ProxyError(
            f"{request.method} is not allowed here; use {allowed}.",
            status_code=405,
            code="method_not_allowed",
            error_type="invalid_request_error",
            should_retry=False,
        )


def _authenticate(request: HttpRequest) -> tuple[object, ApiToken]:
    try:
        found = ApiTokenAuthentication().authenticate(request)  # type: ignore[arg-type]
    except AuthenticationFailed as exc:
        raise _unauthenticated(str(exc.detail)) from None
    if found is None:
        raise _unauthenticated(
            "No API key: send a Roster API token as 'Authorization: Bearer rst_...'."
        )
    user, token = found
    if not user.has_perm(PERM_ADD_TASK):  # a call is a task: the token acts as its person
        raise ProxyError(
            "This API key's user may not submit tasks (it lacks the office.add_task "
            "permission: the staff or admin group).",
            status_code=403,
            code="permission_denied",
            error_type="permission_error",
            should_retry=False,
        )
    # One request rate per token, shared with the agent API (office.api.throttling).
    wait = token_throttle_wait(token=token)
    if wait is not None:
        raise ProxyError(
            f"Too many requests for this API token (the limit is "
            f"{settings.ROSTER_API_THROTTLE_RATE}); retry in {math.ceil(wait)} s.",
            status_code=429,
            code="rate_limit_exceeded",
            error_type="rate_limit_error",
            retry_after=wait,
        )
    return user, token


def _unauthenticated(message: str) -> ProxyError:
    return ProxyError(
        message,
        status_code=401,
        code="invalid_api_key",
        error_type="invalid_request_error",
        should_retry=False,
    )


def _error(exc: ProxyError) -> JsonResponse:
    response = JsonResponse(shapes.error_document(exc), status=exc.status_code)
    for name, value in shapes.error_headers(exc).items():
        response[name] = value
    if exc.status_code == 401:
        response["WWW-Authenticate"] = AUTH_CHALLENGE
    return response
