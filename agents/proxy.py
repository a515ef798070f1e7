"""The synchronous call path behind the OpenAI-compatible endpoint (agents.chat_api).

A client's chat completion for a role runs here, in the web process, with no queue hop,
through the same services as the worker's path (agents.execution): the role's routing
policy (agents.routing), the per-call loop that reserves budget and opens the ledger row
before the request leaves (candidate_call, on billing.ledger.usage_open), the adapters on
the shared httpx client, and the same settlement (call_settle / call_fail).

Every call is billed to a task, as every cent in Roster is: each request creates a Task
of kind `task` for the role, created by the token's person, `running` while the call is
in flight and then `done`, `failed`, `over_budget` or (a streaming client that hung up)
`cancelled`. The task is marked as having used up its executions, so the stale-task
sweeper can never hand it to a worker: a proxy call is never re-run, and if the web
process dies mid-call the sweeper fails the task and closes its pending call as an
estimate (docs/openai.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from agents.escalation import (
    SELF_CHECK_INSTRUCTION,
    AnswerReading,
    answer_check,
    answer_read,
    rules_ask_self_assessment,
)
from agents.execution import (
    TRUNCATED_FINISH_REASONS,
    CallAnswer,
    CallFailure,
    CallPlan,
    CallRateLimited,
    CallRefused,
    CallReleased,
    ExecutionError,
    call_fail,
    call_plan,
    call_settle,
    candidate_call,
    candidate_decision,
    downgrade_target,
    model_label,
    prompt_texts,
    task_finish,
)
from agents.liveness import PROXY_HOLDER_PREFIX, worker_id
from agents.models import RoleBinding
from agents.providers.base import ChatMessage, ChatResult, ChatStream, ProviderError
from agents.providers.registry import adapter_for
from agents.rate_gate import RateGrant, rate_tokens_settle, tokens_used
from agents.redaction import redact
from agents.routing import Candidate, Decision, Route, RouteError, route_plan
from agents.runtime import binding_for_role
from billing.budgets import BudgetExceeded
from billing.ledger import LedgerError, usage_settle
from billing.models import BudgetAction, Usage
from office.errors import DomainError
from office.models import Role, Task, TaskKind, TaskStatus

logger = logging.getLogger(__name__)

# What the task list shows for a proxy call (its prompt is the conversation's last turn).
TITLE_PREFIX = "API chat: "


class ProxyError(DomainError):
    """A chat completion Roster answers with an error instead of an answer.

    `status_code` is the HTTP status, `error_type` the OpenAI error type, `code` stable
    and machine-readable; `retry_after` (seconds) when waiting helps; `should_retry`
    says whether the same request may succeed if sent again (the OpenAI SDKs read it
    from the `x-should-retry` header).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str,
        error_type: str,
        param: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message, code=code, field=param)
        self.status_code = status_code
        self.error_type = error_type
        self.retry_after = retry_after
        self.should_retry = should_retry


@dataclass(frozen=True)
class ChatCall:
    """A validated chat completion for a role (agents.chat_api.validation builds it)."""

    role: Role
    # The conversation's user and assistant turns, in order.
    messages: tuple[ChatMessage, ...]
    # The client's system (and developer) messages, joined: sent after the role's own
    # system prompt, as the request's stable prefix.
    system: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()


@dataclass
class _ProxyRun:
    """One proxy call's task, its attempt counter and its routing decisions."""

    task: Task
    holder: str
    binding: RoleBinding
    decisions: list[dict[str, Any]] = field(default_factory=list)
    attempts_made: int = 0
    downgraded: bool = False
    rejected: bool = False  # an escalation's cheap answer failed its check
    failures: list[str] = field(default_factory=list)

    def decide(self, decision: Decision) -> None:
        self.decisions.append(decision.as_json(execution=1))

    def finish(self, *, status: str, result: str = "", error: str = "", label: str = "") -> None:
        with _commit_without_waiting():
            task_finish(
                task=self.task,
                worker_id=self.holder,
                decisions=self.decisions,
                status=status,
                result=result,
                error=error,
                model_label=label,
            )


