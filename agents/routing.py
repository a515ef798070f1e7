"""Routing: a role's policy turns a task into an ordered list of candidates, with reasons.

Policies (agents.models.RoutingPolicy; docs/routing.md):
- `single`: the bound model.
- `tiered`: the low, medium or high model; the task's tier hint wins, else the local
  helper's complexity class of the prompt picks.
- `fallback`: an ordered chain; execution moves to the next candidate when one fails.
- `escalate`: the cheap model answers first and its answer is checked
  (agents.escalation); the strong model answers when the check fails.

This module decides; agents.execution calls. The validation functions here are what the
admin form calls, so an API or a command can refuse the same bad input with the same
messages.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from agents.escalation import Rule, RulesInvalid, rules_parse
from agents.helper import helper_classify_complexity
from agents.models import CandidateSlot, Credential, RoleBinding, RouteCandidate, RoutingPolicy
from agents.providers.registry import ProviderKind, default_base_url
from billing.models import CatalogModel
from office.models import Task, TaskTier

logger = logging.getLogger(__name__)

# More would let one misbehaving model hold a worker thread for many timeouts.
MAX_CANDIDATE_ATTEMPTS = 10
# A candidate's own timeout: long enough for the slowest model's longest answer, short
# enough that a worker thread is never held for much longer than a task can take.
MAX_CANDIDATE_TIMEOUT_SECONDS = 600

TIER_SLOTS = (CandidateSlot.LOW, CandidateSlot.MEDIUM, CandidateSlot.HIGH)
POLICY_SLOTS: dict[str, tuple[str, ...]] = {
    RoutingPolicy.SINGLE: (),
    RoutingPolicy.TIERED: TIER_SLOTS,
    RoutingPolicy.FALLBACK: (CandidateSlot.CHAIN,),
    RoutingPolicy.ESCALATE: (CandidateSlot.CHEAP, CandidateSlot.STRONG),
}
# Slots of the route that are not RouteCandidate rows.
BOUND_SLOT = "bound"
OVER_BUDGET_SLOT = "over_budget"


class RouteError(Exception):
    """A policy that cannot produce a route; the message is for the task's error."""


