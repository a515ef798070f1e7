"""Spec then execute end to end: a task submitted through the API runs through a real
worker process and the sandbox provider as two linked steps, each billed on its own: the
strategy role (a premium model) writes the spec, the execution role (a mid-tier model,
on the Anthropic wire) carries it out with the spec sent as a cache-marked prefix."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from agents.sandbox.behaviour import Prompt, Turn, answer_text, prompt_digest
from agents.workflows import EXECUTION_PREFIX, SPEC_TEMPLATE
from billing.catalog import catalog_parse, catalog_sync
from billing.models import CatalogModel, Usage, UsageStatus
from office.models import Task, TaskKind, TaskStatus
from office.services import api_token_create
from tests.e2e.conftest import bind_role, snapshot_pricing
from tests.e2e.test_task_flow import expected_cost, wait_for_terminal
from tests.factories import UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PREMIUM = "openai/gpt-4.1"
MID_TIER = "anthropic/claude-haiku-4.5"
REQUEST = "Add a CSV export to the monthly cost report, one row per role."


def sandbox_answer(*, model: str, system: str, prompt: str) -> str:
    request = Prompt(model=model, system=system, turns=(Turn(role="user", text=prompt),))
    return answer_text(request, digest=prompt_digest(request))


def test_spec_then_execute_produces_two_linked_billed_steps(office_processes, sandbox, catalog):
    payload = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text())
    payload["data"] = [entry for entry in payload["data"] if entry["id"] == PREMIUM]
    catalog_sync(entries=catalog_parse(payload))
    strategy = bind_role(
        slug="architect",
        model=CatalogModel.objects.get(slug=PREMIUM),
        provider="openai",
        base_url=sandbox.url + "/v1",
        system_prompt="You are the architect.",
    )
    execution = bind_role(
        slug="implementer",
        model=catalog[MID_TIER],
        provider="anthropic",
        base_url=sandbox.url,
        system_prompt="You are the implementer.",
    )
    user = UserFactory(groups=["staff"])
    _, token = api_token_create(user=user, name="agent")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    created = api.post(
        reverse("office_api:task_list"),
        {
            "kind": "spec_execute",
            "role": "implementer",
            "strategy_role": "architect",
            "prompt": REQUEST,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    parent = wait_for_terminal(Task.objects.get(pk=created.json()["id"]))

    assert parent.status == TaskStatus.DONE, parent.error
    spec = Task.objects.get(parent=parent, kind=TaskKind.SPEC)
    work = Task.objects.get(parent=parent, kind=TaskKind.EXECUTE)
    assert (spec.role, work.role) == (strategy, execution)
    assert spec.status == work.status == TaskStatus.DONE
    assert parent.result == work.result

    # The strategy step was asked for a spec in the template; its answer is the spec.
    assert spec.result == sandbox_answer(
        model="gpt-4.1", system=f"{strategy.system_prompt}\n\n{SPEC_TEMPLATE}", prompt=REQUEST
    )
    # The execution step got that spec after its system prompt, then the request.
    prefix = EXECUTION_PREFIX.format(role=strategy.name, spec=spec.result)
    assert work.prefix == prefix
    assert work.result == sandbox_answer(
        model="claude-haiku-4.5", system=f"{execution.system_prompt}\n{prefix}", prompt=REQUEST
    )

    # Billed apart: one settled call per step, each exactly what the sandbox charged.
    for step, slug in ((spec, PREMIUM), (work, MID_TIER)):
        [call] = Usage.objects.filter(task=step, helper_operation="")
        [entry] = sandbox.requests(call_id=call.call_id)
        assert (call.status, call.model.slug, call.role) == (UsageStatus.SETTLED, slug, step.role)
        assert call.cost == Decimal(entry["cost"]) == expected_cost(entry, snapshot_pricing(slug))
        assert step.cost == call.cost > 0
    assert not Usage.objects.filter(task=parent, helper_operation="").exists()  # helper only
    # Marked cacheable: the Anthropic wire caches only marked blocks, and it wrote the
    # whole stable prefix (system prompt and spec) to its cache.
    [entry] = sandbox.requests(call_id=Usage.objects.get(task=work, helper_operation="").call_id)
    assert entry["cache_write_tokens"] > len(prefix) // 4

    # The API links them both ways.
    detail = api.get(created.json()["url"]).json()
    assert [(s["id"], s["kind"], s["status"]) for s in detail["steps"]] == [
        (spec.pk, "spec", "done"),
        (work.pk, "execute", "done"),
    ]
    assert api.get(detail["steps"][1]["url"]).json()["parent"] == created.json()["url"]
