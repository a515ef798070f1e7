"""Alerts a manager must hear about: budget thresholds, cost drift, ad hoc spend checks.

Recording and delivering are separate steps. An alert is recorded inside the transaction
that noticed it (a settlement), and delivered after commit, outside any transaction, by
email (Django's mail backend, to ROSTER_ALERT_EMAILS) and by webhook (a Slack-compatible
JSON POST to ROSTER_ALERT_WEBHOOK_URL). Each channel is claimed with a conditional
update before it is used, so a delivery that runs twice (a redelivered Celery message,
the retry sweep) never sends a channel twice.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import Alert, AlertKind, Budget, BudgetPeriod, Usage, UsageStatus
from billing.money import EXACT, money_sum
from billing.periods import PERIODS, office_tz, period_bounds
from billing.pricing import cost_drift
from office.fields import decimal_text

logger = logging.getLogger(__name__)

# A webhook that does not answer within this is down as far as we are concerned; the
# retry sweep tries it again later.
WEBHOOK_TIMEOUT = 10.0
# How much of a failing webhook's answer is kept in `delivery_error`.
ERROR_SNIPPET_CHARS = 200

# Ledger rows that cost money: settled calls, and calls whose worker died, priced at an
# estimate. Pending rows are still in flight; failed calls were not billed.
BILLED_STATUSES = (UsageStatus.SETTLED, UsageStatus.ESTIMATED)

CENT = Decimal("0.01")
# Display only (percentages in messages): amounts themselves are never rounded.
_DISPLAY = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_UP)


class Delivery(StrEnum):
    """What happened to one channel in one delivery attempt."""

    SENT = "sent"
    FAILED = "failed"
    ALREADY_SENT = "already_sent"  # delivered (or being delivered) by an earlier attempt
    NOT_CONFIGURED = "not_configured"


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of `alert_deliver` for each channel, and the readable errors."""

    alert_id: int
    email: Delivery
    webhook: Delivery
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no channel failed in this attempt."""
        return Delivery.FAILED not in (self.email, self.webhook)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, for Celery results and `cost alert --format json`."""
        return {
            "alert_id": self.alert_id,
            "email": str(self.email),
            "webhook": str(self.webhook),
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class SpendCheck:
    """The outcome of `alert_check_spend`: office spend in a period against a threshold."""

    period: str
    start: datetime
    end: datetime
    spent: Decimal
    threshold: Decimal
    alert: Alert | None
    delivery: DeliveryResult | None

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.threshold


class DeliveryError(Exception):
    """A channel could not deliver; the message is safe to store and show."""


# --- Recording ------------------------------------------------------------------------------


def alert_record_threshold(
    *, budget: Budget, period: BudgetPeriod, threshold: int, spent: Decimal
) -> Alert | None:
    """Record that `period`'s spend reached `threshold` percent of `budget`'s limit.

    Meant to be called inside the settlement transaction that moved `spent` across the
    threshold. The alert is recorded once per budget, period and threshold: returns the
    new Alert, or None when that threshold was already recorded for the period. Delivery
    is queued for after the commit (nothing is sent if the settlement rolls back).
    Raises ValueError if `period` belongs to another budget.
    """
    if period.budget_id != budget.pk:
        raise ValueError(f"Budget period {period.pk} does not belong to budget {budget.pk}.")
    message = (
        f"Budget '{budget.name}' reached {threshold}% of {_usd_brief(budget.limit)} "
        f"for {_period_label(period=budget.period, start=period.start)} "
        f"({_usd_brief(spent)} spent)."
    )
    try:
        # A savepoint: a duplicate must not poison the caller's settlement transaction.
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=AlertKind.THRESHOLD,
                budget=budget,
                period_start=period.start,
                threshold=threshold,
                amount=spent,
                limit=budget.limit,
                message=message,
            )
    except IntegrityError:
        # `alert_once_per_threshold`: another settlement crossed this threshold first.
        return None
    _queue_delivery(alert.pk)
    return alert


