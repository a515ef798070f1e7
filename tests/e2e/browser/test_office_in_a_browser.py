"""The office as people meet it: Chromium against the live server, a real worker and the
sandbox provider. Staff submit a task and watch it finish without reloading; a manager
reads the monthly report and prices a model change in the calculator; staff cannot open
the manager pages. Every page visited is saved as a screenshot (see conftest)."""

from __future__ import annotations

import re
from decimal import Decimal, localcontext

import pytest
from playwright.sync_api import Page, expect

from billing.money import format_usd
from office.fields import decimal_text
from office.models import Task, TaskStatus
from office.services import task_submit
from tests.e2e.browser.conftest import log_in, make_person
from tests.e2e.conftest import bind_role, snapshot_pricing
from tests.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The sandbox holds its answer this long, so the page has a running task to show
# before it is done (the status poll runs every second).
SLOW_ANSWER = "[[sandbox latency=2]]"
BOUND_MODEL = "deepseek/deepseek-v4-pro"
OTHER_MODEL = "openai/gpt-4.1-mini"


@pytest.fixture
def coder(catalog, sandbox):
    return bind_role(
        slug="coder",
        model=catalog[BOUND_MODEL],
        provider="openrouter",
        base_url=f"{sandbox.url}/api/v1",
    )


def mark_document(page: Page) -> None:
    """Tag the loaded document; a reload or navigation would lose the tag."""
    page.evaluate("window.rosterSameDocument = true")


def assert_same_document(page: Page) -> None:
    assert page.evaluate("window.rosterSameDocument === true"), "the page was reloaded"


def status_badge(page: Page, label: str):
    return page.get_by_text(label, exact=True).first


def test_staff_submit_a_task_and_watch_it_finish_without_reloading(page, screenshot, worker, coder):
    make_person(kind="staff", username="sam")
    log_in(page, username="sam")

    page.goto("/tasks/new/")
    page.get_by_label(re.compile("^role", re.I)).select_option("coder")
    page.get_by_label(re.compile("^prompt", re.I)).fill(
        f"Write a haiku about ledgers. {SLOW_ANSWER}"
    )
    screenshot(page, "task-form")
    page.get_by_role("button", name=re.compile("submit|create", re.I)).click()
    page.wait_for_url(re.compile(r"/tasks/\d+/$"))
    mark_document(page)
    task = Task.objects.get()
    screenshot(page, "task-in-progress")

    # Seen running, then done: htmx swaps the status block in place.
    expect(status_badge(page, "Running")).to_be_visible()
    expect(status_badge(page, "Done")).to_be_visible()
    assert_same_document(page)

    task.refresh_from_db()
    assert task.status == TaskStatus.DONE, task.error
    assert task.cost > 0
    # The cost as the page writes it: rounded for people and every digit.
    expect(page.locator("body")).to_contain_text(format_usd(task.cost))
    expect(page.locator("body")).to_contain_text(f"${decimal_text(task.cost)}")
    expect(page.locator("body")).to_contain_text(task.result.splitlines()[0])
    screenshot(page, "task-done")


def test_manager_reads_the_report_and_prices_a_model_change(page, screenshot, worker, coder):
    manager = make_person(kind="manager", username="maria")
    # Spend to report: one task run for real by the worker through the sandbox.
    task = task_submit(role=coder, prompt="Summarise the invoices, please.", created_by=manager)
    wait_until(
        lambda: Task.objects.get(pk=task.pk).is_terminal, timeout=30, what="the task to finish"
    )
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE, task.error

    log_in(page, username="maria")
    response = page.goto("/billing/reports/")
    assert response is not None
    assert response.status == 200
    expect(page.get_by_role("heading", name=re.compile("^spend", re.I)).first).to_be_visible()
    expect(page.locator("body")).to_contain_text(coder.name)
    expect(page.locator("body")).to_contain_text(format_usd(task.cost))
    screenshot(page, "report")

    page.goto("/billing/calculator/")
    mark_document(page)
    # A workload typed in, then the model changed; the office total follows each change.
    for label, value in (
        ("Tasks per month", "1000"),
        ("Input tokens per task", "2000"),
        ("Output tokens per task", "500"),
        ("Cache hit percent", "0"),
    ):
        field = page.get_by_label(f"{label} for {coder.name}")
        field.fill(value)
        field.press("Tab")  # the change event, as a person leaving the field
    total = page.get_by_title("Exact office total")
    expect(total).to_have_text(f"${decimal_text(monthly(BOUND_MODEL))}")
    screenshot(page, "calculator-before")

    model = page.get_by_label(f"Model for {coder.name}")
    model.fill(OTHER_MODEL)
    model.press("Tab")

    expect(total).to_have_text(f"${decimal_text(monthly(OTHER_MODEL))}")
    assert monthly(OTHER_MODEL) != monthly(BOUND_MODEL)
    expect(page.locator("body")).to_contain_text(f"Bound to {BOUND_MODEL} now")
    assert_same_document(page)
    screenshot(page, "calculator-after")


def monthly(slug: str) -> Decimal:
    """1,000 tasks of 2,000 input and 500 output tokens at the snapshot's prices, by hand."""
    pricing = snapshot_pricing(slug)
    with localcontext(prec=60):
        per_task = 2000 * Decimal(pricing["prompt"]) + 500 * Decimal(pricing["completion"])
        return 1000 * per_task


MANAGER_PAGES = {
    "reports": "/billing/reports/",
    "report-csv": "/billing/reports/export.csv?by=role",
    "calculator": "/billing/calculator/",
    "whatif": "/billing/whatif/",
}


def test_staff_cannot_open_manager_pages(page, screenshot):
    make_person(kind="staff", username="sam")
    log_in(page, username="sam")

    for name, path in MANAGER_PAGES.items():
        response = page.goto(path)
        assert response is not None
        assert response.status == 403, f"{path} answered {response.status}"
        screenshot(page, f"forbidden-{name}")
