"""The execution side of per-credential rate limits (agents.ratelimit).

A slot is asked for right before each provider request, outside any transaction. A
refused task does not hold a worker thread while its slot frees: it goes back to the
queue and is dispatched again when the limiter says the slot frees, plus a little jitter
(tasks refused together then do not all come back at the same instant). Waiting is not
an execution lost to a dead worker, so the claim that started it is taken back and the
sweeper's ROSTER_MAX_EXECUTIONS does not count it. Once the provider has answered, the
call's worst case in the window is replaced by the tokens it used.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.models import Credential
from agents.providers.base import ProviderError
from agents.ratelimit import (
    RateLimitError,
    rate_slot_acquire,
    rate_tokens_adjust,
    rate_window_seconds,
)
from agents.routing import Decision
from billing.pricing import TokenUsage
from office.models import Task, TaskStatus
from office.services import task_dispatch

logger = logging.getLogger(__name__)

# Decision outcomes of the `rate_limit` routing step.
WAIT = "wait"  # the limit is reached: back to the queue until a slot frees
UNAVAILABLE = "unavailable"  # the limiter cannot decide (Redis down): back to the queue


@dataclass(frozen=True)
class RateGrant:
    """A slot granted for one call, with the worst case in tokens it counted."""

    credential: Credential
    grant_id: str
    tokens: int


@dataclass(frozen=True)
class RateWait:
    """No slot now: try again in `countdown` seconds (the limiter's wait plus jitter).
    `outcome` is WAIT or UNAVAILABLE; `reason` says which limit, or what failed."""

    outcome: str
    reason: str
    wait_seconds: float
    countdown: float


def rate_slot_take(*, credential: Credential, tokens: int) -> RateGrant | RateWait:
    """Ask for a slot for one call that may use up to `tokens`. Returns the grant, or how
    long to wait when the limit is reached or the limiter is unreachable.

    Raises RateLimitError (permanent) when the call can never fit the credential's
    tokens per minute.
    """
    try:
        decision = rate_slot_acquire(credential=credential, tokens=tokens)
    except RateLimitError as exc:
        if exc.permanent:
            raise
        delay: float = settings.ROSTER_RATE_LIMIT_UNAVAILABLE_DELAY
        return RateWait(
            outcome=UNAVAILABLE,
            reason=exc.message,
            wait_seconds=delay,
            countdown=_jittered(delay),
        )
    if decision.granted:
        return RateGrant(credential=credential, grant_id=decision.grant_id, tokens=tokens)
    return RateWait(
        outcome=WAIT,
        reason=decision.reason,
        wait_seconds=decision.wait_seconds,
        countdown=_jittered(decision.wait_seconds),
    )


def rate_slot_for_call(
    *, credential: Credential, tokens: int, in_thread: bool
) -> RateGrant | RateWait:
    """A slot for one call that may use up to `tokens` (its prompt estimate plus
    max_tokens, as providers count a request against tokens per minute), or how long the
    task must wait for one. With `in_thread`, a refusal is waited out here, up to one
    window in all, before it is returned.

    Raises RateLimitError (permanent) when the call can never fit.
    """
    gate = rate_slot_take(credential=credential, tokens=tokens)
    waited = 0.0
    while (
        in_thread
        and isinstance(gate, RateWait)
        # A refusal never waits longer than a window, so the first is always waited out.
        and waited + gate.wait_seconds <= rate_window_seconds()
    ):
        time.sleep(gate.countdown)
        waited += gate.countdown
        gate = rate_slot_take(credential=credential, tokens=tokens)
    return gate


def rate_wait_decision(wait: RateWait, *, model: str, slot: str, credential: str) -> Decision:
    """The routing decision that records a wait for a rate limit slot."""
    then = f"Back in the queue; tries again in {wait.countdown:.1f} s."
    why = f"{wait.reason}. {then}" if wait.outcome == WAIT else f"{wait.reason} {then}"
    return Decision(
        step="rate_limit",
        outcome=wait.outcome,
        why=why,
        model=model,
        slot=slot,
        data={
            "credential": credential,
            "wait_seconds": wait.wait_seconds,
            "countdown": round(wait.countdown, 3),
        },
    )


def tokens_after_failure(exc: ProviderError) -> int | None:
    """Tokens a failed call used at the provider: none when it never got there or
    answered with an error; unknown (None) when it may still be working on it (a
    timeout, a connection lost mid-answer)."""
    if not exc.reached_provider or exc.status_code is not None:
        return 0
    return None


def rate_tokens_settle(grant: RateGrant, *, used: int | None) -> None:
    """Replace a granted call's worst case by the tokens it `used` (None: unknown, the
    worst case stays counted). Call it outside any transaction.

    Never raises: a correction that fails leaves the worst case counted, which errs on
    the safe side until the call leaves the window.
    """
    if used is None or not grant.grant_id:
        return
    try:
        rate_tokens_adjust(
            credential=grant.credential,
            grant_id=grant.grant_id,
            granted_tokens=grant.tokens,
            actual_tokens=used,
        )
    except RateLimitError as exc:
        logger.warning("rate window not corrected for %s: %s", grant.credential.label, exc)


def tokens_used(usage: TokenUsage | None) -> int | None:
    """What a provider counts against tokens per minute: every input and output token
    it reported (None when it reported no usage)."""
    if usage is None:
        return None
    return usage.input_tokens + usage.output_tokens


def task_requeue_rate_limited(
    *, task_id: int, worker_id: str, decisions: list[dict[str, Any]], countdown: float
) -> bool:
    """Put a task this worker is running back in the queue, with its routing decisions,
    and dispatch it again in `countdown` seconds once that is committed. The execution
    that ends here is not counted (waiting is not a lost execution).

    Returns False, changing nothing, when the worker no longer holds the task.
    """
    due = timezone.now() + timedelta(seconds=countdown)
    with transaction.atomic():
        requeued = (
            Task.objects.filter(pk=task_id, status=TaskStatus.RUNNING, claimed_by=worker_id).update(
                status=TaskStatus.QUEUED,
                claimed_by="",
                executions=F("executions") - 1,
                routing_decisions=decisions,
                # Due when the slot frees: the sweeper's "lost in the queue" clock starts then.
                dispatched_at=due,
            )
            == 1
        )
        if requeued:
            transaction.on_commit(lambda: task_dispatch(task_id=task_id, countdown=countdown))
    return requeued


def _jittered(seconds: float) -> float:
    # Up to a tenth more (and a fraction of a second): tasks refused together spread out.
    return seconds + random.uniform(0, seconds / 10 + 0.25)