def alert_record_drift(*, usage: Usage) -> Alert | None:
    """Record a drift alert when the provider's reported cost differs from ours.

    Uses ROSTER_COST_DRIFT_TOLERANCE and ROSTER_COST_DRIFT_FLOOR (see
    `billing.pricing.cost_drift`).
    Meant to be called inside the settlement transaction; delivery is queued for after
    the commit. Returns the new Alert, or None when the provider reported no cost, the
    figures agree within tolerance, or the call already has a drift alert.
    """
    if usage.reported_cost is None:
        return None
    drift = cost_drift(
        computed=usage.cost,
        reported=usage.reported_cost,
        tolerance=settings.ROSTER_COST_DRIFT_TOLERANCE,
        floor=settings.ROSTER_COST_DRIFT_FLOOR,
    )
    if drift is None:
        return None
    # One drift alert per call (constraint alert_once_per_drifting_call backs this up).
    if Alert.objects.filter(kind=AlertKind.DRIFT, usage=usage).exists():
        return None
    direction = "higher" if usage.reported_cost > usage.cost else "lower"
    share = _DISPLAY.divide(EXACT.multiply(drift, 100), max(usage.cost, usage.reported_cost))
    alert = Alert.objects.create(
        kind=AlertKind.DRIFT,
        usage=usage,
        amount=drift,
        message=(
            f"Call {usage.call_id} ({usage.model.slug} via {usage.provider}): the provider "
            f"reported ${decimal_text(usage.reported_cost)}, we computed "
            f"${decimal_text(usage.cost)} (provider {direction} by ${decimal_text(drift)}, "
            f"{share.quantize(Decimal('0.1'), context=_DISPLAY)}%)."
        ),
    )
    _queue_delivery(alert.pk)
    return alert


def alert_check_spend(
    *, threshold: Decimal, period: str, now: datetime | None = None
) -> SpendCheck:
    """Compare the office's spend in the current day, week or month with `threshold`.

    For `manage.py cost alert`. Spend is every settled or estimated ledger row created in
    the period (in ROSTER_TIME_ZONE). When it is at or above the threshold, a manual
    Alert is recorded and delivered synchronously, so call this outside a transaction.
    Returns a SpendCheck. Raises ValueError for a threshold that is not above zero or an
    unknown period.
    """
    if not threshold.is_finite() or threshold <= 0:
        raise ValueError(f"The threshold must be an amount in USD above zero, got {threshold}.")
    if period not in PERIODS:
        raise ValueError(f"Unknown period {period!r}; expected one of {', '.join(PERIODS)}.")
    tz = office_tz()
    start, end = period_bounds(period=period, now=now or timezone.now(), tz=tz)
    # Summed in Python: money is text on SQLite, where SQL SUM would go through floats.
    costs = (
        Usage.objects.filter(status__in=BILLED_STATUSES, created_at__gte=start, created_at__lt=end)
        .order_by()
        .values_list("cost", flat=True)
    )
    spent = money_sum(costs.iterator())
    if spent < threshold:
        return SpendCheck(period, start, end, spent, threshold, alert=None, delivery=None)
    first_day = start.astimezone(tz).date()
    alert = Alert.objects.create(
        kind=AlertKind.MANUAL,
        period_start=first_day,
        amount=spent,
        limit=threshold,
        message=(
            f"Office spend for {_period_label(period=period, start=first_day)} is "
            f"{_usd_brief(spent)}, at or above the {_usd_brief(threshold)} alert threshold."
        ),
    )
    delivery = alert_deliver(alert_id=alert.pk)
    return SpendCheck(period, start, end, spent, threshold, alert=alert, delivery=delivery)


# --- Delivering -----------------------------------------------------------------------------


