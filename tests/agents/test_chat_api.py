"""The OpenAI-compatible endpoint as its users meet it: the official `openai` SDK over a
real socket (pytest-django's live server) against the real sandbox provider process,
streaming and not, on each wire format a role's model may speak; billing checked in the
ledger to the last digit."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
from django.conf import settings
from django.utils import timezone

from agents.models import CandidateSlot, RoleBinding, RouteCandidate, RoutingPolicy
from agents.providers.base import ChatMessage, ChatRequest, Endpoint
from agents.providers.http import reset_client
from agents.providers.registry import adapter_for
from agents.services import credential_create
from billing.catalog import catalog_parse, catalog_sync
from billing.models import Budget, CatalogModel, PricingBasis, Usage, UsageStatus
from office.models import ApiToken, Role, Task, TaskKind, TaskStatus
from office.services import api_token_create
from tests.canary import OPENAI_KEY, SANDBOX_KEY
from tests.factories import UserFactory
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# (provider kind, catalog model, model name on the wire, base-URL suffix on the sandbox)
WIRES = [
    ("openrouter", "deepseek/deepseek-v4-pro", "deepseek/deepseek-v4-pro", "/api/v1"),
    ("openai", "openai/gpt-4.1-mini", "gpt-4.1-mini", "/v1"),
    ("anthropic", "anthropic/claude-haiku-4.5", "claude-haiku-4.5", ""),
    ("gemini", "google/gemini-2.5-flash-lite", "gemini-2.5-flash-lite", ""),
]
IDS = [wire[0] for wire in WIRES]


def snapshot() -> dict[str, dict]:
    data = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text())["data"]
    return {entry["id"]: entry for entry in data}


@pytest.fixture(autouse=True)
def fresh_client() -> Iterator[None]:
    reset_client()
    yield
    reset_client()


@pytest.fixture
def catalog(transactional_db) -> dict[str, CatalogModel]:
    entries = snapshot()
    catalog_sync(entries=catalog_parse({"data": [entries[slug] for _, slug, _, _ in WIRES]}))
    return {model.slug: model for model in CatalogModel.objects.all()}


def bind(
    slug: str, model: CatalogModel, *, provider: str, base_url: str, system_prompt: str = ""
) -> Role:
    role = Role.objects.create(
        slug=slug,
        name=slug.title(),
        system_prompt=system_prompt or f"You are the {slug} ({uuid.uuid4().hex[:8]}).",
    )
    credential = credential_create(
        label=f"{slug} key", provider=provider, base_url=base_url, raw_secret=SANDBOX_KEY
    )
    RoleBinding.objects.create(role=role, model=model, credential=credential, max_tokens=256)
    return role


def token_for(user, *, roles: tuple[Role, ...] = (), revoked_at=None, expires_at=None) -> str:
    token, raw = api_token_create(user=user, name="test agent", roles=roles, expires_at=expires_at)
    if revoked_at is not None:
        ApiToken.objects.filter(pk=token.pk).update(revoked_at=revoked_at)
    return raw


@pytest.fixture
def agent():
    return UserFactory(username=f"agent-{uuid.uuid4().hex[:6]}", groups=["staff"])


def sdk(live_server, raw_token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=raw_token, max_retries=0)


def expected_answer(sandbox, role: Role, *, provider: str, upstream: str, suffix: str, **call):
    """What the sandbox answers to the conversation the endpoint forwards: asked directly,
    with the same adapter (the sandbox is deterministic; its prompt cache changes only
    the usage)."""
    request = ChatRequest(
        model=upstream,
        messages=tuple(ChatMessage(**m) for m in call["messages"]),
        max_tokens=256,
        system=role.system_prompt,
        prefix=call.get("system", ""),
    )
    endpoint = Endpoint(base_url=sandbox.url + suffix, api_key=SANDBOX_KEY)
    return adapter_for(provider).complete(endpoint=endpoint, request=request).text


def logged_cost(sandbox, call_id: str) -> Decimal:
    (entry,) = sandbox.requests(call_id=call_id)
    return Decimal(entry["cost"])


def assert_billed_to_a_task(*, task_id: int, role: Role, user, model: CatalogModel, provider):
    task = Task.objects.get(pk=task_id)
    (row,) = Usage.objects.filter(task=task)
    assert task.status == TaskStatus.DONE, task.error
    assert (task.kind, task.role_id, task.created_by_id) == (TaskKind.TASK, role.pk, user.pk)
    assert (row.role_id, row.model_id, row.provider) == (role.pk, model.pk, provider)
    assert row.person_id == user.pk
    assert row.status == UsageStatus.SETTLED
    assert row.basis in (PricingBasis.COMPUTED, PricingBasis.REPORTED)
    assert task.cost == row.cost > 0
    assert (task.input_tokens, task.output_tokens) == (row.input_tokens, row.output_tokens)
    return task, row


# --- Models ---------------------------------------------------------------------------------


def test_models_lists_the_roles_the_token_may_use(live_server, sandbox, catalog, agent):
    model = catalog["openai/gpt-4.1-mini"]
    coder = bind("coder", model, provider="openai", base_url=sandbox.url + "/v1")
    writer = bind("writer", model, provider="openai", base_url=sandbox.url + "/v1")
    Role.objects.create(slug="unbound", name="Unbound")  # cannot run: not listed

    everything = sdk(live_server, token_for(agent)).models.list()
    scoped = sdk(live_server, token_for(agent, roles=(writer,)))

    assert [m.id for m in everything.data] == ["coder", "writer"]
    assert [m.id for m in scoped.models.list().data] == ["writer"]
    assert scoped.models.retrieve("writer").owned_by == "roster"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        scoped.models.retrieve(coder.slug)
    assert refused.value.code == "model_not_allowed"


# --- Answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "slug", "upstream", "suffix"), WIRES, ids=IDS)
def test_a_chat_completion_is_the_roles_answer_billed_to_a_task(
    live_server, sandbox, catalog, agent, provider, slug, upstream, suffix
):
    role = bind("coder", catalog[slug], provider=provider, base_url=sandbox.url + suffix)
    client = sdk(live_server, token_for(agent))
    messages = [
        {"role": "user", "content": "Write a function that adds two numbers."},
        {"role": "assistant", "content": "def add(a, b): return a + b"},
        {"role": "user", "content": [{"type": "text", "text": "Now add type hints."}]},
    ]

    raw = client.chat.completions.with_raw_response.create(
        model="coder",
        messages=[{"role": "system", "content": "Answer in Python."}, *messages],
        max_tokens=256,
    )
    completion = raw.parse()

    flat = [
        {"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
         m["content"][0]["text"]}
        for m in messages
    ]  # fmt: skip
    answer = expected_answer(
        sandbox,
        role,
        provider=provider,
        upstream=upstream,
        suffix=suffix,
        messages=flat,
        system="Answer in Python.",
    )
    assert completion.choices[0].message.content == answer
    assert answer.startswith(f"Sandbox answer from {upstream}: Now add type hints.")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "coder"
    task, row = assert_billed_to_a_task(
        task_id=int(raw.headers["x-roster-task-id"]),
        role=role,
        user=agent,
        model=catalog[slug],
        provider=provider,
    )
    assert completion.id == f"chatcmpl-{row.call_id}"
    assert completion.usage.prompt_tokens == row.input_tokens
    assert completion.usage.completion_tokens == row.output_tokens
    # Exactly what the provider charged for that call: catalog prices x its usage.
    assert row.cost == logged_cost(sandbox, row.call_id)
    assert Decimal(raw.headers["x-roster-cost"]) == row.cost
    assert task.result == answer
    assert task.prompt == "Now add type hints."


@pytest.mark.parametrize(("provider", "slug", "upstream", "suffix"), WIRES, ids=IDS)
def test_a_streamed_completion_ends_with_usage_and_settles_its_call(
    live_server, sandbox, catalog, agent, provider, slug, upstream, suffix
):
    role = bind("coder", catalog[slug], provider=provider, base_url=sandbox.url + suffix)
    client = sdk(live_server, token_for(agent))
    messages = [{"role": "user", "content": "Explain recursion in one paragraph please."}]

    with client.chat.completions.with_streaming_response.create(
        model="coder", messages=messages, stream=True
    ) as response:
        task_id = int(response.headers["x-roster-task-id"])
        chunks = list(response.parse())

    choices = [c.choices[0] for c in chunks if c.choices]
    pieces = [choice.delta.content for choice in choices if choice.delta.content]
    answer = expected_answer(
        sandbox, role, provider=provider, upstream=upstream, suffix=suffix, messages=messages
    )
    assert len(pieces) > 3  # streamed, not sent whole
    assert "".join(pieces) == answer
    assert [choice.finish_reason for choice in choices if choice.finish_reason] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    task, row = assert_billed_to_a_task(
        task_id=task_id, role=role, user=agent, model=catalog[slug], provider=provider
    )
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        row.input_tokens,
        row.output_tokens,
    )
    assert row.cost == logged_cost(sandbox, row.call_id)
    assert {c.id for c in chunks} == {f"chatcmpl-{row.call_id}"}
    assert task.result == answer


def test_a_client_that_hangs_up_mid_stream_still_settles_the_call(
    live_server, sandbox, catalog, agent, settings
):
    # A long answer (100,000 words, one chunk each), so that the hang-up comes early.
    settings.ROSTER_MAX_TOKENS_LIMIT = 400_000
    model = catalog["openai/gpt-4.1-mini"]
    bind("coder", model, provider="openai", base_url=sandbox.url + "/v1")
    raw = token_for(agent)
    body = {
        "model": "coder",
        "stream": True,
        "max_tokens": 400_000,
        "messages": [{"role": "user", "content": "Tell a long story [[sandbox words=100000]]"}],
    }

    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            live_server.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {raw}"},
        ) as response,
    ):
        assert response.status_code == 200
        task_id = int(response.headers["x-roster-task-id"])
        lines = response.iter_lines()
        first = [next(lines) for _ in range(6)]
        assert first[0].startswith("data: ")
        # Leaving the block closes the connection with most of the stream unread.

    def settled() -> Usage | None:
        row = Usage.objects.filter(task_id=task_id).first()
        return row if row is not None and row.status != UsageStatus.PENDING else None

    row = wait_until(settled, timeout=60, what="the abandoned stream's settlement")
    task = Task.objects.get(pk=task_id)
    assert task.status == TaskStatus.CANCELLED
    assert row.status == UsageStatus.SETTLED
    assert row.basis == PricingBasis.ESTIMATED
    # Billed for what was generated before the hang-up: some, not the whole answer.
    (entry,) = sandbox.requests(call_id=row.call_id)
    assert 0 < row.output_tokens < entry["output_tokens"]
    assert task.cost == row.cost > 0


# --- Routing policies ----------------------------------------------------------------------


def escalating(sandbox, catalog) -> Role:
    """A role whose cheap model (gpt-4.1-mini) answers first and is checked, and whose
    strong model (claude-haiku-4.5) answers when the check fails."""
    role = bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai",
                base_url=sandbox.url + "/v1")  # fmt: skip
    binding = RoleBinding.objects.get(role=role)
    binding.policy = RoutingPolicy.ESCALATE
    binding.escalation_rules = "empty\nrefusal\nself_assessment"
    binding.save()
    for slot, slug, provider, suffix in (
        (CandidateSlot.CHEAP, "openai/gpt-4.1-mini", "openai", "/v1"),
        (CandidateSlot.STRONG, "anthropic/claude-haiku-4.5", "anthropic", ""),
    ):
        RouteCandidate.objects.create(
            binding=binding,
            slot=slot,
            model=catalog[slug],
            credential=credential_create(
                label=f"{slot} key", provider=provider, base_url=sandbox.url + suffix,
                raw_secret=SANDBOX_KEY,
            ),
        )  # fmt: skip
    return role


def test_an_escalating_role_answers_with_the_strong_model_when_the_cheap_answer_fails(
    live_server, sandbox, catalog, agent
):
    escalating(sandbox, catalog)
    client = sdk(live_server, token_for(agent))

    raw = client.chat.completions.with_raw_response.create(
        model="coder",
        messages=[
            {"role": "user", "content": "Summarise it [[sandbox quality=poor@gpt-4.1-mini]]"}
        ],
    )

    text = raw.parse().choices[0].message.content
    assert text.startswith("Sandbox answer from claude-haiku-4.5: Summarise it")
    assert "ROSTER-SELF-CHECK" not in text
    task = Task.objects.get(pk=int(raw.headers["x-roster-task-id"]))
    cheap, strong = Usage.objects.filter(task=task).order_by("attempt")
    assert (cheap.model.slug, strong.model.slug) == (
        "openai/gpt-4.1-mini",
        "anthropic/claude-haiku-4.5",
    )
    assert cheap.status == strong.status == UsageStatus.SETTLED
    assert task.cost == cheap.cost + strong.cost
    assert raw.headers["x-roster-model"] == "anthropic/claude-haiku-4.5"
    assert task.model_label.endswith(
        "(escalated from openai/gpt-4.1-mini: its answer failed the check)"
    )


def test_an_escalating_roles_good_cheap_answer_streams_as_one_checked_piece(
    live_server, sandbox, catalog, agent
):
    escalating(sandbox, catalog)
    client = sdk(live_server, token_for(agent))

    chunks = list(
        client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "Summarise it."}], stream=True
        )
    )

    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 1
    assert pieces[0].startswith("Sandbox answer from gpt-4.1-mini: Summarise it.")
    assert "ROSTER-SELF-CHECK" not in pieces[0]
    (row,) = Usage.objects.all()
    assert chunks[-1].usage.completion_tokens == row.output_tokens
    assert Task.objects.get().status == TaskStatus.DONE


def test_a_stream_the_server_closes_before_reading_it_is_settled_too(
    client, sandbox, catalog, agent
):
    bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai", base_url=sandbox.url + "/v1")
    body = {"model": "coder", "stream": True, "messages": [{"role": "user", "content": "Hi."}]}

    response = client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token_for(agent)}",
    )
    assert response.streaming
    response.close()  # as a WSGI server does when the client left before the first write

    (row,) = Usage.objects.all()
    assert (row.status, row.basis) == (UsageStatus.SETTLED, PricingBasis.ESTIMATED)
    assert Task.objects.get().status == TaskStatus.CANCELLED


def test_a_credentials_rate_limit_is_a_429_with_retry_after(live_server, sandbox, catalog, agent):
    role = bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai",
                base_url=sandbox.url + "/v1")  # fmt: skip
    credential = RoleBinding.objects.get(role=role).credential
    credential.requests_per_minute = 1
    credential.save()
    client = sdk(live_server, token_for(agent))
    hello = [{"role": "user", "content": "Hi."}]

    client.chat.completions.create(model="coder", messages=hello)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="coder", messages=hello)

    assert limited.value.code == "rate_limit_exceeded"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 61
    statuses = sorted(Task.objects.values_list("status", flat=True))
    assert statuses == [TaskStatus.DONE, TaskStatus.FAILED]
    assert Usage.objects.count() == 1  # the refused call never left


# --- Refusals -------------------------------------------------------------------------------


def test_a_blocking_budget_refuses_before_any_call_is_made(live_server, sandbox, catalog, agent):
    role = bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai",
                base_url=sandbox.url + "/v1")  # fmt: skip
    Budget.objects.create(
        name="Coder cap", scope="role", role=role, period="month", limit=Decimal("0.000001")
    )
    before = len(sandbox.requests())

    with pytest.raises(openai.RateLimitError) as refused:
        sdk(live_server, token_for(agent)).chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "Spend money."}]
        )

    assert refused.value.code == "budget_exceeded"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "Coder cap" in refused.value.message
    assert len(sandbox.requests()) == before  # no provider call
    assert Usage.objects.count() == 0
    (task,) = Task.objects.all()
    assert task.status == TaskStatus.OVER_BUDGET


def test_a_downgrading_budget_answers_with_the_over_budget_model(
    live_server, sandbox, catalog, agent
):
    role = bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai",
                base_url=sandbox.url + "/v1")  # fmt: skip
    free = CatalogModel.objects.create(slug="moonshotai/kimi-k2.6:free", name="Free")
    free.prices.create(source="sync", prompt=Decimal(0), completion=Decimal(0))
    RoleBinding.objects.filter(role=role).update(over_budget_model=free)
    Budget.objects.create(
        name="Coder cap", scope="role", role=role, period="month", limit=Decimal("0.000001"),
        action="downgrade",
    )  # fmt: skip

    raw = sdk(live_server, token_for(agent)).chat.completions.with_raw_response.create(
        model="coder", messages=[{"role": "user", "content": "Spend less."}]
    )

    text = raw.parse().choices[0].message.content
    assert text.startswith("Sandbox answer from kimi-k2.6:free: Spend less.")
    assert raw.headers["x-roster-model"] == free.slug
    task = Task.objects.get(pk=int(raw.headers["x-roster-task-id"]))
    assert task.status == TaskStatus.DONE
    assert "downgraded" in task.model_label
    (row,) = Usage.objects.filter(task=task)
    assert (row.model_id, row.cost) == (free.pk, 0)
    assert [d["step"] for d in task.routing_decisions] == ["route", "downgrade", "candidate"]


def test_a_downgrade_whose_model_cannot_be_called_is_still_a_budget_refusal(
    live_server, sandbox, catalog, agent
):
    role = bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai",
                base_url=sandbox.url + "/v1")  # fmt: skip
    broken = credential_create(label="broken", provider="openai", raw_secret=OPENAI_KEY)
    broken.secret_encrypted = "not a Fernet token"
    broken.save(update_fields=["secret_encrypted"])
    free = CatalogModel.objects.create(slug="moonshotai/kimi-k2.6:free", name="Free")
    free.prices.create(source="sync", prompt=Decimal(0), completion=Decimal(0))
    RoleBinding.objects.filter(role=role).update(
        over_budget_model=free, over_budget_credential=broken
    )
    Budget.objects.create(
        name="Coder cap", scope="role", role=role, period="month", limit=Decimal("0.000001"),
        action="downgrade",
    )  # fmt: skip

    with pytest.raises(openai.RateLimitError) as refused:
        sdk(live_server, token_for(agent)).chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "Spend less."}]
        )

    assert refused.value.code == "budget_exceeded"
    assert "Not downgraded: Credential 'broken'" in refused.value.message
    (task,) = Task.objects.all()
    assert task.status == TaskStatus.OVER_BUDGET
    assert Usage.objects.count() == 0


def test_a_provider_refusal_is_a_502_not_a_500(live_server, sandbox, catalog, agent):
    bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai", base_url=sandbox.url + "/v1")
    client = sdk(live_server, token_for(agent))

    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(
            model="coder",
            messages=[{"role": "user", "content": "Fail [[sandbox fault=400]]"}],
        )

    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_failed"
    (task,) = Task.objects.all()
    assert task.status == TaskStatus.FAILED
    (row,) = Usage.objects.filter(task=task)
    assert (row.status, row.cost) == (UsageStatus.FAILED, 0)


def test_a_stream_that_fails_before_its_first_text_is_an_error_response(
    live_server, sandbox, catalog, agent, settings
):
    settings.ROSTER_PROVIDER_MAX_ATTEMPTS = 1
    bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai", base_url=sandbox.url + "/v1")
    client = sdk(live_server, token_for(agent))

    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(
            model="coder",
            messages=[{"role": "user", "content": "Break [[sandbox fault=malformed]]"}],
            stream=True,
        )

    assert failed.value.status_code == 502
    (row,) = Usage.objects.all()
    # The unreadable answer was a 200: the provider may have billed it.
    assert (row.status, row.basis) == (UsageStatus.ESTIMATED, "estimated")
    assert row.cost > 0
    assert Task.objects.get().status == TaskStatus.FAILED


# --- A provider whose stream breaks after it began -----------------------------------------


class BrokenStream(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that sends two words, then a malformed chunk or
    nothing more (the connection closes mid-answer)."""

    mode = "truncated"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for word in ("Half ", "an "):
            chunk = {"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"content": word}}]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if self.mode == "malformed":
            self.wfile.write(b'data: {"choices": [\n\n')
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_upstream() -> Iterator[tuple[str, type[BrokenStream]]]:
    handler = type("Handler", (BrokenStream,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["truncated", "malformed"])
def test_a_stream_that_breaks_midway_ends_with_an_error_event_and_a_closed_call(
    live_server, catalog, agent, broken_upstream, mode
):
    base_url, handler = broken_upstream
    handler.mode = mode
    bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai", base_url=base_url)
    client = sdk(live_server, token_for(agent))

    received: list[str] = []

    def read_all() -> None:
        for chunk in client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "Go."}], stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)

    with pytest.raises(openai.APIError) as broke:
        read_all()

    assert "".join(received) == "Half an "
    assert "stream broke" in broke.value.message
    (row,) = Usage.objects.all()
    # The answer had begun: the provider bills it, so the call is spend at its worst case.
    assert (row.status, row.basis) == (UsageStatus.ESTIMATED, "estimated")
    assert row.output_tokens == row.max_output_tokens
    assert row.cost > 0
    task = Task.objects.get()
    assert task.status == TaskStatus.FAILED
    assert task.result == "Half an "