@dataclass(frozen=True)
class ProxyAnswer:
    """A settled, non-streamed answer: the task, its settled ledger row, the result."""

    task: Task
    usage: Usage
    result: ChatResult
    model: str  # the catalog model that answered


def proxy_complete(*, call: ChatCall, user: AbstractBaseUser) -> ProxyAnswer:
    """Answer a chat completion for a role, synchronously, under the role's routing
    policy, budgets and billing. Returns the answer, its ledger row settled.

    Raises ProxyError: the role cannot run (no model bound, misconfigured routing), a
    budget refused the call (`budget_exceeded`, 429), a credential's rate limit is
    reached (`rate_limit_exceeded`, 429 with retry_after), or no candidate answered
    (`upstream_failed`, 502). The task records the outcome in every case.
    """
    run, route = _start(call=call, user=user)
    answered = _walk(run, route, call, stream=False)
    assert isinstance(answered.result, ChatResult)
    _settle(
        plan=answered.plan,
        usage=answered.usage,
        grant=answered.grant,
        result=answered.result,
        latency_ms=answered.latency_ms,
    )
    run.finish(status=TaskStatus.DONE, result=answered.result.text, label=answered.label)
    return ProxyAnswer(
        task=run.task,
        usage=answered.usage,
        result=answered.result,
        model=answered.plan.target.model.slug,
    )


def proxy_stream(*, call: ChatCall, user: AbstractBaseUser) -> ProxyStream:
    """Start streaming a chat completion for a role. Returns the stream once its
    provider has begun answering (its first text has arrived); iterate it for the text.

    Raises ProxyError, as proxy_complete does, for every failure before the first text:
    a failure then still moves on to the route's next candidate. A failure after it
    surfaces while iterating (ProxyError `upstream_failed`).
    """
    run, route = _start(call=call, user=user)
    answered = _walk(run, route, call, stream=True)
    return ProxyStream(run=run, answered=answered)


# --- The route ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Opened:
    """A call whose answer has begun: the first text and the rest to come. A checked
    candidate's answer is complete (`chat` None, `complete` set)."""

    first: str
    rest: Iterator[str]
    chat: ChatStream | None
    complete: ChatResult | None
    started: float


@dataclass(frozen=True)
class _Answered:
    plan: CallPlan
    usage: Usage
    result: ChatResult | _Opened
    latency_ms: int
    grant: RateGrant
    label: str


def _start(*, call: ChatCall, user: AbstractBaseUser) -> tuple[_ProxyRun, Route]:
    """Check the role can run, open its task and plan the route."""
    binding = binding_for_role(role=call.role)
    if binding is None:
        raise ProxyError(
            f"The model {call.role.slug!r} (a Roster role) has no provider model bound to it; "
            "an admin can bind one under Agents > Role bindings.",
            status_code=400,
            code="model_not_runnable",
            error_type="invalid_request_error",
            param="model",
            should_retry=False,
        )
    run = _ProxyRun(task=_task_open(call=call, user=user), holder=_holder(), binding=binding)
    try:
        route = route_plan(task=run.task, binding=binding)
    except RouteError as exc:
        run.decide(Decision(step="route", outcome="refused", why=str(exc)))
        run.finish(status=TaskStatus.FAILED, error=str(exc))
        raise ProxyError(
            str(exc),
            status_code=503,
            code="model_misconfigured",
            error_type="server_error",
            should_retry=False,
        ) from None
    for decision in route.decisions:
        run.decide(decision)
    return run, route


def _task_open(*, call: ChatCall, user: AbstractBaseUser) -> Task:
    """The task the call is billed to, already running (and prepared: no helper work)."""
    last_user = next(
        (m.content for m in reversed(call.messages) if m.role == "user"), call.messages[-1].content
    )
    now = timezone.now()
    with _commit_without_waiting():
        return Task.objects.create(
            role=call.role,
            kind=TaskKind.TASK,
            title=(TITLE_PREFIX + " ".join(last_user.split()))[:200],
            prompt=last_user,
            max_tokens=call.max_tokens,
            created_by=user,
            status=TaskStatus.RUNNING,
            claimed_by=_holder(),
            started_at=now,
            prepared_at=now,
            # The sweeper fails a proxy task whose web process died, it never requeues
            # it (the client is gone; a worker must not call again): agents.liveness.
            executions=1,
        )


