"""The one HTTP client every provider adapter shares, and the wire helpers they have in common.

A worker keeps hundreds of provider calls in flight on a threads pool; they all go through
one lazily built `httpx.Client` so that connections to the same few hosts are pooled and
kept alive instead of paying a TLS handshake per call. Every failure leaves this module as
a `ProviderError` whose message is readable, short and never contains the key.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from agents.providers.base import ChatResult, ProviderError, ServerSentEvent
from agents.providers.registry import DEFAULT_BASE_URLS, ProviderKind
from agents.redaction import redact
from billing.pricing import PricingError, TokenUsage

logger = logging.getLogger(__name__)

USER_AGENT = "Roster/0.1"
# Our id for a call, sent with every request so a provider's (or the sandbox's) logs can be
# matched to the ledger row.
CALL_ID_HEADER = "X-Roster-Call-Id"
# Long enough to carry a provider's explanation, short enough for a task's failure reason.
MAX_ERROR_CHARS = 500
# Statuses where the same request may succeed later: timeout, conflict, too early, rate limit.
# Every other 4xx (400, 401, 402 out of credit, 403, 404, 422...) fails the same way again.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})

# --- The shared client ----------------------------------------------------------------------

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _build_client() -> httpx.Client:
    max_connections: int = settings.ROSTER_HTTP_MAX_CONNECTIONS
    return httpx.Client(
        timeout=httpx.Timeout(
            settings.ROSTER_PROVIDER_TIMEOUT, connect=settings.ROSTER_PROVIDER_CONNECT_TIMEOUT
        ),
        # A worker talks to a handful of hosts; keeping every pooled connection alive avoids
        # a new TLS handshake per call when hundreds of calls are in flight.
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": USER_AGENT},
        # A redirected POST would be replayed as a GET; a redirect means a wrong base URL.
        follow_redirects=False,
    )


def get_client() -> httpx.Client:
    """Return the process-wide client, building it on first use (thread-safe)."""
    global _client
    client = _client
    if client is not None:
        return client
    with _client_lock:
        if _client is None:
            _client = _build_client()
        return _client


def reset_client() -> None:
    """Close and forget the shared client; the next call builds a new one from settings.

    For tests (after changing timeouts) and shutdown: requests still in flight on other
    threads fail when the client closes under them.
    """
    global _client
    with _client_lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def _forget_client_after_fork() -> None:
    # A forked child (Celery prefork, gunicorn) must not reuse the parent's sockets, nor
    # close them: that would break the parent's connections. The lock may have been held by
    # another thread at fork time, so it is replaced too.
    global _client, _client_lock
    _client = None
    _client_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_client_after_fork)


# --- Requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonResponse:
    """A provider's successful answer (not Django's JsonResponse): a JSON object, exactly."""

    data: dict[str, Any]
    headers: httpx.Headers
    status: int


def post_json(
    url: str,
    *,
    headers: Mapping[str, str],
    payload: Mapping[str, Any],
    provider_label: str,
    secret: str,
    timeout: float | None = None,
) -> JsonResponse:
    """POST `payload` as JSON and return the provider's 2xx JSON object.

    Numbers with a fraction are parsed as Decimal (money stays exact). `provider_label`
    names the provider in error messages; `secret` is masked out of them. `timeout`
    (seconds) replaces ROSTER_PROVIDER_TIMEOUT for this request (see request_timeout).
    Raises ProviderError for transport failures, non-2xx answers and malformed bodies.
    """
    return _request_json(
        "POST",
        url,
        headers=headers,
        payload=payload,
        provider_label=provider_label,
        secret=secret,
        timeout=timeout,
    )


def get_json(
    url: str, *, headers: Mapping[str, str], provider_label: str, secret: str = ""
) -> JsonResponse:
    """GET a JSON object (model catalogs, key info). Returns and raises like post_json."""
    return _request_json(
        "GET", url, headers=headers, payload=None, provider_label=provider_label, secret=secret
    )


def _request_json(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    payload: Mapping[str, Any] | None,
    provider_label: str,
    secret: str,
    timeout: float | None = None,
) -> JsonResponse:
    client = get_client()
    limits = client.timeout if timeout is None else request_timeout(timeout)
    try:
        response = client.request(
            method,
            url,
            headers={"Accept": "application/json", **headers},
            json=payload,
            timeout=limits,
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _transport_error(exc, limits, provider_label, secret) from _cause(exc)

    if not 200 <= response.status_code < 300:
        raise _status_error(response, provider_label, secret)
    try:
        data = parse_json(response.content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise provider_error(
            f"malformed JSON from {provider_label} (HTTP {response.status_code}): "
            f"{body_snippet(response.text)}",
            secret=secret,
            permanent=False,
            status_code=response.status_code,
        )
    return JsonResponse(data=data, headers=response.headers, status=response.status_code)


def _transport_error(
    exc: httpx.HTTPError | httpx.InvalidURL, limits: httpx.Timeout, provider_label: str, secret: str
) -> ProviderError:
    """The ProviderError of a request that failed in transport (no HTTP status)."""
    if isinstance(exc, httpx.TimeoutException):
        return _timeout_error(exc, limits, provider_label, secret)
    if isinstance(exc, httpx.ConnectError):
        return provider_error(
            f"could not connect to {provider_label}: {exc}",
            secret=secret,
            permanent=False,
            reached_provider=False,
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return provider_error(
            f"invalid base URL for {provider_label}: {exc}",
            secret=secret,
            permanent=True,
            reached_provider=False,
        )
    if isinstance(exc, httpx.LocalProtocolError):
        # httpx names the offending header value here, and that value can be the key:
        # keep both the text and the chained exception out of the error (_cause).
        return provider_error(
            f"could not build the request to {provider_label}: the key or base URL "
            "contains characters that are not allowed in HTTP headers",
            secret=secret,
            permanent=True,
            reached_provider=False,
        )
    # Connection reset, server hung up mid-answer, proxy failure, bad gzip: the request
    # may have been processed, and trying again may work.
    return provider_error(
        f"connection to {provider_label} failed: {type(exc).__name__}: {exc}",
        secret=secret,
        permanent=False,
    )


def _cause(exc: Exception) -> Exception | None:
    # The chained exception of a header error may quote the key (see _transport_error).
    return None if isinstance(exc, httpx.LocalProtocolError) else exc


def post_events(
    url: str,
    *,
    headers: Mapping[str, str],
    payload: Mapping[str, Any],
    provider_label: str,
    secret: str,
    timeout: float | None = None,
) -> Iterator[ServerSentEvent]:
    """POST `payload` as JSON and yield the server-sent events of the 2xx answer.

    A generator: the request leaves on the first `next()`, and closing the generator
    closes the connection. `timeout` bounds the connection and each wait for the next
    bytes (not the whole stream). Raises ProviderError, while iterating, for transport
    failures (before or during the stream) and non-2xx answers.
    """
    client = get_client()
    limits = client.timeout if timeout is None else request_timeout(timeout)
    request = client.build_request(
        "POST",
        url,
        headers={"Accept": "text/event-stream", **headers},
        json=payload,
        timeout=limits,
    )
    try:
        response = client.send(request, stream=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _transport_error(exc, limits, provider_label, secret) from _cause(exc)
    try:
        if not 200 <= response.status_code < 300:
            try:
                response.read()
            except httpx.HTTPError as exc:
                raise _transport_error(exc, limits, provider_label, secret) from _cause(exc)
            raise _status_error(response, provider_label, secret)
        try:
            yield from sse_events(response.iter_lines())
        except httpx.HTTPError as exc:
            raise _transport_error(exc, limits, provider_label, secret) from _cause(exc)
    finally:
        response.close()


def sse_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Parse text/event-stream lines (https://html.spec.whatwg.org/#event-stream-
    interpretation) into events; comments and ids are skipped, an event cut off by the
    end of the stream is dropped."""
    name = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event=name, data="\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value