# --- Authentication -------------------------------------------------------------------------


def test_a_revoked_or_expired_token_gets_401(live_server, sandbox, catalog, agent):
    bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai", base_url=sandbox.url + "/v1")
    now = timezone.now()
    tokens = {
        "revoked": token_for(agent, revoked_at=now),
        "expired": token_for(agent, expires_at=now - timedelta(minutes=1)),
        "unknown": "rst_" + uuid.uuid4().hex,
    }

    for why, raw in tokens.items():
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk(live_server, raw).chat.completions.create(
                model="coder", messages=[{"role": "user", "content": "Hi."}]
            )
        assert refused.value.code == "invalid_api_key", why
        body = refused.value.body
        assert set(body) == {"message", "type", "param", "code"}
    assert Task.objects.count() == 0


def test_a_role_outside_the_tokens_scope_gets_403(live_server, sandbox, catalog, agent):
    model = catalog["openai/gpt-4.1-mini"]
    bind("coder", model, provider="openai", base_url=sandbox.url + "/v1")
    writer = bind("writer", model, provider="openai", base_url=sandbox.url + "/v1")

    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(live_server, token_for(agent, roles=(writer,))).chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "Hi."}]
        )

    assert refused.value.code == "model_not_allowed"
    assert refused.value.param == "model"
    assert Task.objects.count() == 0


def test_a_token_whose_person_may_not_submit_tasks_is_refused(live_server, sandbox, catalog):
    """A call is a task: a manager (who reads reports, submits nothing) gets a 403."""
    bind("coder", catalog["openai/gpt-4.1-mini"], provider="openai", base_url=sandbox.url + "/v1")
    client = sdk(live_server, token_for(UserFactory(groups=["manager"])))

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "Hello"}]
        )

    assert refused.value.code == "permission_denied"
    assert "office.add_task" in refused.value.message
    assert Task.objects.count() == 0
    assert Usage.objects.count() == 0