class RoutingInvalid(ValueError):
    """A routing configuration refused; `problems` holds one readable message each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Candidate:
    """One model the route may call. `checked`: its answer goes through the escalation
    check before it is accepted. `reason`: why it is in the route."""

    slot: str
    model: CatalogModel
    credential: Credential
    upstream_model: str
    attempts: int
    reason: str
    checked: bool = False
    # Seconds to wait for its answer; None: ROSTER_PROVIDER_TIMEOUT.
    timeout: float | None = None

    @property
    def label(self) -> str:
        return f"{self.model.slug} via {self.credential.label}"


@dataclass(frozen=True)
class Decision:
    """One recorded routing step: what was decided about what, and why, in words.

    `step`: route, tier, candidate, check, downgrade. `data`: the figures behind `why`
    (complexity score and signals, the check's failures) for programs.
    """

    step: str
    outcome: str
    why: str
    model: str = ""
    slot: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self, *, execution: int) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "execution": execution,
            "step": self.step,
            "outcome": self.outcome,
            "why": self.why,
        }
        if self.model:
            entry["model"] = self.model
        if self.slot:
            entry["slot"] = self.slot
        if self.data:
            entry["data"] = dict(self.data)
        return entry


@dataclass(frozen=True)
class Route:
    """The candidates to call, in order, and the decisions that chose them."""

    policy: str
    candidates: tuple[Candidate, ...]
    decisions: tuple[Decision, ...]
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class ComplexityReading:
    """The helper's complexity class of a prompt, as routing records it; the tokens are
    what a paid model would have read and written to classify it (the helper's saving)."""

    level: str
    score: int
    signals: Mapping[str, Any]
    backend: str
    fallback_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


Classifier = Callable[[str], ComplexityReading]


def complexity_of_prompt(text: str) -> ComplexityReading:
    """Classify a prompt with the local helper (zero paid cost). Returns its reading."""
    result = helper_classify_complexity(text=text)
    complexity = result.value
    return ComplexityReading(
        level=str(complexity.level),
        score=int(complexity.score),
        signals=dict(complexity.signals),
        backend=str(result.backend),
        fallback_reason=result.fallback_reason or "",
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
    )


# --- Planning -------------------------------------------------------------------------------


def route_plan(*, task: Task, binding: RoleBinding, classify: Classifier | None = None) -> Route:
    """Return the ordered candidates for a task under its role's policy, with the
    decisions that chose them.

    `classify` reads a prompt's complexity (default: the local helper); only the tiered
    policy without a tier hint calls it. Raises RouteError when the policy is
    misconfigured (a tier without a model, a chain of fewer than two, bad rules).
    """
    policy = binding.policy
    rows = list(binding.candidates.all())
    hint_note = ""
    if task.tier_hint and policy != RoutingPolicy.TIERED:
        hint_note = f" The task's tier hint {task.tier_hint!r} is not used by this policy."
    if policy == RoutingPolicy.SINGLE:
        candidate = Candidate(
            slot=BOUND_SLOT,
            model=binding.model,
            credential=binding.credential,
            upstream_model=binding.upstream_model,
            attempts=settings.ROSTER_PROVIDER_MAX_ATTEMPTS,
            reason="the role's bound model",
        )
        return _route(policy, [candidate], "Single policy: the role's bound model." + hint_note)
    if policy == RoutingPolicy.TIERED:
        return _route_tiered(task=task, rows=rows, classify=classify or complexity_of_prompt)
    if policy == RoutingPolicy.FALLBACK:
        chain = [row for row in rows if row.slot == CandidateSlot.CHAIN]
        if len(chain) < 2:
            raise RouteError(_misconfigured(f"its fallback chain has {len(chain)} candidate(s)"))
        candidates = [
            _candidate(row, default_attempts=1, reason=f"fallback {index} of {len(chain)}")
            for index, row in enumerate(_in_chain_order(chain), start=1)
        ]
        why = (
            f"Fallback policy: {len(chain)} candidates in order; the next one is tried when "
            "one fails (after its own attempts)." + hint_note
        )
        return _route(policy, candidates, why)
    if policy == RoutingPolicy.ESCALATE:
        by_slot = {row.slot: row for row in rows}
        missing = [s for s in (CandidateSlot.CHEAP, CandidateSlot.STRONG) if s not in by_slot]
        if missing:
            raise RouteError(_misconfigured(f"its escalation has no {missing[0]} model"))
        try:
            rules = rules_parse(text=binding.escalation_rules)
        except RulesInvalid as exc:
            raise RouteError(_misconfigured(f"its escalation rules are invalid: {exc}")) from None
        default = settings.ROSTER_PROVIDER_MAX_ATTEMPTS
        cheap = _candidate(
            by_slot[CandidateSlot.CHEAP],
            default_attempts=default,
            reason="cheap model: answers first; its answer is checked",
            checked=True,
        )
        strong = _candidate(
            by_slot[CandidateSlot.STRONG],
            default_attempts=default,
            reason="strong model: answers only when the cheap answer fails the check "
            "or the cheap model fails",
        )
        why = (
            "Escalate policy: the cheap model answers first; the strong model answers if "
            f"the answer fails these rules: {', '.join(rule.text for rule in rules)}." + hint_note
        )
        route = _route(policy, [cheap, strong], why)
        return Route(
            policy=route.policy,
            candidates=route.candidates,
            decisions=route.decisions,
            rules=rules,
        )
    raise RouteError(_misconfigured(f"its policy {policy!r} is unknown"))


def route_over_budget(*, binding: RoleBinding) -> Candidate | None:
    """The candidate a `downgrade` budget switches to, or None when none is configured."""
    if binding.over_budget_model is None:
        return None
    return Candidate(
        slot=OVER_BUDGET_SLOT,
        model=binding.over_budget_model,
        credential=binding.over_budget_credential or binding.credential,
        upstream_model="",
        attempts=settings.ROSTER_PROVIDER_MAX_ATTEMPTS,
        reason="the role's over-budget model (a downgrade budget was reached)",
    )


def _route_tiered(*, task: Task, rows: list[RouteCandidate], classify: Classifier) -> Route:
    by_slot = {row.slot: row for row in rows}
    missing = [str(tier) for tier in TIER_SLOTS if tier not in by_slot]
    if missing:
        raise RouteError(_misconfigured(f"its tiered policy has no model for tier {missing[0]}"))
    if task.tier_hint in TaskTier.values:  # task_submit refuses others; rows may not
        tier = task.tier_hint
        tier_decision = Decision(
            step="tier",
            outcome=tier,
            why=f"The task's tier hint {tier!r} wins; the classifier was not asked.",
            data={"source": "hint"},
        )
    else:
        tier, tier_decision = _tier_classified(task.prompt, classify)
    row = by_slot[tier]
    candidate = _candidate(
        row,
        default_attempts=settings.ROSTER_PROVIDER_MAX_ATTEMPTS,
        reason=f"the model for tier {tier}",
    )
    skipped = ", ".join(
        f"{t} ({by_slot[t].model.slug})" for t in (str(s) for s in TIER_SLOTS) if t != tier
    )
    why = f"Tiered policy: tier {tier} chosen; not used: {skipped}."
    route = _route(RoutingPolicy.TIERED, [candidate], why)
    return Route(
        policy=route.policy,
        candidates=route.candidates,
        decisions=(tier_decision, *route.decisions),
    )


def _tier_classified(prompt: str, classify: Classifier) -> tuple[str, Decision]:
    try:
        reading = classify(prompt)
    except Exception as exc:
        # The classifier is an optimisation: a broken one must not stop the task.
        logger.exception("complexity classifier failed; using the medium tier")
        return TaskTier.MEDIUM, Decision(
            step="tier",
            outcome=TaskTier.MEDIUM,
            why=f"The classifier failed ({type(exc).__name__}); the medium tier is used.",
            data={"source": "default"},
        )
    level = reading.level if reading.level in TaskTier.values else TaskTier.MEDIUM
    note = "" if level == reading.level else f" (unknown class {reading.level!r}: medium used)"
    fallback = f"; {reading.fallback_reason}" if reading.fallback_reason else ""
    return level, Decision(
        step="tier",
        outcome=level,
        why=(
            f"The helper classified the prompt as {reading.level} (score {reading.score}, "
            f"{reading.backend} backend{fallback}){note}."
        ),
        data={
            "source": "classifier",
            "level": reading.level,
            "score": reading.score,
            "signals": dict(reading.signals),
            "backend": reading.backend,
            "fallback_reason": reading.fallback_reason,
            "helper_input_tokens": reading.input_tokens,
            "helper_output_tokens": reading.output_tokens,
        },
    )


def _route(policy: str, candidates: list[Candidate], why: str) -> Route:
    decision = Decision(
        step="route",
        outcome=policy,
        why=why,
        data={
            "candidates": [
                {
                    "slot": c.slot,
                    "model": c.model.slug,
                    "credential": c.credential.label,
                    "attempts": c.attempts,
                    **({"timeout_seconds": c.timeout} if c.timeout is not None else {}),
                    "reason": c.reason,
                }
                for c in candidates
            ]
        },
    )
    return Route(policy=policy, candidates=tuple(candidates), decisions=(decision,))


def _candidate(
    row: RouteCandidate, *, default_attempts: int, reason: str, checked: bool = False
) -> Candidate:
    return Candidate(
        slot=row.slot,
        model=row.model,
        credential=row.credential,
        upstream_model=row.upstream_model,
        attempts=row.attempts or default_attempts,
        reason=reason,
        checked=checked,
        timeout=row.timeout_seconds,
    )


def _in_chain_order(rows: list[RouteCandidate]) -> list[RouteCandidate]:
    return sorted(rows, key=lambda row: (row.position, row.pk or 0))


def _misconfigured(what: str) -> str:
    return (
        f"The role's routing is misconfigured: {what}. An admin can fix it under "
        "Agents > Role bindings."
    )


# --- Validation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateSpec:
    """A route candidate as entered (admin form, API, command), before it is saved."""

    slot: str
    model: CatalogModel | None
    credential: Credential | None
    position: int = 0
    attempts: int | None = None
    upstream_model: str = ""
    timeout_seconds: int | None = None


def candidate_spec_of(row: RouteCandidate) -> CandidateSpec:
    """The spec of a saved candidate (to re-check a binding whose policy changes)."""
    return CandidateSpec(
        slot=row.slot,
        model=row.model,
        credential=row.credential,
        position=row.position,
        attempts=row.attempts,
        upstream_model=row.upstream_model,
        timeout_seconds=row.timeout_seconds,
    )


def routing_validate(
    *, policy: str, candidates: Sequence[CandidateSpec], escalation_rules: str
) -> tuple[Rule, ...]:
    """Check a whole routing configuration. Returns the parsed escalation rules.

    Raises RoutingInvalid with every problem found (rules and candidates).
    """
    problems: list[str] = []
    rules: tuple[Rule, ...] = ()
    try:
        rules = escalation_rules_validate(policy=policy, text=escalation_rules)
    except RoutingInvalid as exc:
        problems.extend(exc.problems)
    try:
        route_candidates_validate(policy=policy, candidates=candidates)
    except RoutingInvalid as exc:
        problems.extend(exc.problems)
    if problems:
        raise RoutingInvalid(problems)
    return rules


def escalation_rules_validate(*, policy: str, text: str) -> tuple[Rule, ...]:
    """Check escalation rules for a policy. Returns the parsed rules ((): not escalate).

    Raises RoutingInvalid when rules are written for another policy or do not parse.
    """
    if policy != RoutingPolicy.ESCALATE:
        if text.strip():
            raise RoutingInvalid(
                [
                    "Escalation rules apply only to the escalate policy: clear them or "
                    "choose the escalate policy."
                ]
            )
        return ()
    try:
        return rules_parse(text=text)
    except RulesInvalid as exc:
        raise RoutingInvalid([f"Escalation rule {problem}." for problem in exc.problems]) from None


def route_candidates_validate(*, policy: str, candidates: Sequence[CandidateSpec]) -> None:
    """Check a policy's candidates. Raises RoutingInvalid with every problem found:
    slots the policy does not use, a missing model or credential, a credential without
    the base URL its provider needs, attempts or a timeout out of range, a tier without a
    model or with two, a chain of fewer than two, cheap and strong not one each or the
    same."""
    if policy not in POLICY_SLOTS:
        raise RoutingInvalid([f"Unknown routing policy {policy!r}."])
    problems: list[str] = []
    used = POLICY_SLOTS[policy]
    unused = sorted({c.slot for c in candidates if c.slot not in used})
    for slot in unused:
        label = _slot_label(slot)
        if policy == RoutingPolicy.SINGLE:
            problems.append(
                f"The single policy calls only the bound model: remove the '{label}' "
                "candidates or choose the policy that uses them."
            )
        else:
            problems.append(
                f"'{label}' candidates are not used by the {policy} policy: remove them or "
                "choose the policy that uses them."
            )
    for index, spec in enumerate(candidates, start=1):
        problems.extend(_candidate_problems(spec, who=_who(spec, index)))
    if policy == RoutingPolicy.TIERED:
        counts = Counter(c.slot for c in candidates)
        missing = [str(t) for t in TIER_SLOTS if counts[t] == 0]
        if missing:
            problems.append(
                f"The tiered policy needs a model for every tier; missing: {', '.join(missing)}."
            )
        for tier in TIER_SLOTS:
            if counts[tier] > 1:
                problems.append(f"Tier {tier} has {counts[tier]} models; give each tier one.")
    elif policy == RoutingPolicy.FALLBACK:
        chain = [c for c in candidates if c.slot == CandidateSlot.CHAIN]
        if len(chain) < 2:
            problems.append(f"A fallback chain needs at least two candidates; it has {len(chain)}.")
        seen: dict[tuple[int | None, int | None, str], int] = {}
        for index, spec in enumerate(chain, start=1):
            key = (_pk(spec.model), _pk(spec.credential), spec.upstream_model)
            if None not in key[:2] and key in seen:
                problems.append(
                    f"Fallback candidates {seen[key]} and {index} are the same model through "
                    "the same credential; a chain needs different ones."
                )
            seen.setdefault(key, index)
    elif policy == RoutingPolicy.ESCALATE:
        counts = Counter(c.slot for c in candidates)
        for slot in (CandidateSlot.CHEAP, CandidateSlot.STRONG):
            if counts[slot] != 1:
                problems.append(
                    f"The escalate policy needs exactly one {slot} model; it has {counts[slot]}."
                )
        cheap = [c for c in candidates if c.slot == CandidateSlot.CHEAP]
        strong = [c for c in candidates if c.slot == CandidateSlot.STRONG]
        if len(cheap) == len(strong) == 1 and _same(cheap[0], strong[0]):
            problems.append(
                "The cheap and strong models are the same model through the same credential; "
                "escalating would ask the same model again."
            )
    if problems:
        raise RoutingInvalid(problems)


def _candidate_problems(spec: CandidateSpec, *, who: str) -> list[str]:
    problems: list[str] = []
    if spec.model is None:
        problems.append(f"{who} has no model: choose the catalog model to call.")
    if spec.credential is None:
        problems.append(f"{who} has no credential: choose the key it is called with.")
    elif not spec.credential.base_url and not default_base_url(spec.credential.provider):
        provider = ProviderKind(spec.credential.provider).label
        problems.append(
            f"{who}: the credential {spec.credential.label!r} needs a base URL for {provider}."
        )
    if spec.attempts is not None and not 1 <= spec.attempts <= MAX_CANDIDATE_ATTEMPTS:
        problems.append(f"{who}: attempts must be between 1 and {MAX_CANDIDATE_ATTEMPTS}.")
    timeout = spec.timeout_seconds
    if timeout is not None and not 1 <= timeout <= MAX_CANDIDATE_TIMEOUT_SECONDS:
        problems.append(
            f"{who}: the timeout must be between 1 and {MAX_CANDIDATE_TIMEOUT_SECONDS} "
            "seconds (blank: ROSTER_PROVIDER_TIMEOUT)."
        )
    return problems


def _who(spec: CandidateSpec, index: int) -> str:
    model = f", {spec.model.slug}" if spec.model is not None else ""
    return f"Candidate {index} ({_slot_label(spec.slot)}{model})"


def _slot_label(slot: str) -> str:
    return str(CandidateSlot(slot).label) if slot in CandidateSlot.values else slot


def _pk(obj: CatalogModel | Credential | None) -> int | None:
    return None if obj is None else obj.pk


def _same(a: CandidateSpec, b: CandidateSpec) -> bool:
    return (
        a.model is not None
        and a.credential is not None
        and (_pk(a.model), _pk(a.credential), a.upstream_model)
        == (_pk(b.model), _pk(b.credential), b.upstream_model)
    )
