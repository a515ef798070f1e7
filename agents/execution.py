"""Running one task: claim it, route it, call the providers, bill every attempt, record
the outcome and every routing decision.

The rules this module keeps (STYLE.md 5 and 6):
- the claim is a conditional update, so a re-delivered message never runs a task twice;
- the ledger row is committed before the request leaves, and no transaction is open
  during a network call;
- the answering call's row is settled in a short transaction of its own (on PostgreSQL
  written together with the settlements this worker's other threads make at the same
  moment: billing.settle_postgres), then the task's outcome is recorded. A worker that
  dies between the two leaves a settled call on a running task, which the sweeper
  requeues, as it does for a worker that dies between the answer and the settlement.

Routing (agents.routing) turns the role's policy into an ordered list of candidates;
this module walks it: each candidate gets its own attempts, a failure moves on to the
next one, an escalation's cheap answer is checked (agents.escalation) before it is
accepted, and a `downgrade` budget switches the rest of the route to the over-budget
model.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.escalation import (
    SELF_CHECK_INSTRUCTION,
    AnswerReading,
    Verdict,
    answer_check,
    answer_read,
    rules_ask_self_assessment,
)
from agents.failpoints import failpoint
from agents.models import Credential, RoleBinding, RoutingPolicy
from agents.preparation import prepared_classifier, prompt_messages
from agents.providers.base import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    Endpoint,
    ProviderError,
)
from agents.providers.registry import adapter_for, default_base_url, upstream_model_name
from agents.rate_gate import (
    RateGrant,
    RateWait,
    rate_slot_for_call,
    rate_tokens_settle,
    rate_wait_decision,
    task_requeue_rate_limited,
    tokens_after_failure,
    tokens_used,
)
from agents.ratelimit import RateLimitError
from agents.redaction import redact
from agents.routing import (
    Candidate,
    Decision,
    Route,
    RouteError,
    route_over_budget,
    route_plan,
)
from agents.runtime import binding_for_role, config_pinned, price_in_force
from agents.secrets import SecretError, secret_decrypt
from agents.workflows import spec_execute_start, workflow_step_finished
from billing.budgets import BudgetExceeded
from billing.estimation import prompt_tokens_bound, prompt_tokens_estimate
from billing.ledger import (
    CallTarget,
    LedgerError,
    usage_close_abandoned,
    usage_estimate,
    usage_fail,
    usage_open,
    usage_settle,
)
from billing.models import BudgetAction, Usage
from office.models import Task, TaskKind, TaskStatus

logger = logging.getLogger(__name__)

# Finish reasons that say the answer stopped at max_tokens (OpenAI, Anthropic, Gemini).
TRUNCATED_FINISH_REASONS = frozenset({"length", "max_tokens", "MAX_TOKENS"})


R = TypeVar("R")


class ExecutionError(Exception):
    """A call that cannot be made, with the reason people will read on the task."""


@dataclass(frozen=True)
class CallPlan:
    target: CallTarget
    endpoint: Endpoint
    request: ChatRequest
    credential: Credential


@dataclass(frozen=True)
class CallAnswer(Generic[R]):
    """A provider's answer (a ChatResult, or the opened stream of the synchronous
    endpoint: agents.proxy); its ledger row is still pending."""

    plan: CallPlan
    usage: Usage
    result: R
    latency_ms: int
    grant: RateGrant


@dataclass(frozen=True)
class CallFailure:
    """A candidate that gave no answer; `message` is the readable, redacted reason.
    `outcome` is "skipped" when no call could be made at all."""

    message: str
    outcome: str = "failed"


@dataclass(frozen=True)
class CallRefused:
    """A candidate's call refused by a hard budget before it left."""

    exc: BudgetExceeded


@dataclass(frozen=True)
class CallRateLimited:
    """A candidate's call held back by its credential's rate limit: the task waits."""

    wait: RateWait


@dataclass(frozen=True)
class CallReleased:
    """The worker no longer holds the task (it was cancelled, or the sweeper gave it to
    another worker): no further call is made."""

    status: str


