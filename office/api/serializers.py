"""Shapes of the task API. Serializers check types; office.services owns the rules."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from office.api.base import MAX_ID
from office.errors import DomainError
from office.fields import decimal_text
from office.models import Task, TaskKind


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses keys it does not know, instead of ignoring them:
    a misspelt `max_token` would otherwise be dropped without a word.

    Raises DomainError (`unsupported_parameter`, 400) naming the unknown keys.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                names = ", ".join(repr(name[:50]) for name in unknown[:10])
                accepted = ", ".join(self.fields)
                raise DomainError(
                    f"Unsupported parameter{'s' if len(unknown) > 1 else ''}: {names}. "
                    f"This endpoint accepts: {accepted or 'no parameters'}.",
                    code="unsupported_parameter",
                    field=unknown[0][:50],
                )
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Text, and only text: DRF's CharField turns 42 or true into "42" or "True", which
    hides a client's bug (and breaks the schema's promise that the field is a string)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")  # "Not a valid string."
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, and only that: not "5", 5.0 or true, which DRF's IntegerField
    would turn into 5 or 1."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")  # "A valid integer is required."
        return super().to_internal_value(data)


class EmptyInputSerializer(StrictInputSerializer):
    """The body of an action that takes no parameters (cancel, retry): none, or {}."""


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable and machine-readable, e.g. prompt_too_long.")
    message = serializers.CharField(help_text="For people.")
    field = serializers.CharField(
        allow_null=True, help_text="The input at fault (dotted when nested), or null."
    )
    details = serializers.DictField(
        required=False,
        child=serializers.JSONField(),
        help_text="Validation errors only: every field's messages.",
    )


class ErrorSerializer(serializers.Serializer):
    """Every error of the API has this shape (office.api.errors)."""

    error = ErrorDetailSerializer()


@extend_schema_field(OpenApiTypes.STR)
class ExactDecimalStringField(serializers.Field):
    """A money amount as a string with every stored digit: "0.00000008333333333333334".

    Never a float (which would lose digits), and not DRF's DecimalField, which pads or
    rounds to a fixed number of places. Trailing zeros are dropped so SQLite and
    PostgreSQL (which pads to the column's scale) give the same text.
    """

    def __init__(self, **kwargs: object) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: Decimal | int) -> str:
        return decimal_text(value)


class TaskCreateInputSerializer(StrictInputSerializer):
    """A task for a role. Keys other than these are refused (`unsupported_parameter`)."""

    role = StrictCharField(max_length=50, help_text="The role's slug, e.g. 'coder'.")
    # Blank and oversized prompts and an out-of-range max_tokens are left to task_submit,
    # so the API and the web form refuse them with the same codes and messages.
    prompt = StrictCharField(allow_blank=True, trim_whitespace=False)
    title = StrictCharField(max_length=200, required=False, allow_blank=True)
    max_tokens = StrictIntegerField(required=False, allow_null=True)
    tier_hint = StrictCharField(
        max_length=10,
        required=False,
        allow_blank=True,
        help_text="low, medium or high: how hard the task is (a tiered role's routing).",
    )
    # Whether each is a web address, how many there may be and whose task may be followed
    # up are task_submit's rules (url_invalid, urls_too_many, follow_up_unknown...).
    urls = serializers.ListField(
        child=StrictCharField(allow_blank=True, trim_whitespace=True),
        required=False,
        help_text="Pages the role should read (http or https); it gets their text.",
    )
    follow_up_of = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_ID,
        help_text="Id of an earlier, finished task of yours: this one continues its thread.",
    )
    kind = StrictCharField(
        max_length=20,
        required=False,
        default="task",
        help_text=(
            "task (default), or spec_execute: `strategy_role` writes an implementation "
            "spec, then `role` carries it out."
        ),
    )
    strategy_role = StrictCharField(
        max_length=50,
        required=False,
        allow_blank=True,
        help_text="spec_execute only: the slug of the role that writes the spec.",
    )


class TaskFollowUpInputSerializer(StrictInputSerializer):
    """A follow-up of the task in the URL: its thread continues with this prompt."""

    role = StrictCharField(
        max_length=50,
        required=False,
        help_text="The role's slug; by default the role of the task followed up.",
    )
    prompt = StrictCharField(allow_blank=True, trim_whitespace=False)
    title = StrictCharField(max_length=200, required=False, allow_blank=True)
    max_tokens = StrictIntegerField(required=False, allow_null=True)
    tier_hint = StrictCharField(max_length=10, required=False, allow_blank=True)
    urls = serializers.ListField(
        child=StrictCharField(allow_blank=True, trim_whitespace=True), required=False
    )


class TaskStepSerializer(serializers.Serializer):
    """One step of a spec-then-execute task, as its parent lists it."""

    id = serializers.IntegerField()
    kind = serializers.CharField()
    role = serializers.CharField(source="role.slug")
    status = serializers.CharField()
    cost = ExactDecimalStringField(help_text="USD, exact, as a string.")
    provider_calls = serializers.IntegerField()
    model_label = serializers.CharField()
    url = serializers.HyperlinkedIdentityField(
        view_name="office_api:task_detail", lookup_url_kwarg="task_id"
    )


class TaskOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.CharField(source="role.slug")
    title = serializers.CharField()
    prompt = serializers.CharField()
    status = serializers.CharField()
    result = serializers.CharField()
    error = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost = ExactDecimalStringField(help_text="USD, exact, as a string.")
    provider_calls = serializers.IntegerField()
    model_label = serializers.CharField()
    tier_hint = serializers.CharField()
    routing_decisions = serializers.JSONField(
        help_text="What routing decided and why, step by step (docs/routing.md)."
    )
    kind = serializers.CharField(
        help_text="task, spec_execute, or one of its steps: spec, execute."
    )
    strategy_role = serializers.CharField(
        source="strategy_role.slug",
        allow_null=True,
        help_text="spec_execute only: the role that writes the spec (null for others).",
    )
    parent = serializers.HyperlinkedRelatedField(
        view_name="office_api:task_detail",
        lookup_url_kwarg="task_id",
        read_only=True,
        allow_null=True,
        help_text="A step's spec-then-execute task (null for others).",
    )
    steps = serializers.SerializerMethodField(
        help_text="A spec-then-execute task's steps, in order, each billed on its own."
    )
    urls = serializers.JSONField()
    page_notes = serializers.JSONField(
        help_text='Per URL: {"url", "included", "note", "tokens"}: what the role got of it.'
    )
    follow_up_of = serializers.IntegerField(source="follow_up_of_id", allow_null=True)
    thread = serializers.IntegerField(
        source="thread_id", help_text="Id of the thread's first task (this task's own id)."
    )
    thread_turn = serializers.IntegerField()
    history_tokens = serializers.IntegerField(
        help_text="Tokens of the thread's history sent again with this task (estimated)."
    )
    history_tokens_saved = serializers.IntegerField(
        help_text="Tokens the helper's summary of older turns saved (estimated)."
    )
    history_summarized_turns = serializers.IntegerField()
    retry_of = serializers.IntegerField(
        source="retry_of_id", allow_null=True, help_text="Id of the task this one retries."
    )
    prepared_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.HyperlinkedIdentityField(
        view_name="office_api:task_detail", lookup_url_kwarg="task_id"
    )

    @extend_schema_field(TaskStepSerializer(many=True))
    def get_steps(self, task: Task) -> list[dict[str, Any]]:
        if task.kind != TaskKind.SPEC_EXECUTE:
            return []  # only a spec-then-execute task has steps: no query for the others
        # The selectors prefetch the steps in order; a task loaded otherwise queries them.
        steps = sorted(task.steps.all(), key=lambda step: step.pk)
        return list(TaskStepSerializer(steps, many=True, context=self.context).data)


class TaskPageSerializer(serializers.Serializer):
    """A page of tasks (limit/offset pagination)."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TaskOutputSerializer(many=True)
