"""What the rate limiter answers, shared by its backends."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from agents.models import Credential

# The limits are per minute; the backends hold each grant for this plus the margin.
WINDOW_SECONDS = 60.0
MICROS = 1_000_000


@dataclass(frozen=True)
class RateDecision:
    """The answer to "may this call go to the provider now?".

    `wait_seconds` is 0 when granted; when refused it is how long until enough of the
    window's earlier calls have aged out for this call to fit, if nothing else is granted
    meanwhile (a lower bound: another worker may take the slot first, so ask again then).
    `grant_id` identifies a granted call for rate_tokens_adjust ("" for a credential
    without limits, whose calls are not recorded).
    """

    granted: bool
    wait_seconds: float
    reason: str
    grant_id: str = ""


class RateLimitError(Exception):
    """The limiter cannot decide. `permanent` is True when asking again cannot help (the
    call needs more tokens than the credential allows per minute) and False when it may
    (the rate limit store is unreachable)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class RateLimiter(Protocol):
    def acquire(self, *, credential: Credential, tokens: int) -> RateDecision: ...

    def adjust(
        self, *, credential: Credential, grant_id: str, granted_tokens: int, actual_tokens: int
    ) -> None: ...


def rate_refusal(
    *,
    credential: Credential,
    request_wait_us: int,
    token_wait_us: int,
    used_tokens: int,
    tokens: int,
) -> RateDecision:
    """A refusal that waits for the later of the two (microsecond) waits, 0 meaning that
    limit was not reached, and names each limit reached."""
    reasons = []
    if request_wait_us:
        reasons.append(
            f"{per_minute(credential.requests_per_minute or 0, 'request')} reached for "
            f"credential {credential.label!r}"
        )
    if token_wait_us:
        reasons.append(
            f"{per_minute(credential.tokens_per_minute or 0, 'token')} reached for "
            f"credential {credential.label!r} ({used_tokens:,} counted in the last minute, "
            f"this call may use up to {tokens:,})"
        )
    # Rounded up to the millisecond: a caller that waits this long is never early.
    wait = math.ceil(max(request_wait_us, token_wait_us) / 1000) / 1000
    return RateDecision(granted=False, wait_seconds=wait, reason="; ".join(reasons))


def per_minute(limit: int, unit: str) -> str:
    return f"{limit:,} {unit}{'' if limit == 1 else 's'}/minute"