class AttemptCounter(Protocol):
    """Who counts a task's provider attempts (the ledger's `attempt`)."""

    attempts_made: int


@dataclass
class _Run:
    """One execution of a task: who runs it, its attempt counter, its decisions."""

    task: Task
    worker_id: str
    binding: RoleBinding
    decisions: list[dict[str, Any]]
    attempts_made: int = 0
    downgraded: bool = False
    # A checked answer that failed its check, kept as the result if nothing better comes.
    held_text: str = ""
    held_reasons: tuple[str, ...] = ()

    def decide(self, decision: Decision) -> None:
        self.decisions.append(decision.as_json(execution=self.task.executions))


@dataclass
class _Walk:
    """What happened along one route, for the final error message."""

    failures: list[tuple[Candidate, str]] = field(default_factory=list)


@config_pinned()  # the binding and every attempt's price from one reading of the config
def task_execute(*, task_id: int, worker_id: str) -> str:
    """Run a queued task to its end. Returns the task's final (or current) status.

    Safe to call twice for the same task: only the caller whose conditional update moves
    the task from queued to running does any work.
    """
    claimed = (
        Task.objects.filter(pk=task_id, status=TaskStatus.QUEUED)
        .exclude(kind=TaskKind.SPEC_EXECUTE)
        .update(
            status=TaskStatus.RUNNING,
            claimed_by=worker_id,
            started_at=timezone.now(),
            executions=F("executions") + 1,
        )
    )
    if claimed != 1:
        found = Task.objects.filter(pk=task_id).values_list("status", "kind").first()
        status, kind = found or ("missing", "")
        if kind == TaskKind.SPEC_EXECUTE:  # no call of its own: its steps make them
            return spec_execute_start(task_id=task_id)
        logger.info("task %s not claimed (status %s): nothing to do", task_id, status)
        return status

    failpoint("task_claimed")
    task = Task.objects.select_related("role").get(pk=task_id)
    # Calls a dead worker left pending stay in the ledger, priced as estimates.
    usage_close_abandoned(task_id=task.pk)
    # A re-execution (the previous worker died) keeps the earlier decisions and adds its own.
    decisions = list(task.routing_decisions or [])
    binding = binding_for_role(role=task.role)
    if binding is None:
        error = f"The role {task.role.slug!r} has no model bound to it."
        refused = Decision(step="route", outcome="refused", why=error)
        decisions.append(refused.as_json(execution=task.executions))
        return task_finish(
            task=task,
            worker_id=worker_id,
            decisions=decisions,
            status=TaskStatus.FAILED,
            error=error,
        )
    run = _Run(task=task, worker_id=worker_id, binding=binding, decisions=decisions)
    try:
        # The helper's complexity reading, if preparation made one (tiered roles).
        route = route_plan(task=task, binding=binding, classify=prepared_classifier(task=task))
    except RouteError as exc:
        run.decide(Decision(step="route", outcome="refused", why=str(exc)))
        return _end(run, status=TaskStatus.FAILED, error=str(exc))
    for decision in route.decisions:
        run.decide(decision)
    return _walk(run, route)


