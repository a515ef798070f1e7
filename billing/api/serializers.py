"""Shapes of the usage API. Money is exact decimal text, never a float."""

from __future__ import annotations

from rest_framework import serializers

from office.api.serializers import ExactDecimalStringField


class RoleSpendSerializer(serializers.Serializer):
    role = serializers.CharField(source="role.slug")
    calls = serializers.IntegerField(source="spend.calls", help_text="Billed provider calls.")
    failed_calls = serializers.IntegerField(source="spend.failed_calls")
    unpriced_calls = serializers.IntegerField(
        source="spend.unpriced_calls",
        help_text="Calls to a model without a price: their cost is unknown, not in `cost`.",
    )
    input_tokens = serializers.IntegerField(source="spend.input_tokens")
    output_tokens = serializers.IntegerField(source="spend.output_tokens")
    cost = ExactDecimalStringField(source="spend.cost", help_text="USD, exact.")


class BudgetStateSerializer(serializers.Serializer):
    name = serializers.CharField(source="budget.name")
    scope = serializers.CharField(source="budget.scope", help_text="office or role.")
    role = serializers.CharField(
        source="budget.role.slug", allow_null=True, help_text="The role (role scope only)."
    )
    period = serializers.CharField(source="budget.period", help_text="day, week or month.")
    action = serializers.CharField(
        source="budget.action",
        help_text="At the limit: block, downgrade (to the over-budget model) or alert_only.",
    )
    period_start = serializers.DateField(source="start", help_text="First day of the period.")
    period_end = serializers.DateField(source="end", help_text="First day after the period.")
    limit = ExactDecimalStringField(source="budget.limit", help_text="USD per period.")
    spent = ExactDecimalStringField(help_text="USD settled this period.")
    reserved = ExactDecimalStringField(help_text="USD held by calls in flight.")
    remaining = ExactDecimalStringField(help_text="limit - spent - reserved, at least 0.")


class UsageOutputSerializer(serializers.Serializer):
    month = serializers.CharField(help_text="YYYY-MM, in the office's time zone.")
    roles = RoleSpendSerializer(many=True, help_text="This month's spend per role you may use.")
    cost = ExactDecimalStringField(help_text="USD: the sum over `roles`.")
    budgets = BudgetStateSerializer(
        many=True, help_text="The budgets over those roles (the office's and their own)."
    )