def alert_deliver(*, alert_id: int) -> DeliveryResult:
    """Send an alert by email and webhook, each channel at most once.

    Call outside a transaction: it makes network calls. A channel is claimed (its
    timestamp set by a conditional update) before it is used, so concurrent or repeated
    deliveries send it once; a failed send releases the claim for a later retry and is
    described in `delivery_error`. A claimed send that dies mid-way (the process killed)
    is not retried: an alert is better missed once than sent in a loop. Channel failures
    never raise. Returns a DeliveryResult; raises Alert.DoesNotExist for an unknown id.
    """
    alert = Alert.objects.select_related("budget", "usage").get(pk=alert_id)
    errors: list[str] = []
    email = _deliver_channel(
        alert=alert,
        field="emailed_at",
        configured=bool(settings.ROSTER_ALERT_EMAILS),
        send=_send_email,
        errors=errors,
    )
    webhook = _deliver_channel(
        alert=alert,
        field="webhook_at",
        configured=bool(settings.ROSTER_ALERT_WEBHOOK_URL),
        send=_send_webhook,
        errors=errors,
    )
    if Delivery.SENT in (email, webhook) or errors:
        # The latest attempt's errors: an empty text means every channel tried got through.
        Alert.objects.filter(pk=alert.pk).update(delivery_error="\n".join(errors))
    return DeliveryResult(alert_id=alert.pk, email=email, webhook=webhook, errors=tuple(errors))


def alerts_deliver_pending(
    *,
    min_age: timedelta = timedelta(minutes=1),
    max_age: timedelta = timedelta(days=1),
    now: datetime | None = None,
) -> list[DeliveryResult]:
    """Retry delivery of recent alerts that a configured channel has not received.

    For beat: it catches an alert whose queued delivery was lost (broker down at commit)
    or whose channel failed. Alerts younger than `min_age` are left to their own queued
    delivery; older than `max_age` are no longer news. Returns one DeliveryResult per
    alert tried, oldest first.
    """
    missing = Q()
    if settings.ROSTER_ALERT_EMAILS:
        missing |= Q(emailed_at__isnull=True)
    if settings.ROSTER_ALERT_WEBHOOK_URL:
        missing |= Q(webhook_at__isnull=True)
    if not missing:
        return []
    now = now or timezone.now()
    pending = (
        Alert.objects.filter(missing, created_at__gt=now - max_age, created_at__lte=now - min_age)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )
    results = []
    for alert_id in pending:
        try:
            results.append(alert_deliver(alert_id=alert_id))
        except Alert.DoesNotExist:
            continue  # deleted with its budget since the query ran
    return results


def _deliver_channel(
    *,
    alert: Alert,
    field: str,
    configured: bool,
    send: Callable[[Alert], None],
    errors: list[str],
) -> Delivery:
    if not configured:
        return Delivery.NOT_CONFIGURED
    claimed_at = timezone.now()
    # The claim: exactly one attempt can move the channel's timestamp from NULL.
    claimed = Alert.objects.filter(pk=alert.pk, **{f"{field}__isnull": True}).update(
        **{field: claimed_at}
    )
    if claimed != 1:
        return Delivery.ALREADY_SENT
    try:
        send(alert)
    except DeliveryError as exc:
        # Release only our own claim, so a concurrent attempt's success is never undone.
        Alert.objects.filter(pk=alert.pk, **{field: claimed_at}).update(**{field: None})
        logger.warning("Alert %s: %s", alert.pk, exc)
        errors.append(str(exc))
        return Delivery.FAILED
    setattr(alert, field, claimed_at)
    return Delivery.SENT


def _send_email(alert: Alert) -> None:
    recipients = list(settings.ROSTER_ALERT_EMAILS)
    try:
        send_mail(
            subject=f"[Roster] {alert.get_kind_display()}",
            message=_email_body(alert),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
            fail_silently=False,
        )
    except Exception as exc:
        # The mail backend is pluggable and may raise anything (SMTP, DNS, TLS, a
        # provider's API error); any failure is recorded so the webhook still goes out.
        reason = str(exc) or type(exc).__name__
        raise DeliveryError(f"Email to {', '.join(recipients)} failed: {reason}") from exc


