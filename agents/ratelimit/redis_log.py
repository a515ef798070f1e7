"""The Redis backend of the rate limiter: the sliding log in a sorted set, every
decision one Lua script that the server runs atomically on its own clock."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from redis.commands.core import Script

from agents.models import Credential
from agents.ratelimit.decision import (
    MICROS,
    WINDOW_SECONDS,
    RateDecision,
    RateLimitError,
    rate_refusal,
)

KEY_PREFIX = "roster:ratelimit"

# Per credential, two keys: `<prefix>:<id>:req`, a sorted set of grant ids scored by their
# grant time in microseconds (the log), and `<prefix>:<id>:tok`, a hash of grant id ->
# tokens plus the field "total", their sum (grant ids are hex, so never "total"). Both
# expire one window after the last decision, so an idle credential leaves nothing behind.
# Times come from the server (TIME), so the workers' clocks do not matter.
_PRUNE_LUA = """
local window = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cutoff = now - window
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local total = tonumber(redis.call('HGET', KEYS[2], 'total') or '0')
for _, id in ipairs(expired) do
  total = total - (tonumber(redis.call('HGET', KEYS[2], id)) or 0)
  redis.call('HDEL', KEYS[2], id)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  if total < 0 then total = 0 end
  redis.call('HSET', KEYS[2], 'total', total)
end
"""

# ARGV: window (µs), requests/minute, tokens/minute (0: no limit), tokens, grant id.
# Returns {granted (0/1), µs until a request slot frees, µs until enough tokens free,
# tokens counted in the window before this call}.
_ACQUIRE_LUA = (
    _PRUNE_LUA
    + """
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local count = redis.call('ZCARD', KEYS[1])
local request_wait = 0
if rpm > 0 and count >= rpm then
  -- The (count - rpm + 1)th oldest grant must age out before one more request fits.
  local entry = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  request_wait = tonumber(entry[2]) + window - now
end
local token_wait = 0
if tpm > 0 and total + tokens > tpm then
  local excess = total + tokens - tpm
  token_wait = window
  local log = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #log, 2 do
    excess = excess - (tonumber(redis.call('HGET', KEYS[2], log[i])) or 0)
    if excess <= 0 then
      token_wait = tonumber(log[i + 1]) + window - now
      break
    end
  end
end
local granted = 0
if request_wait == 0 and token_wait == 0 then
  granted = 1
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('HSET', KEYS[2], ARGV[5], tokens, 'total', total + tokens)
end
local ttl = math.ceil(window / 1000) + 1000
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {granted, request_wait, token_wait, total}
"""
)

# ARGV: window (µs), grant id, granted tokens, actual tokens. Returns 1 if adjusted.
_ADJUST_LUA = """
local window = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local granted_at = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not granted_at or tonumber(granted_at) <= now - window then return 0 end
local counted = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
if counted ~= tonumber(ARGV[3]) then return 0 end
local total = tonumber(redis.call('HGET', KEYS[2], 'total') or '0') - counted + tonumber(ARGV[4])
if total < 0 then total = 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4], 'total', total)
return 1
"""


@dataclass(frozen=True)
class _RedisScripts:
    acquire: Script
    adjust: Script


@functools.lru_cache(maxsize=8)
def _redis_scripts(url: str) -> _RedisScripts:
    """The scripts bound to one client per URL and process (the client is thread-safe
    and keeps its own connection pool; connecting waits for the first call)."""
    # Short timeouts: a worker waiting on a dead Redis should fail its check quickly.
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    # A registered script runs with EVALSHA and falls back to EVAL when the server does
    # not hold it yet (first use, or after a restart).
    return _RedisScripts(
        acquire=client.register_script(_ACQUIRE_LUA),
        adjust=client.register_script(_ADJUST_LUA),
    )


def redis_keys(*, credential_id: int) -> list[str]:
    """The Redis keys holding one credential's window: the log and its token counts."""
    return [f"{KEY_PREFIX}:{credential_id}:req", f"{KEY_PREFIX}:{credential_id}:tok"]


class RedisRateLimiter:
    """Sliding log in Redis: each decision is one atomic script on the server."""

    def __init__(self, *, url: str, window_seconds: float = WINDOW_SECONDS) -> None:
        self.url = url
        self.window_us = round(window_seconds * MICROS)

    def acquire(self, *, credential: Credential, tokens: int) -> RateDecision:
        grant_id = secrets.token_hex(8)
        with self._reachable():
            granted, request_wait, token_wait, used = _redis_scripts(self.url).acquire(
                keys=redis_keys(credential_id=credential.pk),
                args=[
                    self.window_us,
                    credential.requests_per_minute or 0,
                    credential.tokens_per_minute or 0,
                    tokens,
                    grant_id,
                ],
            )
        if granted:
            return RateDecision(granted=True, wait_seconds=0.0, reason="", grant_id=grant_id)
        return rate_refusal(
            credential=credential,
            request_wait_us=request_wait,
            token_wait_us=token_wait,
            used_tokens=used,
            tokens=tokens,
        )

    def adjust(
        self, *, credential: Credential, grant_id: str, granted_tokens: int, actual_tokens: int
    ) -> None:
        with self._reachable():
            _redis_scripts(self.url).adjust(
                keys=redis_keys(credential_id=credential.pk),
                args=[self.window_us, grant_id, granted_tokens, actual_tokens],
            )

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn Redis failures into a RateLimitError that names the server (never the
        password a URL may hold): without Redis no call may go out unlimited."""
        try:
            yield
        except redis.RedisError as exc:
            raise RateLimitError(
                f"The rate limiter cannot reach Redis at {_redis_location(self.url)}: {exc}",
                permanent=False,
            ) from exc


def _redis_location(url: str) -> str:
    """host:port/db of a Redis URL, without the password it may hold."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"
