"""`manage.py cost reconcile --against FILE`: the ledger against the sandbox provider's
request log (calls made over a real socket) and against an OpenRouter activity CSV; every
kind of difference is listed and makes the command fail; bad files get a clear error."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from agents.execution import task_execute
from agents.liveness import worker_id
from agents.models import RoleBinding
from agents.services import credential_create
from billing.catalog import catalog_parse, catalog_sync
from billing.models import CatalogModel, Usage, UsageStatus
from office.models import Role, Task, TaskStatus
from tests.canary import SANDBOX_KEY

pytestmark = pytest.mark.django_db

MODEL = "openai/gpt-4.1-mini"


@pytest.fixture
def calls(sandbox) -> list[dict]:
    """Three tasks run against the sandbox (priced from the same bundled catalog as the
    sandbox charges from); returns the sandbox's log entries for their calls."""
    data = json.loads(Path(settings.ROSTER_CATALOG_SNAPSHOT).read_text())
    data["data"] = [entry for entry in data["data"] if entry["id"] == MODEL]
    catalog_sync(entries=catalog_parse(data))
    role = Role.objects.create(slug="clerk", name="Clerk")
    credential = credential_create(
        label="sandbox", provider="openrouter", base_url=f"{sandbox.url}/api/v1",
        raw_secret=SANDBOX_KEY,
    )  # fmt: skip
    RoleBinding.objects.create(
        role=role, model=CatalogModel.objects.get(slug=MODEL), credential=credential,
        max_tokens=64,
    )  # fmt: skip
    entries = []
    for prompt in ("File the invoice.", "Book the room.", "Order more paper."):
        task = Task.objects.create(role=role, prompt=prompt)
        task_execute(task_id=task.pk, worker_id=worker_id())
        task.refresh_from_db()
        assert task.status == TaskStatus.DONE, task.error
        usage = Usage.objects.get(task=task)
        entries += sandbox.requests(call_id=usage.call_id)
    assert len(entries) == 3
    return entries


def reconcile(path: Path) -> str:
    from io import StringIO

    out = StringIO()
    call_command("cost", "reconcile", "--against", str(path), stdout=out)
    return out.getvalue()


def write_jsonl(path: Path, entries: list[dict]) -> Path:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return path


def test_the_ledger_matches_the_sandbox_log_to_the_last_decimal(calls, tmp_path):
    assert all(Decimal(entry["cost"]) > 0 for entry in calls)
    out = reconcile(write_jsonl(tmp_path / "log.jsonl", calls))
    assert "No differences. 3 charged requests in the sandbox export, 3 matched" in out


def test_every_kind_of_difference_is_listed_and_fails_the_command(calls, tmp_path):
    unknown = {**calls[0], "call_id": "f" * 32}  # charged, never billed
    repriced = {**calls[1], "cost": str(Decimal(calls[1]["cost"]) + Decimal("0.000001"))}
    failed = {**calls[2], "call_id": "e" * 32, "status": 500, "cost": None}  # not charged
    # calls[2] missing from the export: billed in the ledger, not charged by the provider.
    entries = [calls[0], calls[0], unknown, repriced, failed]
    with pytest.raises(CommandError) as raised:
        reconcile(write_jsonl(tmp_path / "log.jsonl", entries))
    message = str(raised.value)
    assert "1 unbilled, 1 double-billed, 1 cost differences, 1 ledger rows not in the export" in (
        message
    )


def test_a_pending_call_the_provider_charged_is_unbilled(calls, tmp_path):
    usage = Usage.objects.get(call_id=calls[0]["call_id"])
    Usage.objects.filter(pk=usage.pk).update(status=UsageStatus.PENDING)
    with pytest.raises(CommandError, match="1 unbilled"):
        reconcile(write_jsonl(tmp_path / "log.jsonl", calls))


def test_an_openrouter_csv_is_matched_on_generation_ids(calls, tmp_path):
    rows = Usage.objects.filter(call_id__in=[c["call_id"] for c in calls]).order_by("pk")
    lines = ["generation_id,created_at,model_permaslug,tokens_prompt,tokens_completion,cost_total"]
    for usage in rows:
        assert usage.provider_request_id  # the sandbox's gen-... id, kept by the adapter
        created = usage.created_at.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{usage.provider_request_id},{created},{MODEL},{usage.input_tokens},"
            f"{usage.output_tokens},{usage.cost}"
        )
    path = tmp_path / "activity.csv"
    path.write_text("\n".join(lines) + "\n")
    assert "No differences. 3 charged requests in the openrouter export" in reconcile(path)
    path.write_text("\n".join(lines[:-1]) + "\n")  # the provider has no record of one
    with pytest.raises(CommandError, match="1 ledger rows not in the export"):
        reconcile(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"status": 200, "cost": "1"}\n', "line 1: a charged request without a call_id"),
        ('{"status": 200\n', "line 1: not JSON"),
        ("when,what\n2026-01-01,5\n", "its header is: when, what"),
        ("generation_id,cost_total\ngen-1,lots\n", "line 2: the cost 'lots' is not a number"),
    ],
    ids=["no call id", "broken json", "unknown csv", "bad cost"],
)
def test_a_file_that_cannot_be_read_is_refused_with_the_reason(tmp_path, content, expected):
    path = tmp_path / "export"
    path.write_text(content)
    with pytest.raises(CommandError, match=expected):
        reconcile(path)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        reconcile(tmp_path / "nope.jsonl")