def _send_webhook(alert: Alert) -> None:
    url = settings.ROSTER_ALERT_WEBHOOK_URL
    # Webhook URLs carry their secret in the path (Slack, Teams): errors name the host.
    host = urlsplit(url).hostname or "the configured URL"
    try:
        response = httpx.post(
            url, json=_webhook_payload(alert), timeout=WEBHOOK_TIMEOUT, follow_redirects=False
        )
    except httpx.TimeoutException:
        raise DeliveryError(f"Webhook to {host} timed out after {WEBHOOK_TIMEOUT:g}s.") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise DeliveryError(
            "Webhook URL (ROSTER_ALERT_WEBHOOK_URL) is not a valid http(s) URL."
        ) from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise DeliveryError(f"Webhook to {host} failed: {reason}") from None
    if not response.is_success:
        # Redirects are not followed (a webhook that moved must be reconfigured), so a
        # 3xx is a failure too.
        snippet = response.text[:ERROR_SNIPPET_CHARS].strip()
        raise DeliveryError(
            f"Webhook to {host} answered HTTP {response.status_code} "
            f"{response.reason_phrase}" + (f": {snippet}" if snippet else ".")
        )


def _webhook_payload(alert: Alert) -> dict[str, Any]:
    # `text` is what Slack, Mattermost, Rocket.Chat and Discord-compatible relays show;
    # `alert` carries the figures exactly (as strings) for anything that parses them.
    return {
        "text": alert.message,
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "budget": alert.budget.name if alert.budget else None,
            "threshold": alert.threshold,
            "amount": _exact_or_none(alert.amount),
            "limit": _exact_or_none(alert.limit),
            "period_start": alert.period_start.isoformat() if alert.period_start else None,
            "call_id": alert.usage.call_id if alert.usage else None,
        },
    }


def _email_body(alert: Alert) -> str:
    lines = [alert.message, "", f"Kind: {alert.get_kind_display()}"]
    if alert.budget:
        lines.append(f"Budget: {alert.budget.name}")
    if alert.period_start:
        lines.append(f"Period from: {alert.period_start.isoformat()}")
    if alert.amount is not None:
        lines.append(f"Amount (USD): {decimal_text(alert.amount)}")
    if alert.limit is not None:
        lines.append(f"Limit (USD): {decimal_text(alert.limit)}")
    if alert.usage:
        lines.append(f"Call id: {alert.usage.call_id}")
    lines.append(f"Recorded: {alert.created_at.astimezone(office_tz()):%Y-%m-%d %H:%M %Z}")
    return "\n".join(lines) + "\n"


# --- Wording --------------------------------------------------------------------------------


def _period_label(*, period: str, start: date) -> str:
    """How a message names a period: "2026-11", "the week of 2026-11-02", "2026-11-05"."""
    if period == "month":
        return f"{start:%Y-%m}"
    if period == "week":
        return f"the week of {start.isoformat()}"
    return start.isoformat()


def _usd_brief(amount: Decimal) -> str:
    """Dollars and cents for people ("$40.12"); every digit when cents would hide it."""
    cents = amount.quantize(CENT, rounding=decimal.ROUND_HALF_UP)
    if cents == amount or amount >= 1:
        return f"${cents:,}"
    return f"${decimal_text(amount)}"


def _exact_or_none(amount: Decimal | None) -> str | None:
    return None if amount is None else decimal_text(amount)


def _queue_delivery(alert_id: int) -> None:
    # Imported here: billing.tasks imports this module.
    from billing.tasks import deliver_alert

    # After commit, so a rolled-back settlement alerts nobody; robust, so a broker that is
    # down cannot fail a settlement that has already committed (the sweep retries).
    transaction.on_commit(lambda: deliver_alert.delay(alert_id), robust=True)