def _walk(run: _Run, route: Route) -> str:
    """Call the route's candidates in order until one answers acceptably, a budget stops
    the task, or none is left. Returns the task's status."""
    walk = _Walk()
    candidates = route.candidates
    for index, candidate in enumerate(candidates):
        more = index < len(candidates) - 1
        ask_self_check = candidate.checked and rules_ask_self_assessment(route.rules)
        try:
            plan = _plan(run.task, run.binding, candidate, self_check=ask_self_check)
        except ExecutionError as exc:
            _candidate_gave_up(run, walk, candidate, str(exc), more=more, outcome="skipped")
            continue
        outcome = _call_candidate(run, plan, attempts=candidate.attempts)
        if isinstance(outcome, CallReleased):
            logger.info("task %s is %s: no further provider call", run.task.pk, outcome.status)
            return outcome.status
        if isinstance(outcome, CallRateLimited):
            return _rate_limited(run, candidate, outcome.wait)
        if isinstance(outcome, CallRefused):
            return _budget_refused(run, outcome.exc, candidate, rest=candidates[index + 1 :])
        if isinstance(outcome, CallFailure):
            _candidate_gave_up(
                run, walk, candidate, outcome.message, more=more, outcome=outcome.outcome
            )
            continue
        text = outcome.result.text
        if candidate.checked:
            reading = (
                answer_read(text=text)
                if ask_self_check
                else AnswerReading(text=text, self_assessment=None, self_check_problem="not asked")
            )
            verdict = answer_check(
                reading=reading,
                rules=route.rules,
                truncated=outcome.result.finish_reason in TRUNCATED_FINISH_REASONS,
            )
            run.decide(_check_decision(candidate, reading, verdict, escalate=more))
            if not verdict.good and more:
                run.decide(
                    candidate_decision(
                        candidate, "rejected", "Its answer failed the check; escalating."
                    )
                )
                run.held_text, run.held_reasons = reading.text, verdict.failures
                _settle(outcome)
                _record(run)
                rate_tokens_settle(outcome.grant, used=tokens_used(outcome.result.usage))
                continue
            text = reading.text
        run.decide(
            candidate_decision(candidate, "answered", _answered_why(candidate, index, route))
        )
        if candidate.checked:
            for rest in candidates[index + 1 :]:
                run.decide(
                    candidate_decision(rest, "skipped", "Not needed: the cheap answer passed.")
                )
        _settle(outcome)
        status = _end(
            run,
            status=TaskStatus.DONE,
            result=text,
            model_label=model_label(
                candidate=candidate,
                index=index,
                route=route,
                downgraded=run.downgraded,
                rejected=bool(run.held_reasons),
            ),
        )
        rate_tokens_settle(outcome.grant, used=tokens_used(outcome.result.usage))
        return status
    return _end(run, status=TaskStatus.FAILED, error=_exhausted(run, walk), result=run.held_text)


def _candidate_gave_up(
    run: _Run,
    walk: _Walk,
    candidate: Candidate,
    message: str,
    *,
    more: bool,
    outcome: str = "failed",
) -> None:
    walk.failures.append((candidate, message))
    then = " Moving on to the next candidate." if more else ""
    run.decide(candidate_decision(candidate, outcome, message + then))
    if more:
        _record(run)  # the task page shows the route's progress while the next call runs


def _budget_refused(
    run: _Run, exc: BudgetExceeded, candidate: Candidate, *, rest: tuple[Candidate, ...]
) -> str:
    """A hard budget refused a candidate's call: stop (block), or switch once to the
    over-budget model (downgrade) instead of it and of the `rest` of the route."""

    def abandon_rest(why: str) -> None:
        for later in rest:
            run.decide(candidate_decision(later, "abandoned", why))

    if exc.action != BudgetAction.DOWNGRADE or run.downgraded:
        run.decide(
            candidate_decision(candidate, "abandoned", f"Refused by a budget: {exc.message}")
        )
        abandon_rest("A budget stopped the route before it.")
        return _end(run, status=TaskStatus.OVER_BUDGET, error=exc.message, result=run.held_text)
    over_budget = downgrade_target(
        binding=run.binding,
        plan=lambda target: _plan(run.task, run.binding, target, self_check=False),
    )
    if isinstance(over_budget, str):
        message = f"{exc.message} Not downgraded: {over_budget}."
        run.decide(candidate_decision(candidate, "abandoned", message))
        abandon_rest("A budget stopped the route before it.")
        return _end(run, status=TaskStatus.OVER_BUDGET, error=message, result=run.held_text)
    run.downgraded = True
    logger.info("task %s downgraded to %s: %s", run.task.pk, over_budget.model, exc)
    run.decide(
        Decision(
            step="downgrade",
            outcome="over_budget_model",
            why=f"{exc.message} The over-budget model answers instead of {candidate.label}.",
            model=over_budget.model.slug,
            slot=over_budget.slot,
        )
    )
    abandon_rest("Not called: the task was downgraded to the over-budget model.")
    return _walk(run, Route(policy="downgrade", candidates=(over_budget,), decisions=()))