def request_timeout(seconds: float) -> httpx.Timeout:
    """The timeouts of one request with its own limit (a route candidate's): `seconds` for
    reading, writing and waiting for a pooled connection, and the shorter of it and
    ROSTER_PROVIDER_CONNECT_TIMEOUT for connecting.

    Raises ValueError unless `seconds` is a positive number.
    """
    if not seconds > 0:
        raise ValueError(f"a request timeout must be above 0 seconds, got {seconds!r}")
    connect = min(seconds, settings.ROSTER_PROVIDER_CONNECT_TIMEOUT)
    return httpx.Timeout(seconds, connect=connect)


def _timeout_error(
    exc: httpx.TimeoutException, timeout: httpx.Timeout, provider_label: str, secret: str
) -> ProviderError:
    if isinstance(exc, httpx.PoolTimeout):
        # Every pooled connection was busy for the whole wait: nothing was sent.
        return provider_error(
            f"no free connection to {provider_label} within {_seconds(timeout.pool)} s "
            "(raise ROSTER_HTTP_MAX_CONNECTIONS)",
            secret=secret,
            permanent=False,
            reached_provider=False,
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return provider_error(
            f"connecting to {provider_label} timed out after {_seconds(timeout.connect)} s",
            secret=secret,
            permanent=False,
            reached_provider=False,
        )
    # Read and write timeouts: the provider may be working on (and billing) the request.
    limit = timeout.write if isinstance(exc, httpx.WriteTimeout) else timeout.read
    return provider_error(
        f"{provider_label} timed out after {_seconds(limit)} s",
        secret=secret,
        permanent=False,
    )


def _seconds(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"


def _status_error(response: httpx.Response, provider_label: str, secret: str) -> ProviderError:
    status = response.status_code
    try:
        body: Any = parse_json(response.content)
    except ValueError:
        body = None
    detail = provider_error_message(body) or body_snippet(response.text)
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        detail = f"redirected to {location or '?'}; check the base URL"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is None:
        retry_after = _google_retry_delay(body)
    return provider_error(
        f"{provider_label} answered HTTP {status}: {detail or '(empty body)'}",
        secret=secret,
        permanent=not is_retryable_status(status),
        status_code=status,
        retry_after=retry_after,
    )


def is_retryable_status(status: int) -> bool:
    """Return True when an HTTP status says the same request may succeed later."""
    return status in RETRYABLE_STATUSES or status >= 500


# --- Errors ---------------------------------------------------------------------------------


def provider_error(
    message: str,
    *,
    secret: str,
    permanent: bool,
    status_code: int | None = None,
    retry_after: float | None = None,
    reached_provider: bool = True,
) -> ProviderError:
    """Return a ProviderError whose message has the secret masked, then is truncated.

    Every adapter error is built here: masking happens before truncation, so a key cut in
    half at the limit can never leave a readable prefix behind.
    """
    text = redact(message, secret)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3].rstrip() + "..."
    return ProviderError(
        text,
        permanent=permanent,
        status_code=status_code,
        retry_after=retry_after,
        reached_provider=reached_provider,
    )


def malformed_answer(provider_label: str, detail: str, *, secret: str) -> ProviderError:
    """Return the retryable error for a JSON answer without the fields its format promises."""
    return provider_error(
        f"malformed answer from {provider_label}: {detail}", secret=secret, permanent=False
    )


def stream_chunk(event: ServerSentEvent, *, provider_label: str, secret: str) -> dict[str, Any]:
    """Return a stream event's data as a JSON object. Raises a retryable ProviderError
    when it is not one (a malformed chunk)."""
    try:
        data = parse_json(event.data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise malformed_answer(
            provider_label,
            f"a stream chunk is not a JSON object: {body_snippet(event.data)}",
            secret=secret,
        )
    return data


def stream_truncated(provider_label: str, *, secret: str) -> ProviderError:
    """Return the retryable error for a stream that ended before its answer did."""
    return provider_error(
        f"the stream from {provider_label} ended before the answer was complete",
        secret=secret,
        permanent=False,
    )


class StreamReaderBase:
    """What every wire's stream reader (base.StreamReader) keeps as events arrive: the
    text so far, the finish reason, the model, the provider's response id and its raw
    usage; each wire's subclass reads its own events into them (`feed`) and says when the
    stream is complete."""

    def __init__(self, *, provider_label: str, secret: str) -> None:
        self.label = provider_label
        self.secret = secret
        self.finish_reason = ""
        self.model = ""
        self.response_id = ""
        self.raw_usage: dict[str, Any] = {}
        self._parts: list[str] = []  # joined once: a long answer is thousands of deltas
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def text(self) -> str:
        """The answer text so far."""
        return "".join(self._parts)

    def add_text(self, text: str) -> None:
        if text:
            self._parts.append(text)

    def failed(self, body: Any, *, what: str) -> ProviderError:
        """The retryable error for an error event or chunk (`what`) in the stream, with
        the provider's own words when it gave some."""
        reason = provider_error_message(body) or what
        return malformed_answer(self.label, f"the stream failed: {reason}", secret=self.secret)

    def completed(
        self,
        *,
        complete: bool,
        parse_usage: Callable[[dict[str, Any]], TokenUsage],
        cost: Decimal | None = None,
    ) -> ChatResult:
        """The whole answer, usage mapped by the wire's own `parse_usage`. Raises the
        retryable truncation error when the stream was not `complete`."""
        if not complete:
            raise stream_truncated(self.label, secret=self.secret)
        return ChatResult(
            text=self.text,
            usage=usage_or_none(parse_usage, self.raw_usage, provider_label=self.label),
            reported_cost=cost,
            model=self.model,
            finish_reason=self.finish_reason,
            provider_request_id=self.response_id,
            raw_usage=self.raw_usage,
        )


def provider_error_message(body: Any) -> str:
    """Return the provider's own error text from a decoded error body, or "".

    Understands OpenAI, OpenRouter, Anthropic and Gemini (`{"error": {"message"}}`, Gemini
    sometimes inside a one-element list), plain `{"error": "..."}` (Ollama, llama.cpp) and
    `{"message"}` / `{"detail"}` (vLLM, FastAPI servers).
    """
    if isinstance(body, list) and body:
        return provider_error_message(body[0])
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, str) and error.strip():
        return error.strip()
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip() + _openrouter_upstream(error)
    for key in ("message", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _openrouter_upstream(error: Mapping[str, Any]) -> str:
    # OpenRouter says "Provider returned error" and puts the upstream's words in metadata.
    metadata = error.get("metadata")
    if not isinstance(metadata, dict):
        return ""
    raw = metadata.get("raw")
    if not isinstance(raw, str) or not raw.strip():
        return ""
    name = metadata.get("provider_name")
    prefix = f"{name}: " if isinstance(name, str) and name else ""
    return f" ({prefix}{body_snippet(raw)})"


def body_snippet(text: str, limit: int = 300) -> str:
    """Return the start of a body on one line (HTML error pages, plain-text errors)."""
    return " ".join(text.split())[:limit]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return seconds to wait from a Retry-After header (delta-seconds or HTTP-date).

    Returns None when the header is absent or unreadable, and 0 for a date in the past.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _google_retry_delay(body: Any) -> float | None:
    # Gemini sends no Retry-After header on 429; its hint is a google.rpc.RetryInfo detail
    # with a protobuf duration such as "37s".
    if isinstance(body, list) and body:
        body = body[0]
    details = json_object(json_object(body).get("error")).get("details")
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


# --- Reading answers ------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


def parse_json(body: bytes | str) -> Any:
    """Decode JSON with every fractional number as an exact Decimal.

    Raises ValueError for invalid JSON, including NaN and Infinity (never valid money).
    """
    return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)


def json_object(value: Any) -> dict[str, Any]:
    """Return value when it is a JSON object, else {} (an absent or null field)."""
    return value if isinstance(value, dict) else {}


def token_count(value: Any) -> int:
    """Return a token count from JSON: absent/null is 0.

    Raises ValueError for anything that is not a whole number >= 0.
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"token count {value!r} is not a number")
    if value < 0 or value != int(value):
        raise ValueError(f"token count {value!r} is not a whole number >= 0")
    return int(value)


def reported_cost(value: Any) -> Decimal | None:
    """Return a provider-reported cost as an exact Decimal, or None when absent or unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal) and value.is_finite() and value >= 0:
        return value
    return None