@contextmanager
def _commit_without_waiting() -> Iterator[None]:
    """A transaction whose commit on PostgreSQL does not wait for the WAL flush (one
    fsync less on the request's path, several ms on a slow disk). Safe for the task row:
    its creation is made durable by the ledger row's commit that follows before any
    call leaves (WAL is flushed in order), and an outcome a database crash loses leaves
    a running task the sweeper fails, its calls already settled (the settlement commits
    the same way: billing.ledger)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def _holder() -> str:
    return PROXY_HOLDER_PREFIX + worker_id()


def _walk(run: _ProxyRun, route: Route, call: ChatCall, *, stream: bool) -> _Answered:
    """Call the route's candidates in order until one answers (the first text of a
    stream), as the worker does: a failure moves on to the next candidate, a checked
    (escalation) answer that fails its check hands over to the strong model, a
    `downgrade` budget switches to the over-budget model. Raises ProxyError."""
    candidates = route.candidates
    for index, candidate in enumerate(candidates):
        more = index < len(candidates) - 1
        checked = candidate.checked and more
        # The escalation check reads the cheap model's self-assessment when its rules
        # ask for one, as the worker does; the line is taken out of the answer shown.
        ask_self_check = checked and rules_ask_self_assessment(route.rules)
        try:
            plan = _plan(run, call, candidate, self_check=ask_self_check)
        except ExecutionError as exc:
            _gave_up(run, candidate, str(exc), outcome="skipped")
            continue
        # An escalation's cheap answer is checked whole before anyone sees it, so it is
        # never streamed: a stream of it arrives as one piece.
        live = stream and not checked
        outcome = candidate_call(
            task=run.task,
            plan=plan,
            attempts=candidate.attempts,
            counter=run,
            send=_stream_opener(plan) if live else _completer(plan),
        )
        if isinstance(outcome, CallReleased):  # not asked: a proxy call is never released
            raise AssertionError("unreachable")
        if isinstance(outcome, CallRateLimited):
            wait = outcome.wait
            run.decide(candidate_decision(candidate, "rate_limited", wait.reason))
            run.finish(status=TaskStatus.FAILED, error=wait.reason)
            raise ProxyError(
                f"{wait.reason}. Try again in {math.ceil(wait.wait_seconds)} s.",
                status_code=429,
                code="rate_limit_exceeded",
                error_type="rate_limit_error",
                retry_after=wait.wait_seconds,
            )
        if isinstance(outcome, CallRefused):
            return _budget_refused(run, call, outcome.exc, candidate, stream=stream)
        if isinstance(outcome, CallFailure):
            _gave_up(run, candidate, outcome.message, outcome=outcome.outcome)
            continue
        answer: CallAnswer[Any] = outcome
        if not checked:
            run.decide(candidate_decision(candidate, "answered", f"Answered ({candidate.reason})."))
            return _answered(answer, label=_label(run, candidate, index, route))
        result: ChatResult = answer.result
        reading = (
            answer_read(text=result.text)
            if ask_self_check
            else AnswerReading(
                text=result.text, self_assessment=None, self_check_problem="not asked"
            )
        )
        verdict = answer_check(
            reading=reading,
            rules=route.rules,
            truncated=result.finish_reason in TRUNCATED_FINISH_REASONS,
        )
        if verdict.good:
            run.decide(candidate_decision(candidate, "answered", "Its answer passed the check."))
            return _answered(
                answer,
                label=_label(run, candidate, index, route),
                stream=stream,
                complete=replace(result, text=reading.text),
            )
        # Rejected: billed, not shown; the strong model answers instead.
        _settle(
            plan=answer.plan,
            usage=answer.usage,
            grant=answer.grant,
            result=result,
            latency_ms=answer.latency_ms,
        )
        run.rejected = True
        run.decide(
            candidate_decision(
                candidate,
                "rejected",
                f"Its answer failed the check ({'; '.join(verdict.failures)}); escalating.",
            )
        )
    error = "; ".join(run.failures) or "No model answered."
    run.finish(status=TaskStatus.FAILED, error=error)
    raise ProxyError(
        f"No model answered for {call.role.slug!r}: {error}",
        status_code=502,
        code="upstream_failed",
        error_type="api_error",
        # Each candidate already had its attempts (ROSTER_PROVIDER_MAX_ATTEMPTS).
        should_retry=False,
    )


def _answered(
    answer: CallAnswer[Any], *, label: str, stream: bool = False, complete: ChatResult | None = None
) -> _Answered:
    result = answer.result if complete is None else complete
    if stream and complete is not None:  # a checked answer, sent as one piece
        result = _Opened(
            first=complete.text,
            rest=iter(()),
            chat=None,
            complete=complete,
            started=time.monotonic() - answer.latency_ms / 1000,
        )
    return _Answered(
        plan=answer.plan,
        usage=answer.usage,
        result=result,
        latency_ms=answer.latency_ms,
        grant=answer.grant,
        label=label,
    )


def _budget_refused(
    run: _ProxyRun, call: ChatCall, exc: BudgetExceeded, candidate: Candidate, *, stream: bool
) -> _Answered:
    """Downgrade once to the over-budget model when the budget says so and that model
    can be called (agents.execution.downgrade_target, as the worker does); otherwise
    stop. Raises ProxyError `budget_exceeded`."""
    message = exc.message
    if exc.action == BudgetAction.DOWNGRADE and not run.downgraded:
        over_budget = downgrade_target(
            binding=run.binding,
            plan=lambda target: _plan(run, call, target, self_check=False),
        )
        if not isinstance(over_budget, str):
            run.downgraded = True
            run.decide(
                Decision(
                    step="downgrade",
                    outcome="over_budget_model",
                    why=(
                        f"{exc.message} The over-budget model answers instead of {candidate.label}."
                    ),
                    model=over_budget.model.slug,
                    slot=over_budget.slot,
                )
            )
            route = Route(policy="downgrade", candidates=(over_budget,), decisions=())
            return _walk(run, route, call, stream=stream)
        message = f"{exc.message} Not downgraded: {over_budget}."
    run.decide(candidate_decision(candidate, "abandoned", f"Refused by a budget: {message}"))
    run.finish(status=TaskStatus.OVER_BUDGET, error=message)
    raise ProxyError(
        message,
        status_code=429,
        code="budget_exceeded",
        error_type="insufficient_quota",
        should_retry=False,
    )


def _plan(run: _ProxyRun, call: ChatCall, candidate: Candidate, *, self_check: bool) -> CallPlan:
    limit = call.max_tokens or run.binding.max_tokens
    system = call.role.system_prompt
    if self_check:
        system = f"{system}\n\n{SELF_CHECK_INSTRUCTION}" if system else SELF_CHECK_INSTRUCTION
    plan = call_plan(
        candidate=candidate,
        messages=call.messages,
        max_tokens=min(limit, settings.ROSTER_MAX_TOKENS_LIMIT),
        system=system,
        prefix=call.system,
    )
    sampling = replace(plan.request, temperature=call.temperature, top_p=call.top_p, stop=call.stop)
    return replace(plan, request=sampling)


def _settle(
    *, plan: CallPlan, usage: Usage, grant: RateGrant, result: ChatResult, latency_ms: int
) -> None:
    """Settle an answered call's ledger row and its rate grant. A row the sweeper closed
    meanwhile stays as it is (logged): the client still gets its answer, never a 500."""
    try:
        call_settle(usage=usage, request=plan.request, result=result, latency_ms=latency_ms)
    except LedgerError as exc:
        logger.warning("proxy call %s already closed: %s", usage.call_id, exc)
    rate_tokens_settle(grant, used=tokens_used(result.usage))


def _completer(plan: CallPlan) -> Any:
    adapter = adapter_for(plan.target.provider)
    return lambda request: adapter.complete(endpoint=plan.endpoint, request=request)


def _stream_opener(plan: CallPlan) -> Any:
    adapter = adapter_for(plan.target.provider)

    def open_stream(request: Any) -> _Opened:
        # Read up to the first text, so that a failure before it can still move on to
        # the next candidate (nothing has reached the client yet).
        started = time.monotonic()
        chat = adapter.stream(endpoint=plan.endpoint, request=request)
        pieces = iter(chat)
        try:
            first = next(pieces, "")
        except ProviderError:
            chat.close()
            raise
        return _Opened(first=first, rest=pieces, chat=chat, complete=None, started=started)

    return open_stream


def _label(run: _ProxyRun, candidate: Candidate, index: int, route: Route) -> str:
    return model_label(
        candidate=candidate,
        index=index,
        route=route,
        downgraded=run.downgraded,
        rejected=run.rejected,
    )


def _gave_up(run: _ProxyRun, candidate: Candidate, message: str, *, outcome: str) -> None:
    run.failures.append(f"{candidate.label}: {message}")
    run.decide(candidate_decision(candidate, outcome, message))


# --- Streaming ------------------------------------------------------------------------------


class ProxyStream:
    """A streaming answer. Iterate for its text; when iteration ends the call is settled
    and `usage` holds the settled ledger row. Iteration raises ProxyError
    (`upstream_failed`) when the provider's stream breaks: the call is then closed as
    failed. `close()` before the end (the client hung up) drops the provider's stream
    and settles the call as an estimate of what was generated so far.
    """

    def __init__(self, *, run: _ProxyRun, answered: _Answered) -> None:
        assert isinstance(answered.result, _Opened)
        self._run = run
        self._answered = answered
        self._opened: _Opened = answered.result
        self._parts = [self._opened.first]  # the text sent so far
        self._closed = False
        self.task = run.task
        self.usage = answered.usage
        self.call_id = answered.usage.call_id
        self.model = answered.plan.target.model.slug
        self.result: ChatResult | None = None

    def __iter__(self) -> Iterator[str]:
        if self._opened.first:
            yield self._opened.first
        try:
            for piece in self._opened.rest:
                self._parts.append(piece)
                yield piece
        except ProviderError as exc:
            message = self._fail(exc)
            raise ProxyError(
                f"The provider's stream broke: {message}",
                status_code=502,
                code="upstream_failed",
                error_type="api_error",
            ) from None
        self._complete()

    def close(self) -> None:
        """Settle the call if the stream did not reach its end (the client left).
        Safe to call more than once, and after the end."""
        if self._closed:
            return
        self._closed = True
        opened = self._opened
        if opened.chat is not None:
            opened.chat.close()  # the provider stops generating
        try:
            usage_settle(
                usage=self.usage,
                token_usage=None,  # estimated from the prompt and the text so far
                prompt_texts=prompt_texts(self._answered.plan.request),
                output_text=self._sent(),
                latency_ms=self._elapsed_ms(),
            )
        except LedgerError as exc:
            logger.warning("proxy call %s not settled on disconnect: %s", self.call_id, exc)
        rate_tokens_settle(self._answered.grant, used=None)
        self._run.finish(
            status=TaskStatus.CANCELLED,
            result=self._sent(),
            error=(
                "The client disconnected during the stream; the call is billed as an "
                "estimate of the text generated until then."
            ),
            label=self._answered.label,
        )

    def _complete(self) -> None:
        opened = self._opened
        result = opened.complete if opened.chat is None else opened.chat.result
        assert result is not None
        self._closed = True
        self.result = result
        _settle(
            plan=self._answered.plan,
            usage=self.usage,
            grant=self._answered.grant,
            result=result,
            latency_ms=self._elapsed_ms(),
        )
        self._run.finish(status=TaskStatus.DONE, result=result.text, label=self._answered.label)

    def _fail(self, exc: ProviderError) -> str:
        self._closed = True
        plan = self._answered.plan
        try:
            message = call_fail(usage=self.usage, plan=plan, exc=exc, latency_ms=self._elapsed_ms())
        except LedgerError as closed:
            logger.warning("proxy call %s already closed: %s", self.call_id, closed)
            message = redact(exc.message, plan.endpoint.api_key)
        rate_tokens_settle(self._answered.grant, used=None)
        self._run.finish(status=TaskStatus.FAILED, result=self._sent(), error=message)
        return message

    def _sent(self) -> str:
        return "".join(self._parts)

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self._opened.started) * 1000)
