"""Running one task: claim it, call the provider, bill every attempt, record the outcome.

The rules this module keeps (STYLE.md 5 and 6):
- the claim is a conditional update, so a re-delivered message never runs a task twice;
- the ledger row is committed before the request leaves, and no transaction is open
  during a network call;
- the row is settled and the task finished in one short transaction.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.models import RoleBinding
from agents.providers.base import (
    ChatMessage,
    ChatRequest,
    Endpoint,
    ProviderError,
)
from agents.providers.registry import adapter_for, default_base_url, upstream_model_name
from agents.redaction import redact
from agents.secrets import SecretError, secret_decrypt
from agents.selectors import binding_for_role
from billing.budgets import BudgetExceeded
from billing.estimation import prompt_tokens_bound, prompt_tokens_estimate
from billing.ledger import (
    CallTarget,
    LedgerError,
    usage_close_abandoned,
    usage_fail,
    usage_open,
    usage_settle,
)
from billing.models import BudgetAction
from office.models import Task, TaskStatus

logger = logging.getLogger(__name__)


class ExecutionError(Exception):
    """A task that cannot run, with the reason people will read on the task."""


@dataclass(frozen=True)
class CallPlan:
    target: CallTarget
    endpoint: Endpoint
    request: ChatRequest


def task_execute(*, task_id: int, worker_id: str) -> str:
    """Run a queued task to its end. Returns the task's final (or current) status.

    Safe to call twice for the same task: only the caller whose conditional update moves
    the task from queued to running does any work.
    """
    claimed = Task.objects.filter(pk=task_id, status=TaskStatus.QUEUED).update(
        status=TaskStatus.RUNNING,
        claimed_by=worker_id,
        started_at=timezone.now(),
        executions=F("executions") + 1,
    )
    if claimed != 1:
        status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
        logger.info("task %s not claimed (status %s): nothing to do", task_id, status)
        return status or "missing"

    task = Task.objects.select_related("role").get(pk=task_id)
    # Calls a dead worker left pending stay in the ledger, priced as estimates.
    usage_close_abandoned(task_id=task.pk)
    try:
        plan = _plan(task)
    except ExecutionError as exc:
        return _finish(task=task, worker_id=worker_id, status=TaskStatus.FAILED, error=str(exc))
    return _call_with_retries(task=task, worker_id=worker_id, plan=plan)


def _plan(task: Task, *, over_budget: bool = False) -> CallPlan:
    """The call for a task: the role's bound model, or with `over_budget` the binding's
    over-budget model. Raises ExecutionError when it cannot be made."""
    binding: RoleBinding | None = binding_for_role(role=task.role)
    if binding is None:
        raise ExecutionError(f"The role {task.role.slug!r} has no model bound to it.")
    model, credential = binding.model, binding.credential
    if over_budget:
        if binding.over_budget_model is None:
            raise ExecutionError("no over-budget model is configured for this role")
        model = binding.over_budget_model
        credential = binding.over_budget_credential or binding.credential
    try:
        api_key = secret_decrypt(credential.secret_encrypted)
    except SecretError as exc:
        raise ExecutionError(f"Credential {credential.label!r}: {exc}") from None
    base_url = credential.base_url or default_base_url(credential.provider)
    if not base_url:
        raise ExecutionError(
            f"Credential {credential.label!r} needs a base URL for {credential.provider}."
        )
    upstream = (binding.upstream_model if not over_budget else "") or upstream_model_name(
        provider=credential.provider, catalog_slug=model.slug
    )
    max_tokens = min(task.max_tokens or binding.max_tokens, settings.ROSTER_MAX_TOKENS_LIMIT)
    request = ChatRequest(
        model=upstream,
        messages=(ChatMessage(role="user", content=task.prompt),),
        max_tokens=max_tokens,
        system=task.role.system_prompt,
    )
    return CallPlan(
        target=CallTarget(
            model=model,
            provider=credential.provider,
            credential_id=credential.pk,
            credential_label=credential.label,
            upstream_model=upstream,
        ),
        endpoint=Endpoint(base_url=base_url.rstrip("/"), api_key=api_key),
        request=request,
    )


def _call_with_retries(*, task: Task, worker_id: str, plan: CallPlan) -> str:
    """Call until an answer, a permanent error, the attempt bound or a budget stops it.
    A `downgrade` budget switches, once, to the role's over-budget model."""
    max_attempts = settings.ROSTER_PROVIDER_MAX_ATTEMPTS
    prompt_texts = (plan.request.system, task.prompt)
    attempt, downgraded = 1, False
    while True:
        try:
            usage = usage_open(
                task=task,
                target=plan.target,
                attempt=attempt,
                estimated_input_tokens=prompt_tokens_estimate(*prompt_texts),
                input_tokens_bound=prompt_tokens_bound(*prompt_texts),
                max_output_tokens=plan.request.max_tokens,
            )
        except BudgetExceeded as exc:
            if exc.action != BudgetAction.DOWNGRADE or downgraded:
                return _over_budget(task, worker_id, exc.message)
            try:
                plan = _plan(task, over_budget=True)
            except ExecutionError as why:
                return _over_budget(task, worker_id, f"{exc.message} Not downgraded: {why}.")
            downgraded = True
            logger.info("task %s downgraded to %s: %s", task.pk, plan.target.model, exc)
            continue
        except LedgerError as exc:
            return _finish(task=task, worker_id=worker_id, status=TaskStatus.FAILED, error=str(exc))
        request = replace(plan.request, call_id=usage.call_id)
        started = time.monotonic()
        try:
            result = adapter_for(plan.target.provider).complete(
                endpoint=plan.endpoint, request=request
            )
        except ProviderError as exc:
            latency_ms = int((time.monotonic() - started) * 1000)
            message = redact(exc.message, plan.endpoint.api_key)
            usage_fail(
                usage=usage, error=message, http_status=exc.status_code, latency_ms=latency_ms
            )
            wait = _retry_wait(exc, attempt=attempt)
            if exc.permanent or attempt >= max_attempts or wait is None:
                reason = message if exc.permanent else _gave_up(message, attempt, exc, wait)
                return _finish(
                    task=task, worker_id=worker_id, status=TaskStatus.FAILED, error=reason
                )
            logger.info(
                "task %s attempt %s failed (%s); retrying in %.1fs", task.pk, attempt, message, wait
            )
            time.sleep(wait)
            attempt += 1
            continue
        latency_ms = int((time.monotonic() - started) * 1000)
        with transaction.atomic():
            usage_settle(
                usage=usage,
                token_usage=result.usage,
                reported_cost=result.reported_cost,
                prompt_texts=prompt_texts,
                output_text=result.text,
                provider_request_id=result.provider_request_id,
                latency_ms=latency_ms,
            )
            label = f"{plan.target.model.slug} via {plan.target.credential_label}"
            return _finish(
                task=task,
                worker_id=worker_id,
                status=TaskStatus.DONE,
                result=result.text,
                model_label=label + (" (downgraded: over budget)" if downgraded else ""),
            )


def _over_budget(task: Task, worker_id: str, reason: str) -> str:
    return _finish(task=task, worker_id=worker_id, status=TaskStatus.OVER_BUDGET, error=reason)


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
    return f"{message} (gave up after {attempt} attempts)"


def _finish(
    *,
    task: Task,
    worker_id: str,
    status: str,
    result: str = "",
    error: str = "",
    model_label: str = "",
) -> str:
    """Record the task's outcome if this worker still holds it. Returns the status."""
    updated = Task.objects.filter(
        pk=task.pk, status=TaskStatus.RUNNING, claimed_by=worker_id
    ).update(
        status=status,
        result=result,
        error=error[:4000],
        model_label=model_label or F("model_label"),
        finished_at=timezone.now(),
    )
    if updated != 1:
        # The sweeper gave the task to another worker meanwhile; the call stays billed.
        logger.warning("task %s was taken over while running here; outcome not saved", task.pk)
    return status
