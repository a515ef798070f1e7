"""Shapes of the roles API."""

from __future__ import annotations

from rest_framework import serializers

from billing.pricing import PRICE_KINDS
from office.api.serializers import ExactDecimalStringField


class BoundModelSerializer(serializers.Serializer):
    slug = serializers.CharField(help_text="Catalog id, e.g. google/gemini-2.5-flash.")
    name = serializers.CharField()
    context_length = serializers.IntegerField(allow_null=True)


class PriceSerializer(serializers.Serializer):
    """The model's price version in force: USD per token for the token kinds, per call
    for `request` and `web_search`, per image for `image`; exact strings, null where the
    catalog gives no price."""

    valid_from = serializers.DateTimeField()
    source = serializers.CharField(help_text="sync, override or local.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for kind in PRICE_KINDS:
            fields[kind] = ExactDecimalStringField(allow_null=True)
        return fields


class RoleOutputSerializer(serializers.Serializer):
    slug = serializers.CharField(source="role.slug", help_text="What `role` names in a task.")
    name = serializers.CharField(source="role.name")
    description = serializers.CharField(source="role.description")
    policy = serializers.CharField(
        source="binding.policy",
        allow_null=True,
        help_text="single, tiered, fallback or escalate (docs/routing.md); null if unbound.",
    )
    model = BoundModelSerializer(
        source="binding.model",
        allow_null=True,
        help_text="The model bound to the role now; null: unbound (tasks are refused).",
    )
    price = PriceSerializer(allow_null=True, help_text="The model's price now; null: none.")