def downgrade_target(
    *, binding: RoleBinding, plan: Callable[[Candidate], object]
) -> Candidate | str:
    """The over-budget model a `downgrade` budget switches to, or why there is none: no
    such model configured, or `plan` (the caller's call planning) raised ExecutionError
    for it. Checked before switching, so a refusal stays a budget refusal."""
    over_budget = route_over_budget(binding=binding)
    if over_budget is None:
        return "no over-budget model is configured for this role"
    try:
        plan(over_budget)
    except ExecutionError as why:
        return str(why)
    return over_budget


def _plan(task: Task, binding: RoleBinding, candidate: Candidate, *, self_check: bool) -> CallPlan:
    """The call to one candidate. Raises ExecutionError when it cannot be made."""
    system = task.role.system_prompt
    if self_check:
        system = f"{system}\n\n{SELF_CHECK_INSTRUCTION}" if system else SELF_CHECK_INSTRUCTION
    return call_plan(
        candidate=candidate,
        # The thread's history, the pages' text and the prompt, as preparation assembled
        # them (agents.preparation).
        messages=prompt_messages(task=task),
        max_tokens=min(task.max_tokens or binding.max_tokens, settings.ROSTER_MAX_TOKENS_LIMIT),
        system=system,
        prefix=task.prefix,
    )


def call_plan(
    *,
    candidate: Candidate,
    messages: tuple[ChatMessage, ...],
    max_tokens: int,
    system: str,
    prefix: str,
) -> CallPlan:
    """The call to one route candidate with these messages: its credential's key
    decrypted, its base URL and upstream model name resolved.

    Returns the plan. Raises ExecutionError when the call cannot be made (a key that
    cannot be decrypted, a credential without the base URL its provider needs).
    """
    credential = candidate.credential
    try:
        api_key = secret_decrypt(credential.secret_encrypted)
    except SecretError as exc:
        raise ExecutionError(f"Credential {credential.label!r}: {exc}") from None
    base_url = credential.base_url or default_base_url(credential.provider)
    if not base_url:
        raise ExecutionError(
            f"Credential {credential.label!r} needs a base URL for {credential.provider}."
        )
    upstream = candidate.upstream_model or upstream_model_name(
        provider=credential.provider, catalog_slug=candidate.model.slug
    )
    request = ChatRequest(
        model=upstream,
        messages=messages,
        max_tokens=max_tokens,
        system=system,
        prefix=prefix,
        timeout=candidate.timeout,
    )
    return CallPlan(
        credential=credential,
        target=CallTarget(
            model=candidate.model,
            provider=credential.provider,
            credential_id=credential.pk,
            credential_label=credential.label,
            upstream_model=upstream,
        ),
        endpoint=Endpoint(base_url=base_url.rstrip("/"), api_key=api_key),
        request=request,
    )


def _call_candidate(
    run: _Run, plan: CallPlan, *, attempts: int
) -> CallAnswer[ChatResult] | CallFailure | CallRefused | CallRateLimited | CallReleased:
    """Call one candidate until it answers, fails permanently, runs out of attempts, a
    budget refuses or its rate limit holds it back (candidate_call)."""
    adapter = adapter_for(plan.target.provider)
    return candidate_call(
        task=run.task,
        plan=plan,
        attempts=attempts,
        counter=run,
        # Cancelling a task (office.services.task_cancel) stops its next call, not only
        # its next task: checked before every attempt, one indexed read.
        released=lambda: _released(run),
        # A requeued task starts its route over and would pay again for an escalation's
        # rejected cheap answer: wait for the slot here instead.
        wait_for_rate_slot=bool(run.held_text),
        send=lambda request: adapter.complete(endpoint=plan.endpoint, request=request),
    )