def usage_or_none(
    parse: Callable[[dict[str, Any]], TokenUsage], raw: Any, *, provider_label: str
) -> TokenUsage | None:
    """Return `parse(raw)`, or None when the provider sent no usage or one we cannot read.

    The call already happened (and was billed by the provider), so an unreadable usage block
    must not fail it: billing falls back to its estimate and the raw block stays on the
    result for inspection.
    """
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        return parse(raw)
    except (ValueError, PricingError) as exc:
        logger.warning("unreadable usage from %s (%s): %r", provider_label, exc, raw)
        return None


# --- Endpoints ------------------------------------------------------------------------------


def call_headers(call_id: str) -> dict[str, str]:
    """Return the header carrying our call id, or {} when the call has none."""
    return {CALL_ID_HEADER: call_id} if call_id else {}


def api_url(base_url: str, path: str, *, version: str = "") -> str:
    """Join a base URL and an API path, adding the version prefix unless the base has it.

    "https://api.anthropic.com" and "https://api.anthropic.com/v1" both give
    ".../v1/messages" for path "messages", version "v1".
    """
    base = base_url.rstrip("/")
    if version and not base.endswith("/" + version):
        base = f"{base}/{version}"
    return f"{base}/{path.lstrip('/')}"


def host_of(base_url: str) -> str:
    """Return the lower-case host name of a URL ("" when it has none)."""
    return (urlsplit(base_url).hostname or "").lower()


# Public provider hosts by name, from the registry. Local servers share 127.0.0.1 and any
# port, so they are named by address rather than guessed from a default port.
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PROVIDER_NAMES: dict[str, str] = {
    host_of(url): ProviderKind(kind).label
    for kind, url in DEFAULT_BASE_URLS.items()
    if host_of(url) not in _LOCAL_HOSTS
}


def provider_label(base_url: str, *, wire: str) -> str:
    """Return how error messages name a provider: "OpenRouter", or "<wire> server at host".

    `wire` names the format when the host is not a known public provider (local servers,
    the sandbox, proxies).
    """
    host = host_of(base_url)
    if host in _PROVIDER_NAMES:
        return _PROVIDER_NAMES[host]
    return f"{wire} server at {urlsplit(base_url).netloc or base_url}"
