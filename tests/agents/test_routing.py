"""Routing policies: candidate order and reasons per policy, tier hints, validation with
readable messages (functions and the admin), and the tier hint on the API and the form."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from agents.models import CandidateSlot, RoleBinding, RouteCandidate, RoutingPolicy
from agents.routing import (
    CandidateSpec,
    ComplexityReading,
    RouteError,
    RoutingInvalid,
    candidate_spec_of,
    route_candidates_validate,
    route_over_budget,
    route_plan,
    routing_validate,
)
from agents.runtime import binding_for_role
from office.models import Task
from office.services import api_token_create
from tests.factories import (
    CatalogModelFactory,
    CredentialFactory,
    ModelPriceFactory,
    RoleFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def priced_model(slug: str):
    model = CatalogModelFactory(slug=slug)
    ModelPriceFactory(model=model)
    return model


def make_binding(policy: str = RoutingPolicy.SINGLE, **fields: Any) -> RoleBinding:
    role = RoleFactory(runnable=True)
    binding = RoleBinding.objects.get(role=role)
    binding.policy = policy
    for name, value in fields.items():
        setattr(binding, name, value)
    binding.save()
    return binding


def add_candidate(binding: RoleBinding, slot: str, slug: str, **fields: Any) -> RouteCandidate:
    return RouteCandidate.objects.create(
        binding=binding,
        slot=slot,
        model=priced_model(slug),
        credential=fields.pop("credential", None) or CredentialFactory(),
        **fields,
    )


def tiered_binding() -> RoleBinding:
    binding = make_binding(RoutingPolicy.TIERED)
    add_candidate(binding, CandidateSlot.LOW, "vendor/small")
    add_candidate(binding, CandidateSlot.MEDIUM, "vendor/middle")
    add_candidate(binding, CandidateSlot.HIGH, "vendor/large")
    return binding


def plan(binding: RoleBinding, *, prompt: str = "Do it.", tier_hint: str = "", classify=None):
    task = Task.objects.create(role=binding.role, prompt=prompt, tier_hint=tier_hint)
    loaded = binding_for_role(role=binding.role)
    assert loaded is not None
    return route_plan(task=task, binding=loaded, classify=classify)


def classifier(level: str, score: int = 42):
    calls: list[str] = []

    def classify(text: str) -> ComplexityReading:
        calls.append(text)
        return ComplexityReading(
            level=level, score=score, signals={"words": len(text.split())}, backend="builtin"
        )

    classify.calls = calls  # type: ignore[attr-defined]
    return classify


def never_called(text: str) -> ComplexityReading:
    raise AssertionError("the classifier must not be asked")


# --- Candidates and reasons per policy ------------------------------------------------------


def test_single_policy_calls_the_bound_model_with_the_full_retry_allowance(settings):
    settings.ROSTER_PROVIDER_MAX_ATTEMPTS = 3
    binding = make_binding()

    route = plan(binding, classify=never_called)

    [candidate] = route.candidates
    assert (candidate.slot, candidate.model, candidate.credential) == (
        "bound",
        binding.model,
        binding.credential,
    )
    assert candidate.attempts == 3
    assert not candidate.checked
    [decision] = route.decisions
    assert (decision.step, decision.outcome) == ("route", "single")
    assert decision.why == "Single policy: the role's bound model."


def test_a_tier_hint_on_a_single_role_is_noted_as_unused():
    route = plan(make_binding(), tier_hint="high", classify=never_called)

    assert "tier hint 'high' is not used by this policy" in route.decisions[0].why


def test_tiered_policy_takes_the_classifiers_class():
    classify = classifier("low", score=7)

    route = plan(tiered_binding(), prompt="Translate 'good morning'", classify=classify)

    [candidate] = route.candidates
    assert candidate.model.slug == "vendor/small"
    assert classify.calls == ["Translate 'good morning'"]
    tier, chosen = route.decisions
    assert (tier.step, tier.outcome) == ("tier", "low")
    assert tier.why == "The helper classified the prompt as low (score 7, builtin backend)."
    assert tier.data["score"] == 7
    assert tier.data["signals"] == {"words": 3}
    assert tier.data["source"] == "classifier"
    assert chosen.why == (
        "Tiered policy: tier low chosen; not used: medium (vendor/middle), high (vendor/large)."
    )


def test_tiered_policy_high_class_takes_the_high_model():
    route = plan(tiered_binding(), classify=classifier("high", score=91))

    assert route.candidates[0].model.slug == "vendor/large"


TRANSLATE = "Translate 'good morning' into French."
MULTI_PART_CODING = """Implement a Python module that parses ISO 8601 durations, then refactor
the billing code to use it.
1. Write a parser function with full error handling.
2. Add unit tests for every edge case.
3. Then optimize the hot path and explain the design.
```python
def parse(text):
    return text
```
Which cases are ambiguous? How should leap seconds be handled? What about negative ones?"""


def test_the_local_helper_sends_a_short_translation_to_the_low_model():
    route = plan(tiered_binding(), prompt=TRANSLATE)

    assert route.candidates[0].model.slug == "vendor/small"
    tier = route.decisions[0]
    assert tier.data["source"] == "classifier"
    assert (tier.data["level"], tier.data["backend"]) == ("low", "builtin")
    assert tier.data["signals"]["kind"] == "low"
    assert tier.data["helper_input_tokens"] > 0
    assert tier.why.startswith("The helper classified the prompt as low (score ")


def test_the_local_helper_sends_a_large_multi_part_coding_task_to_the_high_model():
    route = plan(tiered_binding(), prompt=MULTI_PART_CODING)

    assert route.candidates[0].model.slug == "vendor/large"
    assert route.decisions[0].data["level"] == "high"
    assert route.decisions[0].data["score"] >= 60


def test_a_hint_beats_the_local_helper_too():
    assert (
        plan(tiered_binding(), prompt=MULTI_PART_CODING, tier_hint="low").candidates[0].model.slug
        == "vendor/small"
    )


def test_a_tier_hint_beats_the_classifier():
    route = plan(tiered_binding(), tier_hint="high", classify=never_called)

    assert route.candidates[0].model.slug == "vendor/large"
    assert (
        route.decisions[0].why == "The task's tier hint 'high' wins; the classifier was not asked."
    )
    assert route.decisions[0].data == {"source": "hint"}


def test_a_broken_classifier_falls_back_to_the_medium_tier():
    def broken(text: str) -> ComplexityReading:
        raise RuntimeError("model file missing")

    route = plan(tiered_binding(), classify=broken)

    assert route.candidates[0].model.slug == "vendor/middle"
    assert route.decisions[0].why == (
        "The classifier failed (RuntimeError); the medium tier is used."
    )


def test_an_unknown_class_falls_back_to_the_medium_tier():
    route = plan(tiered_binding(), classify=classifier("extreme"))

    assert route.candidates[0].model.slug == "vendor/middle"
    assert "(unknown class 'extreme': medium used)" in route.decisions[0].why


def test_the_classifiers_own_fallback_is_recorded():
    def via_builtin(text: str) -> ComplexityReading:
        return ComplexityReading(
            level="medium",
            score=50,
            signals={},
            backend="builtin",
            fallback_reason="local model unreachable",
        )

    route = plan(tiered_binding(), classify=via_builtin)

    assert "builtin backend; local model unreachable" in route.decisions[0].why


def test_fallback_chain_is_ordered_by_position_with_one_attempt_each_by_default():
    binding = make_binding(RoutingPolicy.FALLBACK)
    add_candidate(binding, CandidateSlot.CHAIN, "cloud/big", position=2, attempts=2)
    add_candidate(binding, CandidateSlot.CHAIN, "local/llama", position=1)
    add_candidate(binding, CandidateSlot.CHAIN, "cloud/other", position=2)

    route = plan(binding)

    assert [c.model.slug for c in route.candidates] == ["local/llama", "cloud/big", "cloud/other"]
    assert [c.attempts for c in route.candidates] == [1, 2, 1]
    assert [c.reason for c in route.candidates] == [
        "fallback 1 of 3",
        "fallback 2 of 3",
        "fallback 3 of 3",
    ]
    assert route.decisions[0].why.startswith("Fallback policy: 3 candidates in order")
    assert [c["model"] for c in route.decisions[0].data["candidates"]] == [
        "local/llama",
        "cloud/big",
        "cloud/other",
    ]


def test_escalate_puts_the_checked_cheap_model_before_the_strong_one():
    binding = make_binding(RoutingPolicy.ESCALATE, escalation_rules="empty\nmin_chars 50")
    add_candidate(binding, CandidateSlot.STRONG, "cloud/strong")
    add_candidate(binding, CandidateSlot.CHEAP, "cloud/cheap")

    route = plan(binding)

    cheap, strong = route.candidates
    assert (cheap.model.slug, cheap.checked) == ("cloud/cheap", True)
    assert (strong.model.slug, strong.checked) == ("cloud/strong", False)
    assert [rule.text for rule in route.rules] == ["empty", "min_chars 50"]
    assert route.decisions[0].why.endswith("fails these rules: empty, min_chars 50.")


def test_escalate_without_rules_uses_the_default_rules():
    binding = make_binding(RoutingPolicy.ESCALATE)
    add_candidate(binding, CandidateSlot.CHEAP, "cloud/cheap")
    add_candidate(binding, CandidateSlot.STRONG, "cloud/strong")

    route = plan(binding)

    assert [rule.text for rule in route.rules] == ["empty", "refusal", "self_assessment"]


@pytest.mark.parametrize(
    ("policy", "slots", "message"),
    [
        (RoutingPolicy.TIERED, ["low", "medium"], "its tiered policy has no model for tier high"),
        (RoutingPolicy.FALLBACK, ["chain"], "its fallback chain has 1 candidate(s)"),
        (RoutingPolicy.ESCALATE, ["strong"], "its escalation has no cheap model"),
    ],
)
def test_a_misconfigured_route_is_refused_with_a_readable_reason(policy, slots, message):
    binding = make_binding(policy)
    for index, slot in enumerate(slots):
        add_candidate(binding, slot, f"vendor/m{index}")

    with pytest.raises(RouteError) as caught:
        plan(binding)

    assert str(caught.value) == (
        f"The role's routing is misconfigured: {message}. An admin can fix it under "
        "Agents > Role bindings."
    )


def test_over_budget_candidate_uses_the_bindings_credential_unless_set():
    cheap = priced_model("local/free")
    binding = make_binding(over_budget_model=cheap)

    candidate = route_over_budget(binding=binding)

    assert candidate is not None
    assert (candidate.model, candidate.credential, candidate.slot) == (
        cheap,
        binding.credential,
        "over_budget",
    )
    assert route_over_budget(binding=make_binding()) is None


# --- Validation functions -------------------------------------------------------------------


def spec(slot: str, model=None, credential=None, **fields: Any) -> CandidateSpec:
    return CandidateSpec(slot=slot, model=model, credential=credential, **fields)


@pytest.fixture
def key():
    return CredentialFactory(label="OpenRouter")


def problems_of(policy: str, candidates: list[CandidateSpec], rules: str = "") -> list[str]:
    with pytest.raises(RoutingInvalid) as caught:
        routing_validate(policy=policy, candidates=candidates, escalation_rules=rules)
    return caught.value.problems


def test_a_valid_tiered_configuration_passes(key):
    models = [CatalogModelFactory() for _ in range(3)]

    rules = routing_validate(
        policy="tiered",
        candidates=[
            spec(t, m, key) for t, m in zip(["low", "medium", "high"], models, strict=True)
        ],
        escalation_rules="",
    )

    assert rules == ()


def test_a_tiered_map_with_a_missing_tier_is_refused(key):
    model = CatalogModelFactory()

    assert problems_of("tiered", [spec("low", model, key), spec("high", model, key)]) == [
        "The tiered policy needs a model for every tier; missing: medium."
    ]


def test_a_tier_with_two_models_is_refused(key):
    model = CatalogModelFactory()
    candidates = [spec(t, model, key) for t in ("low", "low", "medium", "high")]

    assert problems_of("tiered", candidates) == ["Tier low has 2 models; give each tier one."]


def test_a_candidate_without_a_credential_is_refused_by_name(key):
    model = CatalogModelFactory(slug="openai/gpt-4.1")
    candidates = [spec("low", model, key), spec("medium", model, key), spec("high", model, None)]

    assert problems_of("tiered", candidates) == [
        "Candidate 3 (Tier high, openai/gpt-4.1) has no credential: choose the key it is "
        "called with."
    ]


def test_a_credential_without_the_base_url_its_provider_needs_is_refused():
    local = CredentialFactory(label="vLLM box", provider="vllm", base_url="")
    model = CatalogModelFactory(slug="local/qwen")
    cloud = CredentialFactory()

    problems = problems_of("fallback", [spec("chain", model, local), spec("chain", model, cloud)])

    assert problems == [
        "Candidate 1 (Fallback chain, local/qwen): the credential 'vLLM box' needs a base URL "
        "for vLLM (local)."
    ]


def test_a_fallback_chain_of_one_is_refused(key):
    assert problems_of("fallback", [spec("chain", CatalogModelFactory(), key)]) == [
        "A fallback chain needs at least two candidates; it has 1."
    ]


def test_a_fallback_chain_repeating_a_candidate_is_refused(key):
    model = CatalogModelFactory()

    assert problems_of("fallback", [spec("chain", model, key), spec("chain", model, key)]) == [
        "Fallback candidates 1 and 2 are the same model through the same credential; a chain "
        "needs different ones."
    ]


def test_attempts_out_of_range_are_refused(key):
    a, b = CatalogModelFactory(slug="a/one"), CatalogModelFactory(slug="b/two")

    problems = problems_of("fallback", [spec("chain", a, key, attempts=0), spec("chain", b, key)])

    assert problems == ["Candidate 1 (Fallback chain, a/one): attempts must be between 1 and 10."]


def test_escalate_needs_one_cheap_and_one_strong_that_differ(key):
    model = CatalogModelFactory()

    assert problems_of("escalate", [spec("cheap", model, key)]) == [
        "The escalate policy needs exactly one strong model; it has 0."
    ]
    assert problems_of("escalate", [spec("cheap", model, key), spec("strong", model, key)]) == [
        "The cheap and strong models are the same model through the same credential; "
        "escalating would ask the same model again."
    ]


def test_an_unparseable_escalation_rule_is_refused_with_its_line(key):
    cheap, strong = CatalogModelFactory(), CatalogModelFactory()

    problems = problems_of(
        "escalate",
        [spec("cheap", cheap, key), spec("strong", strong, key)],
        rules="empty\nmin_chars many",
    )

    assert problems == [
        "Escalation rule line 2 (min_chars many): min_chars needs a whole number from 1 to "
        "1,000,000."
    ]


def test_rules_and_candidates_a_policy_does_not_use_are_refused(key):
    model = CatalogModelFactory()

    assert problems_of("single", [spec("low", model, key)], rules="empty") == [
        "Escalation rules apply only to the escalate policy: clear them or choose the "
        "escalate policy.",
        "The single policy calls only the bound model: remove the 'Tier low' candidates or "
        "choose the policy that uses them.",
    ]


def test_every_problem_is_reported_at_once(key):
    model = CatalogModelFactory(slug="x/y")

    problems = problems_of("tiered", [spec("low", model, None), spec("cheap", model, key)])

    assert problems == [
        "'Escalate: cheap (answers first)' candidates are not used by the tiered policy: "
        "remove them or choose the policy that uses them.",
        "Candidate 1 (Tier low, x/y) has no credential: choose the key it is called with.",
        "The tiered policy needs a model for every tier; missing: medium, high.",
    ]


def test_candidates_alone_can_be_validated(key):
    with pytest.raises(RoutingInvalid):
        route_candidates_validate(policy="fallback", candidates=[])
    route_candidates_validate(policy="single", candidates=[])


# --- The admin ------------------------------------------------------------------------------


def binding_post(binding_fields: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    data = {
        "upstream_model": "",
        "max_tokens": 1024,
        "escalation_rules": "",
        "candidates-TOTAL_FORMS": len(rows),
        "candidates-INITIAL_FORMS": 0,
        "candidates-MIN_NUM_FORMS": 0,
        "candidates-MAX_NUM_FORMS": 1000,
        **binding_fields,
    }
    for index, row in enumerate(rows):
        values = {"position": 0, "upstream_model": "", "attempts": "", "credential": "", **row}
        for name, value in values.items():
            data[f"candidates-{index}-{name}"] = value
    return data


@pytest.fixture
def admin_setup():
    role = RoleFactory(slug="coder")
    models = {slug: priced_model(slug) for slug in ("m/low", "m/mid", "m/high", "m/main")}
    credential = CredentialFactory(label="OpenRouter")
    base = {
        "role": role.pk,
        "model": models["m/main"].pk,
        "credential": credential.pk,
    }
    return role, models, credential, base


def add_binding(admin_client: Client, data: dict[str, Any]):
    return admin_client.post(reverse("admin:agents_rolebinding_add"), data)


def page_text(response) -> str:
    return response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')


def test_admin_saves_a_tiered_binding_with_its_candidates(admin_client, admin_setup):
    role, models, credential, base = admin_setup
    rows = [
        {"slot": tier, "model": models[slug].pk, "credential": credential.pk}
        for tier, slug in (("low", "m/low"), ("medium", "m/mid"), ("high", "m/high"))
    ]

    response = add_binding(admin_client, binding_post({**base, "policy": "tiered"}, rows))

    assert response.status_code == 302, page_text(response)[:3000]
    binding = RoleBinding.objects.get(role=role)
    assert binding.policy == "tiered"
    assert sorted(binding.candidates.values_list("slot", flat=True)) == ["high", "low", "medium"]
    page = admin_client.get(reverse("admin:agents_rolebinding_change", args=[binding.pk]))
    assert page.status_code == 200
    assert "Route candidates" in page.content.decode()


@pytest.mark.parametrize(
    ("policy", "rows", "rules", "message"),
    [
        (
            "tiered",
            [("low", "m/low", True), ("high", "m/high", True)],
            "",
            "The tiered policy needs a model for every tier; missing: medium.",
        ),
        (
            "tiered",
            [("low", "m/low", True), ("medium", "m/mid", True), ("high", "m/high", False)],
            "",
            "Candidate 3 (Tier high, m/high) has no credential: choose the key it is called with.",
        ),
        (
            "fallback",
            [("chain", "m/low", True)],
            "",
            "A fallback chain needs at least two candidates; it has 1.",
        ),
        (
            "escalate",
            [("cheap", "m/low", True), ("strong", "m/high", True)],
            "empty\nlongest_answer",
            "Escalation rule line 2 (longest_answer): unknown rule 'longest_answer'",
        ),
        (
            "escalate",
            [("cheap", "m/low", True), ("strong", "m/high", True)],
            'json_schema {"type": "object"',
            'Escalation rule line 1 (json_schema {"type": "object"): the schema is not valid JSON',
        ),
        (
            "single",
            [("low", "m/low", True)],
            "",
            "The single policy calls only the bound model: remove the 'Tier low' candidates",
        ),
    ],
    ids=[
        "missing-tier",
        "no-credential",
        "short-chain",
        "unknown-rule",
        "bad-schema",
        "unused-candidates",
    ],
)
def test_admin_refuses_bad_routing_with_a_clear_message(
    admin_client, admin_setup, policy, rows, rules, message
):
    role, models, credential, base = admin_setup
    posted = [
        {"slot": slot, "model": models[slug].pk, "credential": credential.pk if with_key else ""}
        for slot, slug, with_key in rows
    ]

    response = add_binding(
        admin_client,
        binding_post({**base, "policy": policy, "escalation_rules": rules}, posted),
    )

    assert response.status_code == 200
    assert message in page_text(response)
    assert not RoleBinding.objects.filter(role=role).exists()
    assert not RouteCandidate.objects.exists()


def test_admin_posting_the_binding_alone_checks_the_policy_against_saved_candidates(
    admin_client, admin_setup
):
    role, models, credential, base = admin_setup
    binding = RoleBinding.objects.create(
        role=role, model=models["m/main"], credential=credential, policy="single"
    )
    url = reverse("admin:agents_rolebinding_change", args=[binding.pk])

    response = admin_client.post(
        url, {**base, "upstream_model": "", "max_tokens": 1024, "policy": "fallback"}
    )

    assert response.status_code == 200
    assert "A fallback chain needs at least two candidates; it has 0." in page_text(response)
    binding.refresh_from_db()
    assert binding.policy == "single"


# --- The tier hint on the way in ------------------------------------------------------------


@pytest.fixture
def api() -> APIClient:
    _, raw = api_token_create(user=UserFactory(groups=["staff"]), name="agent")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_the_api_accepts_a_tier_hint_and_shows_it_with_the_decisions(api):
    role = RoleFactory(runnable=True)

    response = api.post(
        reverse("office_api:task_list"),
        {"role": role.slug, "prompt": "Port the parser", "tier_hint": "HIGH"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["tier_hint"], body["routing_decisions"]) == ("high", [])
    assert Task.objects.get().tier_hint == "high"


def test_the_api_refuses_an_unknown_tier_hint(api):
    role = RoleFactory(runnable=True)

    response = api.post(
        reverse("office_api:task_list"),
        {"role": role.slug, "prompt": "x", "tier_hint": "extreme"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "tier_hint_invalid",
        "message": "The tier hint 'extreme' is not one of low, medium, high.",
        "field": "tier_hint",
    }
    assert not Task.objects.exists()


def test_the_form_takes_a_tier_hint(client: Client):
    client.force_login(UserFactory(groups=["staff"]))
    role = RoleFactory(runnable=True)

    response = client.post(
        reverse("office:task_create"), {"role": role.slug, "prompt": "Hi", "tier_hint": "low"}
    )

    assert response.status_code == 302
    task = Task.objects.get()
    assert task.tier_hint == "low"
    page = client.get(reverse("office:task_detail", args=[task.pk])).content.decode()
    assert "Difficulty (tier hint)" in page
    assert "Not routed yet." in page


def test_the_detail_page_shows_the_decisions_without_javascript(client: Client):
    client.force_login(UserFactory(groups=["manager"]))
    task = Task.objects.create(
        role=RoleFactory(),
        prompt="x",
        status="done",
        routing_decisions=[
            {
                "execution": 1,
                "step": "tier",
                "outcome": "low",
                "why": "The task's tier hint 'low' wins.",
            },
            {
                "execution": 1,
                "step": "candidate",
                "outcome": "answered",
                "why": "Answered <fast>.",
                "model": "vendor/small",
                "slot": "low",
            },
        ],
    )

    page = client.get(reverse("office:task_detail", args=[task.pk])).content.decode()

    assert '<h3 id="routing-heading">Routing</h3>' in page
    assert "<code>vendor/small</code>" in page
    assert "Answered &lt;fast&gt;." in page
    assert "The task&#x27;s tier hint &#x27;low&#x27; wins." in page


# --- The demo office ------------------------------------------------------------------------


def test_the_demo_roles_show_valid_routing_policies():
    from agents.demo import demo_seed

    demo_seed(sandbox_url="http://127.0.0.1:8765")
    demo_seed(sandbox_url="http://127.0.0.1:8765")

    policies = dict(RoleBinding.objects.values_list("role__slug", "policy"))
    assert policies == {
        "coder": "tiered",
        "copywriter": "escalate",
        "designer": "single",
        "researcher": "single",
        "secretary": "single",
    }
    for binding in RoleBinding.objects.all():
        routing_validate(
            policy=binding.policy,
            candidates=[candidate_spec_of(row) for row in binding.candidates.all()],
            escalation_rules=binding.escalation_rules,
        )
    assert RouteCandidate.objects.count() == 5  # seeding twice added nothing


def test_a_tier_hint_that_is_not_a_tier_is_left_to_the_classifier():
    route = plan(tiered_binding(), tier_hint="urgent", classify=classifier("high"))

    assert route.candidates[0].model.slug == "vendor/large"
    assert route.decisions[0].data["source"] == "classifier"


# --- A candidate's own timeout --------------------------------------------------------------


def test_a_candidates_timeout_travels_with_it_and_is_recorded():
    binding = make_binding(RoutingPolicy.FALLBACK)
    add_candidate(binding, CandidateSlot.CHAIN, "local/llama", position=1, timeout_seconds=5)
    add_candidate(binding, CandidateSlot.CHAIN, "cloud/big", position=2)

    route = plan(binding)

    assert [c.timeout for c in route.candidates] == [5, None]
    local, cloud = route.decisions[0].data["candidates"]
    assert local["timeout_seconds"] == 5
    assert "timeout_seconds" not in cloud  # the provider timeout applies


@pytest.mark.parametrize("timeout", [0, 601])
def test_a_timeout_out_of_range_is_refused_by_name(key, timeout):
    a, b = CatalogModelFactory(slug="a/one"), CatalogModelFactory(slug="b/two")

    problems = problems_of(
        "fallback", [spec("chain", a, key, timeout_seconds=timeout), spec("chain", b, key)]
    )

    assert problems == [
        "Candidate 1 (Fallback chain, a/one): the timeout must be between 1 and 600 seconds "
        "(blank: ROSTER_PROVIDER_TIMEOUT)."
    ]


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (0, "Enter a timeout of at least 1 second, or leave it blank for ROSTER_PROVIDER_TIMEOUT."),
        (601, "Candidate 1 (Fallback chain, m/low): the timeout must be between 1 and 600"),
    ],
)
def test_admin_refuses_a_timeout_out_of_range(admin_client, admin_setup, timeout, message):
    role, models, credential, base = admin_setup
    rows = [
        {"slot": "chain", "position": 1, "model": models["m/low"].pk, "credential": credential.pk},
        {"slot": "chain", "position": 2, "model": models["m/high"].pk, "credential": credential.pk},
    ]
    rows[0]["timeout_seconds"] = timeout

    response = add_binding(admin_client, binding_post({**base, "policy": "fallback"}, rows))

    assert response.status_code == 200
    assert message in page_text(response)
    assert not RoleBinding.objects.filter(role=role).exists()


def test_admin_saves_a_candidates_timeout(admin_client, admin_setup):
    role, models, credential, base = admin_setup
    rows = [
        {"slot": "chain", "position": 1, "model": models["m/low"].pk, "credential": credential.pk},
        {"slot": "chain", "position": 2, "model": models["m/high"].pk, "credential": credential.pk},
    ]
    rows[0]["timeout_seconds"] = 3

    response = add_binding(admin_client, binding_post({**base, "policy": "fallback"}, rows))

    assert response.status_code == 302, page_text(response)[:3000]
    binding = RoleBinding.objects.get(role=role)
    local, cloud = binding.candidates.order_by("position")
    assert (local.timeout_seconds, cloud.timeout_seconds) == (3, None)
    assert candidate_spec_of(local).timeout_seconds == 3