def candidate_call(
    *,
    task: Task,
    plan: CallPlan,
    attempts: int,
    counter: AttemptCounter,
    send: Callable[[ChatRequest], R],
    released: Callable[[], CallReleased | None] = lambda: None,
    wait_for_rate_slot: bool = False,
) -> CallAnswer[R] | CallFailure | CallRefused | CallRateLimited | CallReleased:
    """Call one candidate with `send` (the adapter call, given the request with its call
    id) until it answers, fails permanently, runs out of `attempts`, a budget refuses,
    its rate limit holds it back or `released` says the caller no longer holds the task.

    Every call is a ledger row, opened (budget reserved) before it leaves; failed ones
    are closed at cost 0 here, an answer's row is left pending for the caller to settle.
    `counter.attempts_made` numbers the task's attempts. Never raises ProviderError.
    """
    # The request does not change between attempts: measure its prompt once.
    texts = prompt_texts(plan.request)
    estimate = prompt_tokens_estimate(*texts)
    bound = prompt_tokens_bound(*texts)
    tries = 0
    while True:
        tries += 1
        if (gone := released()) is not None:
            return gone
        try:
            gate = rate_slot_for_call(
                credential=plan.credential,
                tokens=estimate + plan.request.max_tokens,
                in_thread=wait_for_rate_slot,
            )
        except RateLimitError as exc:  # the call can never fit this credential's limit
            return CallFailure(exc.message, outcome="skipped")
        if isinstance(gate, RateWait):
            return CallRateLimited(gate)
        counter.attempts_made += 1
        now = timezone.now()
        try:
            usage = usage_open(
                task=task,
                target=plan.target,
                attempt=counter.attempts_made,
                estimated_input_tokens=estimate,
                input_tokens_bound=bound,
                max_output_tokens=plan.request.max_tokens,
                now=now,
                price=price_in_force(model=plan.target.model, at=now),
            )
        except BudgetExceeded as exc:
            counter.attempts_made -= 1  # no call was made
            rate_tokens_settle(gate, used=0)
            return CallRefused(exc)
        except LedgerError as exc:
            counter.attempts_made -= 1
            rate_tokens_settle(gate, used=0)
            return CallFailure(str(exc), outcome="skipped")
        request = replace(plan.request, call_id=usage.call_id)
        failpoint("call_opened")
        started = time.monotonic()
        try:
            result = send(request)
        except ProviderError as exc:
            latency_ms = int((time.monotonic() - started) * 1000)
            message = call_fail(usage=usage, plan=plan, exc=exc, latency_ms=latency_ms)
            rate_tokens_settle(gate, used=tokens_after_failure(exc))
            wait = _retry_wait(exc, attempt=tries)
            if exc.permanent or tries >= attempts or wait is None:
                reason = message if exc.permanent else _gave_up(message, tries, exc, wait)
                return CallFailure(reason)
            logger.info(
                "task %s attempt %s failed (%s); retrying in %.1fs",
                task.pk,
                counter.attempts_made,
                message,
                wait,
            )
            time.sleep(wait)
            continue
        latency_ms = int((time.monotonic() - started) * 1000)
        failpoint("call_answered")
        return CallAnswer(plan=plan, usage=usage, result=result, latency_ms=latency_ms, grant=gate)


def call_fail(*, usage: Usage, plan: CallPlan, exc: ProviderError, latency_ms: int) -> str:
    """Close a failed call's pending ledger row with the provider's error: failed (cost 0)
    when the provider refused it or never got it, estimated at its worst case when the
    answer was lost after the request reached the provider (it may have billed it).
    Returns the error message with the credential's key masked out."""
    message = redact(exc.message, plan.endpoint.api_key)
    if exc.may_be_billed:
        usage_estimate(
            usage=usage,
            error=f"{message} (the provider may have billed it: estimated at its worst case)",
            http_status=exc.status_code,
            latency_ms=latency_ms,
        )
    else:
        usage_fail(usage=usage, error=message, http_status=exc.status_code, latency_ms=latency_ms)
    return message


