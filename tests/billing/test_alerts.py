"""Budget, drift and ad hoc alerts: recorded once, delivered by email and a real webhook."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail

from billing import alerts
from billing.alerts import (
    Delivery,
    alert_check_spend,
    alert_deliver,
    alert_record_drift,
    alert_record_threshold,
    alerts_deliver_pending,
)
from billing.models import Alert, AlertKind, Budget, BudgetPeriod, BudgetScope, UsageStatus
from billing.tasks import deliver_alert
from office.models import Task
from tests.factories import CatalogModelFactory, RoleFactory, TaskFactory, UsageFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)  # a Wednesday
RECIPIENTS = ["finance@example.com", "ops@example.com"]


# --- A real webhook receiver on loopback ----------------------------------------------------


@dataclass
class Receiver:
    """What the loopback webhook server got, and how it should answer."""

    url: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def webhook(settings) -> Iterator[Receiver]:
    """An http.server on a free loopback port, configured as ROSTER_ALERT_WEBHOOK_URL."""
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.requests.append(
                {
                    "path": self.path,
                    "content_type": self.headers["Content-Type"],
                    "json": json.loads(body),
                }
            )
            time.sleep(receiver.delay)
            answer = b"ok" if receiver.status < 400 else b"upstream exploded"
            self.send_response(receiver.status)
            for name, value in receiver.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # A path that looks like a Slack secret: it must never appear in an error.
    receiver.url = f"http://127.0.0.1:{server.server_port}/services/T0/B0/s3cr3t"
    settings.ROSTER_ALERT_WEBHOOK_URL = receiver.url
    yield receiver
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def emails(settings, mailoutbox) -> list[mail.EmailMessage]:
    settings.ROSTER_ALERT_EMAILS = RECIPIENTS
    settings.DEFAULT_FROM_EMAIL = "roster@office.example"
    return mailoutbox


@pytest.fixture
def no_channels(settings) -> None:
    settings.ROSTER_ALERT_EMAILS = []
    settings.ROSTER_ALERT_WEBHOOK_URL = ""


@pytest.fixture
def budget_period() -> tuple[Budget, BudgetPeriod]:
    coder = RoleFactory(slug="coder", name="Coder")
    budget = Budget.objects.create(
        name="Coder monthly",
        scope=BudgetScope.ROLE,
        role=coder,
        period="month",
        limit=Decimal("50"),
    )
    period = BudgetPeriod.objects.create(
        budget=budget, start=date(2026, 11, 1), end=date(2026, 12, 1), spent=Decimal("40.1234")
    )
    return budget, period


@pytest.fixture
def task() -> Task:
    """One task for the ledger rows of a test (building a task hashes a password)."""
    return TaskFactory()


def threshold_alert(budget: Budget, period: BudgetPeriod) -> Alert:
    alert = alert_record_threshold(
        budget=budget, period=period, threshold=80, spent=Decimal("40.1234")
    )
    assert alert is not None
    return alert


# --- Recording threshold alerts -------------------------------------------------------------


def test_threshold_alert_is_recorded_once_per_threshold_and_period(
    budget_period, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    budget, period = budget_period
    queued: list[int] = []
    monkeypatch.setattr(deliver_alert, "delay", queued.append)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        first = alert_record_threshold(
            budget=budget, period=period, threshold=80, spent=Decimal("40.1234")
        )
        second = alert_record_threshold(
            budget=budget, period=period, threshold=80, spent=Decimal("41")
        )
        other = alert_record_threshold(
            budget=budget, period=period, threshold=50, spent=Decimal("41")
        )

    assert first is not None
    assert second is None
    assert other is not None
    assert len(callbacks) == 2
    assert queued == [first.pk, other.pk]
    saved = Alert.objects.get(pk=first.pk)
    assert (
        saved.message == "Budget 'Coder monthly' reached 80% of $50.00 for 2026-11 ($40.12 spent)."
    )
    assert (saved.kind, saved.budget, saved.period_start, saved.threshold) == (
        AlertKind.THRESHOLD,
        budget,
        date(2026, 11, 1),
        80,
    )
    assert (saved.amount, saved.limit) == (Decimal("40.1234"), Decimal("50"))
    assert Alert.objects.count() == 2


def test_same_threshold_in_the_next_period_is_a_new_alert(budget_period) -> None:
    budget, november = budget_period
    december = BudgetPeriod.objects.create(
        budget=budget, start=date(2026, 12, 1), end=date(2027, 1, 1)
    )

    assert threshold_alert(budget, november).period_start == date(2026, 11, 1)
    december_alert = alert_record_threshold(
        budget=budget, period=december, threshold=80, spent=Decimal("0.004")
    )

    assert december_alert is not None
    assert december_alert.message == (
        "Budget 'Coder monthly' reached 80% of $50.00 for 2026-12 ($0.004 spent)."
    )


def test_threshold_alert_names_a_week_by_its_monday() -> None:
    budget = Budget.objects.create(
        name="Office weekly", scope=BudgetScope.OFFICE, period="week", limit=Decimal("1200")
    )
    period = BudgetPeriod.objects.create(
        budget=budget, start=date(2026, 11, 16), end=date(2026, 11, 23)
    )

    alert = alert_record_threshold(
        budget=budget, period=period, threshold=100, spent=Decimal("1234.5")
    )

    assert alert is not None
    assert alert.message == (
        "Budget 'Office weekly' reached 100% of $1,200.00 for the week of 2026-11-16 "
        "($1,234.50 spent)."
    )


def test_threshold_alert_refuses_a_period_of_another_budget(budget_period) -> None:
    budget, _ = budget_period
    other = Budget.objects.create(
        name="Other", scope=BudgetScope.OFFICE, period="month", limit=Decimal("5")
    )
    foreign = BudgetPeriod.objects.create(
        budget=other, start=date(2026, 11, 1), end=date(2026, 12, 1)
    )

    with pytest.raises(ValueError, match="does not belong to budget"):
        alert_record_threshold(budget=budget, period=foreign, threshold=80, spent=Decimal("4"))


# --- Delivering -----------------------------------------------------------------------------


def test_delivery_emails_the_recipients_and_posts_slack_text_to_the_webhook(
    budget_period, emails, webhook
) -> None:
    alert = threshold_alert(*budget_period)

    result = alert_deliver(alert_id=alert.pk)

    assert (result.email, result.webhook, result.errors, result.ok) == (
        Delivery.SENT,
        Delivery.SENT,
        (),
        True,
    )
    assert len(emails) == 1
    message = emails[0]
    assert message.to == RECIPIENTS
    assert message.from_email == "roster@office.example"
    assert message.subject == "[Roster] Budget threshold crossed"
    assert message.body.startswith(alert.message + "\n")
    assert "Amount (USD): 40.1234\n" in message.body
    assert "Limit (USD): 50\n" in message.body

    assert len(webhook.requests) == 1
    request = webhook.requests[0]
    assert request["path"] == "/services/T0/B0/s3cr3t"
    assert request["content_type"] == "application/json"
    assert request["json"] == {
        "text": "Budget 'Coder monthly' reached 80% of $50.00 for 2026-11 ($40.12 spent).",
        "alert": {
            "id": alert.pk,
            "kind": "threshold",
            "budget": "Coder monthly",
            "threshold": 80,
            "amount": "40.1234",
            "limit": "50",
            "period_start": "2026-11-01",
            "call_id": None,
        },
    }
    alert.refresh_from_db()
    assert alert.emailed_at is not None
    assert alert.webhook_at is not None
    assert alert.delivery_error == ""


def test_delivering_twice_sends_each_channel_once(budget_period, emails, webhook) -> None:
    alert = threshold_alert(*budget_period)

    first = alert_deliver(alert_id=alert.pk)
    second = alert_deliver(alert_id=alert.pk)

    assert (first.email, first.webhook) == (Delivery.SENT, Delivery.SENT)
    assert (second.email, second.webhook) == (Delivery.ALREADY_SENT, Delivery.ALREADY_SENT)
    assert len(emails) == 1
    assert len(webhook.requests) == 1


def test_celery_task_delivers_through_the_service(budget_period, emails, webhook) -> None:
    alert = threshold_alert(*budget_period)

    outcome = deliver_alert.apply(args=[alert.pk]).get()
    again = deliver_alert.apply(args=[alert.pk]).get()

    assert outcome == {"alert_id": alert.pk, "email": "sent", "webhook": "sent", "errors": []}
    assert again["email"] == again["webhook"] == "already_sent"
    assert len(emails) == 1
    assert len(webhook.requests) == 1


def test_celery_task_for_a_deleted_alert_sends_nothing(emails) -> None:
    assert deliver_alert.apply(args=[987654]).get() == {"alert_id": 987654, "missing": True}
    assert emails == []


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (500, {}, "answered HTTP 500 Internal Server Error: upstream exploded"),
        # Redirects are not followed: the webhook must be reconfigured, not chased.
        (302, {"Location": "http://127.0.0.1:9/elsewhere"}, "answered HTTP 302 Found: ok"),
    ],
)
def test_webhook_error_is_recorded_and_email_still_sent(
    budget_period, emails, webhook, status, headers, error
) -> None:
    webhook.status, webhook.headers = status, headers
    alert = threshold_alert(*budget_period)

    result = alert_deliver(alert_id=alert.pk)

    assert (result.email, result.webhook, result.ok) == (Delivery.SENT, Delivery.FAILED, False)
    assert result.errors == (f"Webhook to 127.0.0.1 {error}",)
    assert len(emails) == 1
    assert len(webhook.requests) == 1
    alert.refresh_from_db()
    assert alert.emailed_at is not None
    assert alert.webhook_at is None  # released: a later delivery retries it
    assert alert.delivery_error == f"Webhook to 127.0.0.1 {error}"
    assert "s3cr3t" not in alert.delivery_error


def test_refused_webhook_connection_is_recorded_and_retried_later(
    budget_period, emails, settings
) -> None:
    settings.ROSTER_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{closed_port()}/services/T0/B0/s3cr3t"
    alert = threshold_alert(*budget_period)

    failed = alert_deliver(alert_id=alert.pk)

    assert (failed.email, failed.webhook) == (Delivery.SENT, Delivery.FAILED)
    alert.refresh_from_db()
    assert alert.delivery_error.startswith("Webhook to 127.0.0.1 failed: ")
    assert "refused" in alert.delivery_error.lower()
    assert "s3cr3t" not in alert.delivery_error
    assert alert.webhook_at is None
    assert len(emails) == 1


def test_failed_webhook_is_sent_on_the_next_delivery_and_the_error_cleared(
    budget_period, emails, webhook
) -> None:
    webhook.status = 503
    alert = threshold_alert(*budget_period)
    alert_deliver(alert_id=alert.pk)

    webhook.status = 200
    retry = alert_deliver(alert_id=alert.pk)

    assert (retry.email, retry.webhook, retry.errors) == (
        Delivery.ALREADY_SENT,
        Delivery.SENT,
        (),
    )
    assert len(emails) == 1
    assert len(webhook.requests) == 2
    alert.refresh_from_db()
    assert alert.webhook_at is not None
    assert alert.delivery_error == ""


def test_webhook_timeout_is_recorded(budget_period, settings, webhook, monkeypatch) -> None:
    settings.ROSTER_ALERT_EMAILS = []
    monkeypatch.setattr(alerts, "WEBHOOK_TIMEOUT", 0.2)
    webhook.delay = 1.0
    alert = threshold_alert(*budget_period)

    result = alert_deliver(alert_id=alert.pk)

    assert (result.email, result.webhook) == (Delivery.NOT_CONFIGURED, Delivery.FAILED)
    assert result.errors == ("Webhook to 127.0.0.1 timed out after 0.2s.",)


def test_email_failure_is_recorded_and_webhook_still_posted(
    budget_period, settings, webhook
) -> None:
    # A real SMTP connection to a port nobody listens on.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = closed_port()
    settings.EMAIL_TIMEOUT = 2
    settings.ROSTER_ALERT_EMAILS = RECIPIENTS
    alert = threshold_alert(*budget_period)

    result = alert_deliver(alert_id=alert.pk)

    assert (result.email, result.webhook) == (Delivery.FAILED, Delivery.SENT)
    assert len(result.errors) == 1
    assert result.errors[0].startswith("Email to finance@example.com, ops@example.com failed: ")
    assert len(webhook.requests) == 1
    alert.refresh_from_db()
    assert alert.emailed_at is None
    assert alert.delivery_error == result.errors[0]


def test_no_channel_configured_sends_nothing(budget_period, no_channels, mailoutbox) -> None:
    alert = threshold_alert(*budget_period)

    result = alert_deliver(alert_id=alert.pk)

    assert (result.email, result.webhook, result.errors) == (
        Delivery.NOT_CONFIGURED,
        Delivery.NOT_CONFIGURED,
        (),
    )
    assert mailoutbox == []


def test_pending_sweep_delivers_only_recent_undelivered_alerts(
    budget_period, emails, webhook
) -> None:
    budget, period = budget_period
    now = datetime.now(UTC)
    fresh = threshold_alert(budget, period)  # its own queued delivery goes first
    recent = Alert.objects.create(
        kind=AlertKind.MANUAL, message="recent", created_at=now - timedelta(minutes=5)
    )
    stale = Alert.objects.create(
        kind=AlertKind.MANUAL, message="stale", created_at=now - timedelta(days=2)
    )
    done = Alert.objects.create(
        kind=AlertKind.MANUAL,
        message="done",
        created_at=now - timedelta(minutes=5),
        emailed_at=now,
        webhook_at=now,
    )

    results = alerts_deliver_pending(now=now)

    assert [result.alert_id for result in results] == [recent.pk]
    assert [message.body.splitlines()[0] for message in emails] == ["recent"]
    assert [request["json"]["text"] for request in webhook.requests] == ["recent"]
    assert {fresh.pk, stale.pk, done.pk}.isdisjoint(result.alert_id for result in results)


# --- Drift ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "reported", "drift"),
    [
        ("1.00", "1.00", None),
        ("1.00", "1.009", None),  # 0.9% of the larger: rounding, not drift
        ("1.00", "1.0102", "0.0102"),  # just over 1% of the larger
        ("0.99", "1.00", None),  # exactly 1% of the larger is within tolerance
        ("1.02", "1.00", "0.02"),
        ("0.0000001", "0.0000009", None),  # 89% apart, but under the $0.000001 floor
        ("0", "0.0000011", "0.0000011"),
        ("0.00000008333333333333334", "0.00000108333333333333334", None),  # exactly the floor
    ],
)
def test_drift_alert_needs_both_the_relative_tolerance_and_the_floor(
    settings, task, ours: str, reported: str, drift: str | None
) -> None:
    settings.ROSTER_COST_DRIFT_TOLERANCE = Decimal("0.01")
    settings.ROSTER_COST_DRIFT_FLOOR = Decimal("0.000001")
    usage = UsageFactory(task=task, cost=Decimal(ours), reported_cost=Decimal(reported))

    alert = alert_record_drift(usage=usage)

    assert (None if alert is None else alert.amount) == (None if drift is None else Decimal(drift))


def test_drift_alert_names_the_call_model_and_both_figures(
    settings, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    settings.ROSTER_COST_DRIFT_TOLERANCE = Decimal("0.01")
    settings.ROSTER_COST_DRIFT_FLOOR = Decimal("0.000001")
    queued: list[int] = []
    monkeypatch.setattr(deliver_alert, "delay", queued.append)
    usage = UsageFactory(
        call_id="call-7f3a",
        model=CatalogModelFactory(slug="openai/gpt-4o"),
        cost=Decimal("0.0010"),
        reported_cost=Decimal("0.00125"),
    )

    with django_capture_on_commit_callbacks(execute=True):
        alert = alert_record_drift(usage=usage)
        again = alert_record_drift(usage=usage)

    assert alert is not None
    assert again is None
    assert queued == [alert.pk]
    assert (alert.kind, alert.usage, alert.amount) == (AlertKind.DRIFT, usage, Decimal("0.00025"))
    assert alert.message == (
        "Call call-7f3a (openai/gpt-4o via openrouter): the provider reported $0.00125, "
        "we computed $0.001 (provider higher by $0.00025, 20.0%)."
    )


def test_drift_within_tolerance_or_floor_or_unreported_records_nothing(settings, task) -> None:
    settings.ROSTER_COST_DRIFT_TOLERANCE = Decimal("0.05")
    settings.ROSTER_COST_DRIFT_FLOOR = Decimal("0.01")

    within_tolerance = UsageFactory(task=task, cost=Decimal("1"), reported_cost=Decimal("1.04"))
    under_floor = UsageFactory(task=task, cost=Decimal("0.001"), reported_cost=Decimal("0.009"))
    unreported = UsageFactory(task=task, cost=Decimal("1.00"), reported_cost=None)
    beyond = UsageFactory(task=task, cost=Decimal("1.00"), reported_cost=Decimal("0.90"))

    assert alert_record_drift(usage=within_tolerance) is None
    assert alert_record_drift(usage=under_floor) is None
    assert alert_record_drift(usage=unreported) is None
    drift = alert_record_drift(usage=beyond)
    assert drift is not None
    assert drift.amount == Decimal("0.10")
    assert "provider lower by $0.1, 10.0%" in drift.message
    assert list(Alert.objects.values_list("usage", flat=True)) == [beyond.pk]


def test_drift_delivery_payload_carries_the_call_id(emails, webhook) -> None:
    usage = UsageFactory(call_id="call-9", cost=Decimal("2"), reported_cost=Decimal("3"))
    alert = alert_record_drift(usage=usage)
    assert alert is not None

    alert_deliver(alert_id=alert.pk)

    payload = webhook.requests[0]["json"]["alert"]
    assert (payload["kind"], payload["call_id"], payload["amount"], payload["budget"]) == (
        "drift",
        "call-9",
        "1",
        None,
    )
    assert "Call id: call-9\n" in emails[0].body


# --- Ad hoc spend check ---------------------------------------------------------------------


@pytest.fixture
def week_ledger(task) -> None:
    """$6.20 billed this week (from Monday 2026-11-16), and rows that must not count."""
    for cost, at, status in [
        ("4.00000000000000000000001", NOW, UsageStatus.SETTLED),
        ("2.19999999999999999999999", datetime(2026, 11, 16, 0, 0, tzinfo=UTC), "estimated"),
        ("100", NOW, UsageStatus.PENDING),
        ("100", NOW, UsageStatus.FAILED),
        ("100", datetime(2026, 11, 15, 23, 59, 59, tzinfo=UTC), UsageStatus.SETTLED),
    ]:
        UsageFactory(task=task, cost=Decimal(cost), created_at=at, status=status)


def test_spend_check_above_threshold_records_and_delivers_an_alert(
    week_ledger, emails, webhook
) -> None:
    check = alert_check_spend(threshold=Decimal("5.00"), period="week", now=NOW)

    assert check.spent == Decimal("6.2")
    assert check.exceeded is True
    assert (check.start, check.end) == (
        datetime(2026, 11, 16, tzinfo=UTC),
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert check.alert is not None
    assert check.alert.message == (
        "Office spend for the week of 2026-11-16 is $6.20, at or above the $5.00 alert threshold."
    )
    assert (check.alert.kind, check.alert.amount, check.alert.limit) == (
        AlertKind.MANUAL,
        Decimal("6.2"),
        Decimal("5.00"),
    )
    assert check.alert.period_start == date(2026, 11, 16)
    assert check.delivery is not None
    assert (check.delivery.email, check.delivery.webhook) == (Delivery.SENT, Delivery.SENT)
    assert [message.to for message in emails] == [RECIPIENTS]
    assert webhook.requests[0]["json"]["text"] == check.alert.message


def test_spend_check_at_exactly_the_threshold_alerts(week_ledger, no_channels) -> None:
    check = alert_check_spend(threshold=Decimal("6.2"), period="week", now=NOW)

    assert check.alert is not None
    assert check.delivery is not None
    assert check.delivery.email == check.delivery.webhook == Delivery.NOT_CONFIGURED


def test_spend_check_below_threshold_records_nothing(week_ledger, emails) -> None:
    check = alert_check_spend(threshold=Decimal("6.21"), period="week", now=NOW)

    assert (check.spent, check.exceeded, check.alert, check.delivery) == (
        Decimal("6.2"),
        False,
        None,
        None,
    )
    assert Alert.objects.count() == 0
    assert emails == []


def test_spend_check_month_counts_the_whole_month(week_ledger, no_channels) -> None:
    check = alert_check_spend(threshold=Decimal("1000"), period="month", now=NOW)

    assert check.spent == Decimal("106.2")
    assert check.alert is None


@pytest.mark.parametrize(
    ("threshold", "period", "message"),
    [
        (Decimal("0"), "week", "above zero, got 0"),
        (Decimal("-5.00"), "week", "above zero, got -5.00"),
        (Decimal("NaN"), "week", "above zero, got NaN"),
        (Decimal("5"), "year", "Unknown period 'year'; expected one of day, week, month."),
    ],
)
def test_spend_check_rejects_bad_input(threshold: Decimal, period: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        alert_check_spend(threshold=threshold, period=period, now=NOW)
