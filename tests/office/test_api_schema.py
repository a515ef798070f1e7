"""The agent API against its own OpenAPI schema, with Schemathesis: at least 1,000
generated requests across every operation, none answered with a 5xx, each answer a
status, content type and body the schema documents.

The schema is read from /api/schema/ and the requests go to the Django WSGI app in this
process (same database transaction as the test). Tasks created by generated requests
stay queued: dispatch is patched out, no worker is involved. Generation is derandomized,
so a run is reproducible and CI stable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from unittest import mock

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.urls import reverse
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.strategies import SearchStrategy, one_of
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from office.models import TaskStatus
from office.services import api_token_create
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

# Operations without parameters (roles, usage) have one distinct request; the others
# get POSITIVE_CASES each, and those with a body NEGATIVE_CASES of schema-breaking ones.
POSITIVE_CASES = 125
NEGATIVE_CASES = 125
MINIMUM_CASES = 1000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def wsgi_app() -> Iterator[object]:
    # As Django's test client does: a request must not close the connection that holds
    # the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def office(settings) -> tuple[str, list[int]]:
    """Roles, an agent with a token and a task in every state; returns the token and the
    ids of the agent's tasks."""
    settings.ROSTER_API_THROTTLE_RATE = "1000000/min"  # this test is not about throttling
    agent = UserFactory(username="fuzzer", groups=["staff"])
    coder = RoleFactory(slug="coder", runnable=True)
    RoleFactory(slug="writer", runnable=True)
    RoleFactory(slug="unbound")
    tasks = [TaskFactory(created_by=agent, role=coder, status=s) for s in TaskStatus.values]
    TaskFactory()  # someone else's
    _, raw = api_token_create(user=agent, name="schemathesis")
    return raw, [task.pk for task in tasks]


def test_schema_generates_without_warnings_and_is_valid_openapi() -> None:
    GENERATOR_STATS.reset()  # spectacular's own tally of what it had to guess

    schema = SchemaGenerator().get_schema(request=None, public=True)

    validate_schema(schema)
    assert not GENERATOR_STATS, "drf-spectacular guessed: run `manage.py spectacular --validate`"
    assert schema["components"]["securitySchemes"]["ApiToken"]["scheme"] == "bearer"
    assert (
        schema["components"]["schemas"]["TaskCreateInputRequest"]["additionalProperties"] is False
    )


def test_schema_is_served_as_json_and_yaml(client) -> None:
    as_json = client.get(reverse("office_api:schema"), {"format": "json"})
    as_yaml = client.get(reverse("office_api:schema"))

    assert as_json.status_code == 200
    assert as_json.json()["openapi"].startswith("3.")
    assert "/api/tasks/{task_id}/cancel/" in as_json.json()["paths"]
    assert not [path for path in as_json.json()["paths"] if not path.startswith("/api/")]
    assert as_yaml.status_code == 200
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi")


@pytest.mark.parametrize("name", ["docs", "redoc"])
def test_docs_pages_use_bundled_assets_not_a_cdn(client, name: str) -> None:
    page = client.get(reverse(f"office_api:{name}"))

    html = page.content.decode()
    assert page.status_code == 200
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn.jsdelivr" not in html
    assert "unpkg.com" not in html


def strategy_for(
    operation: APIOperation,
    auth: dict[str, str],
    task_ids: list[int],
    mode: GenerationMode = GenerationMode.POSITIVE,
) -> SearchStrategy[schemathesis.Case]:
    """Cases for an operation; one with a task id in its path gets the agent's real tasks
    as often as generated ids (which are nearly always nobody's: 404)."""
    if not any(parameter.name == "task_id" for parameter in operation.path_parameters):
        return operation.as_strategy(generation_mode=mode, headers=auth)
    return one_of(
        operation.as_strategy(generation_mode=mode, headers=auth),
        *(
            operation.as_strategy(
                generation_mode=mode, headers=auth, path_parameters={"task_id": task_id}
            )
            for task_id in task_ids
        ),
    )


def test_generated_requests_conform_to_the_schema(
    wsgi_app, office: tuple[str, list[int]], caplog
) -> None:
    caplog.set_level("ERROR", logger="django.request")  # a thousand 4xx warnings otherwise
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8
    raw, task_ids = office
    auth = {"Authorization": f"Bearer {raw}"}
    cases: Counter[tuple[str, str]] = Counter()
    statuses: Counter[int] = Counter()

    def run(
        strategy: SearchStrategy[schemathesis.Case],
        examples: int,
        mode: str,
        checks: list[CheckFunction] = CHECKS,
    ) -> None:
        @hypothesis_settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            statuses[response.status_code] += 1
            case.validate_response(response, checks=checks)
            cases[case.operation.label, mode] += 1

        call()

    with mock.patch("office.services.task_dispatch"):
        for operation in operations:
            run(strategy_for(operation, auth, task_ids), POSITIVE_CASES, "positive")
            if operation.body:
                # Requests that break the schema (wrong types, missing or unknown keys):
                # each refused with a documented 4xx, never accepted, never a 5xx.
                negative = strategy_for(operation, auth, task_ids, GenerationMode.NEGATIVE)
                run(negative, NEGATIVE_CASES, "negative", [*CHECKS, negative_data_rejection])

    assert sum(cases.values()) >= MINIMUM_CASES, cases
    assert {label for label, _ in cases} == {operation.label for operation in operations}
    assert not [status for status in statuses if status >= 500]
    # The run reached past the door: some requests were accepted, some refused.
    assert {200, 201, 400, 404, 409} <= set(statuses), statuses