def _released(run: _Run) -> CallReleased | None:
    """None while this worker still holds the task; else what became of it."""
    status = Task.objects.filter(pk=run.task.pk).values_list("status", "claimed_by").first()
    if status is not None and status == (TaskStatus.RUNNING, run.worker_id):
        return None
    return CallReleased(status=status[0] if status else "missing")


def _rate_limited(run: _Run, candidate: Candidate, wait: RateWait) -> str:
    """Record why the task waits and put it back in the queue until its slot frees.
    Returns the task's status (queued)."""
    run.decide(
        rate_wait_decision(
            wait,
            model=candidate.model.slug,
            slot=candidate.slot,
            credential=candidate.credential.label,
        )
    )
    if not task_requeue_rate_limited(
        task_id=run.task.pk,
        worker_id=run.worker_id,
        decisions=run.decisions,
        countdown=wait.countdown,
    ):
        logger.warning("task %s was taken over while running here; not requeued", run.task.pk)
    return TaskStatus.QUEUED


def _settle(answer: CallAnswer[ChatResult]) -> None:
    """Settle the answering call. Outside a transaction, so that it can share a batch
    (and a commit) with the settlements of this worker's other threads."""
    call_settle(
        usage=answer.usage,
        request=answer.plan.request,
        result=answer.result,
        latency_ms=answer.latency_ms,
    )
    failpoint("call_settled")


def call_settle(*, usage: Usage, request: ChatRequest, result: ChatResult, latency_ms: int) -> None:
    """Settle a call's pending ledger row with the usage its provider reported, priced
    exactly (estimated from the request and the answer text when none was reported).

    Raises LedgerError if the row is no longer pending.
    """
    usage_settle(
        usage=usage,
        token_usage=result.usage,
        reported_cost=result.reported_cost,
        prompt_texts=prompt_texts(request),
        output_text=result.text,
        provider_request_id=result.provider_request_id,
        latency_ms=latency_ms,
    )


def prompt_texts(request: ChatRequest) -> tuple[str, ...]:
    """Every text of the request: what budget estimates and reservations count."""
    return (request.system, request.prefix, *(message.content for message in request.messages))


def _check_decision(
    candidate: Candidate, reading: AnswerReading, verdict: Verdict, *, escalate: bool
) -> Decision:
    assessment = reading.self_assessment
    if assessment is None:
        judged = f"self-check line {reading.self_check_problem}"
        self_data: dict[str, Any] = {"problem": reading.self_check_problem}
    else:
        judged = "self-check: " + ("confident" if assessment.confident else "not confident")
        if assessment.reason:
            judged += f" ({assessment.reason})"
        self_data = {"confident": assessment.confident, "reason": assessment.reason}
    if verdict.good:
        why = f"The answer passed every rule ({', '.join(verdict.passed)}); {judged}."
    else:
        then = " The strong model answers instead." if escalate else ""
        why = f"The answer is not good enough: {'; '.join(verdict.failures)}.{then}"
    return Decision(
        step="check",
        outcome="good" if verdict.good else "escalate",
        why=why,
        model=candidate.model.slug,
        slot=candidate.slot,
        data={**verdict.as_json(), "self_assessment": self_data},
    )


def candidate_decision(candidate: Candidate, outcome: str, why: str) -> Decision:
    """What became of one candidate of a route (`outcome`, in words `why`), for the
    task's routing record (the worker's and /v1's)."""
    return Decision(
        step="candidate",
        outcome=outcome,
        why=why,
        model=candidate.model.slug,
        slot=candidate.slot,
        data={"credential": candidate.credential.label},
    )


def _answered_why(candidate: Candidate, index: int, route: Route) -> str:
    if index == 0:
        return f"Answered ({candidate.reason})."
    return f"Answered ({candidate.reason}) after {index} earlier candidate(s) did not."


