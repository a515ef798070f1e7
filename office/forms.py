"""Forms of the staff pages. They check shapes; the rules live in office.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model

from office.errors import DomainError
from office.models import SUBMITTABLE_KINDS, Role, TaskKind, TaskStatus, TaskTier
from office.selectors import roles_active


class DomainErrorFormMixin:
    """Show a service's DomainError on the form field it names (or on the form)."""

    fields: dict[str, forms.Field]

    def add_domain_error(self, exc: DomainError) -> None:
        field = exc.field if exc.field in self.fields else None
        self.add_error(field, exc.message)  # type: ignore[attr-defined]


class TaskForm(DomainErrorFormMixin, forms.Form):
    """A new task for a role. Limits (prompt size, max_tokens range) are task_submit's."""

    role = forms.ModelChoiceField(
        queryset=Role.objects.none(), to_field_name="slug", empty_label="Choose a role"
    )
    follow_up_of = forms.IntegerField(
        required=False,
        min_value=1,
        label="Follow-up of task #",
        help_text=(
            "Optional; one of your finished tasks. This task continues its thread: the "
            "earlier turns are sent along (older ones summarised when long)."
        ),
    )
    title = forms.CharField(
        max_length=200,
        required=False,
        help_text="Optional; one is written from the prompt when left blank.",
    )
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 12}))
    urls = forms.CharField(
        required=False,
        label="Pages to read",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "https://example.com/article"}),
        help_text=(
            "Optional; web addresses, one per line. The role reads each page's text; a page "
            "that cannot be read is left out and the task says why."
        ),
    )
    max_tokens = forms.IntegerField(
        required=False,
        label="Max output tokens",
        help_text="Optional; the role's own limit applies when left blank.",
    )
    tier_hint = forms.ChoiceField(
        choices=[("", "Automatic"), *TaskTier.choices],
        required=False,
        label="Difficulty",
        help_text=(
            "Optional; for a role with tiered routing, picks its low, medium or high model "
            "instead of the automatic estimate."
        ),
    )
    kind = forms.ChoiceField(
        choices=[(kind.value, kind.label) for kind in SUBMITTABLE_KINDS],
        initial=TaskKind.TASK,
        required=False,  # left out: a plain task
        label="Workflow",
        help_text=(
            "Spec then execute: the strategy role below first writes an implementation "
            "spec, then the role above carries it out (two steps, billed apart)."
        ),
    )
    strategy_role = forms.ModelChoiceField(
        queryset=Role.objects.none(),
        to_field_name="slug",
        required=False,
        empty_label="None",
        label="Strategy role",
        help_text="Spec then execute only: the role that writes the spec (a premium model).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["urls"].help_text += f" At most {settings.ROSTER_TASK_MAX_URLS}."
        # Evaluated per form, so that a role added a moment ago is offered.
        self.fields["role"].queryset = roles_active()
        self.fields["strategy_role"].queryset = roles_active()
        # Browser hints only: task_submit enforces the limits and words the messages.
        self.fields["prompt"].widget.attrs["maxlength"] = settings.ROSTER_MAX_PROMPT_CHARS
        self.fields["max_tokens"].widget.attrs.update(
            {"min": 1, "max": settings.ROSTER_MAX_TOKENS_LIMIT}
        )

    def clean_urls(self) -> list[str]:
        """One URL per line (blank lines ignored); task_submit checks each."""
        return [line.strip() for line in self.cleaned_data["urls"].splitlines() if line.strip()]


class TaskFilterForm(forms.Form):
    """The task list's filters, read from the query string. `person` is offered only to
    people who read everyone's tasks (`with_person`)."""

    role = forms.ModelChoiceField(
        queryset=Role.objects.order_by("slug"),
        to_field_name="slug",
        required=False,
        empty_label="All roles",
    )
    status = forms.ChoiceField(choices=[("", "All statuses"), *TaskStatus.choices], required=False)
    person = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        to_field_name="username",
        required=False,
        empty_label="Everyone",
    )
    created_from = forms.DateField(
        required=False,
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Created on or after this day.",
    )
    created_to = forms.DateField(
        required=False,
        label="To",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Created on or before this day.",
    )

    def __init__(self, *args: Any, with_person: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if with_person:
            # Only people who submitted something: a filter that can only answer "none"
            # is noise.
            self.fields["person"].queryset = (
                get_user_model()
                .objects.filter(roster_tasks__isnull=False)
                .distinct()
                .order_by("username")
            )
        else:
            del self.fields["person"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end day is before the start day.")
            data.pop("created_to", None)
        return data
