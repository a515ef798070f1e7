"""Per-credential rate limits: requests and tokens per minute, across every worker.

The algorithm is a sliding log. Each granted call is recorded with the time it was
granted and its tokens; a call is granted only if the calls granted in the last window,
plus this one, stay within the credential's limits. One place decides (one Redis server,
or one locked database row) on one clock, so every decision sees every earlier grant and
no window ever holds more than N requests. A fixed per-minute counter would let 2N through
around a minute boundary, and a token bucket (or GCRA) that allows a burst of N lets up to
2N - 1 through in some 60 seconds; the log costs one entry per call in the window, which is
small at the limits providers set per key.

The window is 60 seconds plus ROSTER_RATE_LIMIT_MARGIN_SECONDS: a request reaches the
provider a little after its grant (a ledger row is written in between, and the network
adds its share), and a provider counts arrivals, so slots are held slightly longer than a
minute to keep N per 60 seconds at the provider's end too.

Backends: Redis (one Lua script per decision, run atomically on the server's clock) when
the Celery broker is Redis; otherwise a row per credential in the database
(agents.models.RateWindow), updated under a row lock in a short transaction.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from agents.models import Credential
from agents.ratelimit.database_log import DatabaseRateLimiter
from agents.ratelimit.decision import (
    RateDecision,
    RateLimiter,
    RateLimitError,
    per_minute,
)
from agents.ratelimit.redis_log import KEY_PREFIX, RedisRateLimiter, redis_keys

__all__ = [
    "KEY_PREFIX",
    "DatabaseRateLimiter",
    "RateDecision",
    "RateLimitError",
    "RateLimiter",
    "RedisRateLimiter",
    "rate_limiter",
    "rate_slot_acquire",
    "rate_tokens_adjust",
    "rate_window_seconds",
    "redis_keys",
]

BACKENDS = ("auto", "redis", "database")
REDIS_SCHEMES = ("redis", "rediss")
UNLIMITED = RateDecision(granted=True, wait_seconds=0.0, reason="")


def rate_slot_acquire(*, credential: Credential, tokens: int) -> RateDecision:
    """Count one request and `tokens` (the call's worst case: prompt estimate plus
    max_tokens) against the credential's per-minute limits, if they fit; call it right
    before each provider request, outside any transaction.

    Returns a granted decision (everything was counted, atomically across all workers)
    or a refused one (nothing was counted) saying how long to wait and why. A credential
    without limits is granted without touching Redis or the database.
    Raises RateLimitError: permanent when `tokens` alone exceed the tokens per minute,
    transient when Redis is unreachable. Raises RuntimeError inside a transaction on the
    database backend (the count must be committed before the request leaves).
    """
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    if not credential.is_rate_limited:
        return UNLIMITED
    tpm = credential.tokens_per_minute
    if tpm is not None and tokens > tpm:
        raise RateLimitError(
            f"This call may use up to {tokens:,} tokens, more than credential "
            f"{credential.label!r} allows in a minute ({per_minute(tpm, 'token')}): lower "
            "the role's max tokens or raise the credential's limit.",
            permanent=True,
        )
    return rate_limiter().acquire(credential=credential, tokens=tokens)


def rate_tokens_adjust(
    *, credential: Credential, grant_id: str, granted_tokens: int, actual_tokens: int
) -> None:
    """Replace a granted call's worst-case tokens by what the provider reported, once
    it has answered (or 0 when it answered nothing).

    Only the granted call's own entry changes, and only while it is still in the window:
    an entry that has aged out no longer counts, so there is nothing to refund. A second
    adjustment of the same grant does nothing (the entry no longer holds
    `granted_tokens`). Counts never go negative. Does nothing for a credential without a
    tokens-per-minute limit. Raises RateLimitError (transient) when Redis is unreachable.
    """
    if granted_tokens < 0 or actual_tokens < 0:
        raise ValueError("token counts must be >= 0")
    if not grant_id or credential.tokens_per_minute is None or granted_tokens == actual_tokens:
        return
    rate_limiter().adjust(
        credential=credential,
        grant_id=grant_id,
        granted_tokens=granted_tokens,
        actual_tokens=actual_tokens,
    )


def rate_window_seconds() -> float:
    """How long a grant is held: the limits' minute (60 seconds, which only tests
    shorten with ROSTER_RATE_LIMIT_WINDOW_SECONDS) plus ROSTER_RATE_LIMIT_MARGIN_SECONDS."""
    minute: float = settings.ROSTER_RATE_LIMIT_WINDOW_SECONDS
    return minute + settings.ROSTER_RATE_LIMIT_MARGIN_SECONDS


def rate_limiter() -> RateLimiter:
    """The limiter the settings choose: ROSTER_RATE_LIMIT_BACKEND, where "auto" means
    Redis when a Redis URL is known (ROSTER_RATE_LIMIT_REDIS_URL, else a redis:// or
    rediss:// CELERY_BROKER_URL) and the database otherwise.

    Raises ImproperlyConfigured for an unknown backend, or "redis" without a Redis URL.
    """
    backend = settings.ROSTER_RATE_LIMIT_BACKEND
    if backend not in BACKENDS:
        raise ImproperlyConfigured(
            f"ROSTER_RATE_LIMIT_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}"
        )
    window = rate_window_seconds()
    redis_url = settings.ROSTER_RATE_LIMIT_REDIS_URL
    if not redis_url and urlsplit(settings.CELERY_BROKER_URL).scheme in REDIS_SCHEMES:
        redis_url = settings.CELERY_BROKER_URL
    if backend == "database" or (backend == "auto" and not redis_url):
        return DatabaseRateLimiter(window_seconds=window)
    if not redis_url:
        raise ImproperlyConfigured(
            "ROSTER_RATE_LIMIT_BACKEND is 'redis' but the broker is not Redis: set "
            "ROSTER_RATE_LIMIT_REDIS_URL."
        )
    return RedisRateLimiter(url=redis_url, window_seconds=window)