def model_label(
    *, candidate: Candidate, index: int, route: Route, downgraded: bool, rejected: bool
) -> str:
    """The label a task shows for the candidate (number `index` of `route`) that answered:
    `downgraded` to the over-budget model, or escalated after the cheap answer was
    `rejected` by its check (else the cheap model failed). For the worker and /v1."""
    label = candidate.label
    if downgraded:
        return label + " (downgraded: over budget)"
    if route.policy == RoutingPolicy.TIERED:
        return f"{label} (tier {candidate.slot})"
    if route.policy == RoutingPolicy.ESCALATE and index > 0:
        cheap = route.candidates[0].model.slug
        why = "its answer failed the check" if rejected else "it failed"
        return f"{label} (escalated from {cheap}: {why})"
    if route.policy == RoutingPolicy.FALLBACK:
        return f"{label} (fallback {index + 1} of {len(route.candidates)})"
    return label


def _exhausted(run: _Run, walk: _Walk) -> str:
    """The task's error when no candidate answered acceptably."""
    if len(walk.failures) == 1 and not run.held_reasons:
        return walk.failures[0][1]  # one candidate: its own reason, as people expect it
    tried = "; ".join(
        f"{number}) {candidate.label}: {message}"
        for number, (candidate, message) in enumerate(walk.failures, start=1)
    )
    if run.held_reasons:
        return (
            f"The cheap answer failed the check ({'; '.join(run.held_reasons)}) and the "
            f"strong model did not answer: {tried}. The cheap answer is kept as the result."
        )
    return f"No model answered. {tried}"


def _retry_wait(exc: ProviderError, *, attempt: int) -> float | None:
    """Seconds to wait before the next attempt, or None if the wait is above the cap."""
    if exc.retry_after is not None:
        return exc.retry_after if exc.retry_after <= settings.ROSTER_RETRY_MAX_WAIT else None
    backoff = min(2.0 ** (attempt - 1), settings.ROSTER_RETRY_MAX_WAIT)
    return backoff * (0.5 + random.random() / 2)  # jitter: retries of many tasks spread out


def _gave_up(message: str, attempt: int, exc: ProviderError, wait: float | None) -> str:
    if wait is None:
        return (
            f"{message} (the provider asked to retry after {exc.retry_after:.0f}s, above the "
            f"{settings.ROSTER_RETRY_MAX_WAIT:.0f}s limit)"
        )
    return f"{message} (gave up after {attempt} attempt{'s' if attempt != 1 else ''})"


def _record(run: _Run) -> None:
    """Save the decisions so far, if this worker still holds the task."""
    Task.objects.filter(pk=run.task.pk, status=TaskStatus.RUNNING, claimed_by=run.worker_id).update(
        routing_decisions=run.decisions
    )


def _end(
    run: _Run, *, status: str, result: str = "", error: str = "", model_label: str = ""
) -> str:
    return task_finish(
        task=run.task,
        worker_id=run.worker_id,
        decisions=run.decisions,
        status=status,
        result=result,
        error=error,
        model_label=model_label,
    )


def task_finish(
    *,
    task: Task,
    worker_id: str,
    decisions: list[dict[str, Any]],
    status: str,
    result: str = "",
    error: str = "",
    model_label: str = "",
) -> str:
    """Record the task's outcome and routing decisions if this worker still holds it.
    Returns the status."""
    # A workflow's step advances its workflow in the transaction recording its outcome.
    with transaction.atomic() if task.parent_id is not None else nullcontext():
        updated = Task.objects.filter(
            pk=task.pk, status=TaskStatus.RUNNING, claimed_by=worker_id
        ).update(
            status=status,
            result=result,
            error=error[:4000],
            model_label=model_label or F("model_label"),
            routing_decisions=decisions,
            finished_at=timezone.now(),
        )
        if updated == 1 and task.parent_id is not None:
            workflow_step_finished(step_id=task.pk)
    if updated != 1:
        # The sweeper gave the task to another worker meanwhile; the call stays billed.
        logger.warning(
            "task %s is no longer held here (cancelled or taken over); outcome not saved", task.pk
        )
    return status
