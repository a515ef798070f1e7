"""Template tags that show billing's figures on other apps' pages.

`office` imports no billing code (DESIGN.md); its templates load these tags instead, so
the coupling stays at the template level.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template

from billing.money import format_usd
from billing.reports import ratio_percent
from billing.selectors import usage_for_task
from office.fields import decimal_text
from office.models import Task

register = template.Library()


@register.filter
def usd(amount: Decimal | int | None) -> str:
    """An amount for people: "$0.001234" (six places), or an em dash for None."""
    return format_usd(None if amount is None else Decimal(amount))


@register.filter
def usd_exact(amount: Decimal | int | None) -> str:
    """An amount with every stored digit and no exponent: "$0.00000008333333333333334"."""
    if amount is None:
        return "—"
    return f"${decimal_text(amount)}"


@register.filter
def percent(ratio: Decimal | None) -> str:
    """A ratio from 0 to 1 as a percentage for people: "16.7 %", or an em dash for None
    (nothing to divide by)."""
    return ratio_percent(ratio)


@register.inclusion_tag("billing/_task_ledger.html")
def task_ledger(task: Task) -> dict[str, Any]:
    """The ledger rows of one task (every provider call, failed ones too, and the local
    helper's operations), oldest first."""
    return {"calls": list(usage_for_task(task=task))}
