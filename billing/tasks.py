"""Celery tasks for billing: thin, take ids, call one service, safe to run twice."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from billing.alerts import alert_deliver, alerts_deliver_pending
from billing.budgets import budget_alerts_sweep
from billing.models import Alert

logger = logging.getLogger(__name__)


@shared_task(name="billing.tasks.deliver_alert")
def deliver_alert(alert_id: int) -> dict[str, Any]:
    """Deliver one alert by email and webhook (each channel at most once)."""
    try:
        return alert_deliver(alert_id=alert_id).as_dict()
    except Alert.DoesNotExist:
        # Deleted with its budget before the message was picked up: nothing to send.
        logger.info("Alert %s no longer exists; nothing to deliver.", alert_id)
        return {"alert_id": alert_id, "missing": True}


@shared_task(name="billing.tasks.deliver_pending_alerts")
def deliver_pending_alerts() -> list[dict[str, Any]]:
    """Retry recent alerts a configured channel has not received (for beat)."""
    return [result.as_dict() for result in alerts_deliver_pending()]


@shared_task(name="billing.tasks.sweep_budget_alerts")
def sweep_budget_alerts() -> int:
    """Record threshold alerts current budget periods reached but lack (for beat)."""
    return budget_alerts_sweep()
