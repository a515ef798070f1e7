"""Admin for the office: roles, tasks (added through task_submit), API tokens."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from office.errors import TaskRejected
from office.forms import DomainErrorFormMixin
from office.models import ApiToken, Role, Task
from office.services import api_token_create, task_submit


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name", "description"]
    prepopulated_fields = {"slug": ["name"]}


class TaskAddForm(DomainErrorFormMixin, forms.ModelForm):
    """The admin's add form: submitting it is task_submit, so the task is dispatched.

    The service both checks and saves, and only a form's validation can show its refusal
    next to the field, so the task is submitted here, during validation, inside the
    admin's transaction (dispatch waits for the commit). `submitted_by` is set per
    request by TaskAdmin.get_form.
    """

    submitted_by: AbstractBaseUser | None = None

    class Meta:
        model = Task
        fields = ["role", "title", "prompt", "max_tokens"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.instance = task_submit(
                role=cleaned["role"],
                prompt=cleaned["prompt"],
                title=cleaned.get("title") or "",
                max_tokens=cleaned.get("max_tokens"),
                created_by=self.submitted_by,
            )
        except TaskRejected as exc:
            self.add_domain_error(exc)
        return cleaned


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "excerpt",
        "role",
        "status",
        "cost_usd",
        "tokens",
        "created_at",
        "created_by",
    ]
    list_display_links = ["id", "excerpt"]
    list_filter = ["status", "kind", "role", "created_at"]
    list_select_related = ["role", "created_by"]
    search_fields = ["prompt", "title"]
    # A task is a record of work done: after submission only its title may be edited.
    readonly_fields = [
        "role",
        "prompt",
        "max_tokens",
        "status",
        "result",
        "error",
        "created_by",
        "created_at",
        "dispatched_at",
        "started_at",
        "finished_at",
        "claimed_by",
        "executions",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "provider_calls",
        "model_label",
        "kind",
        "parent",
        "strategy_role",
        "prefix",
    ]
    fieldsets = [
        (None, {"fields": ["role", "title", "prompt", "max_tokens", "created_by"]}),
        ("Outcome", {"fields": ["status", "model_label", "result", "error"]}),
        (
            "Totals",
            {"fields": ["input_tokens", "output_tokens", "cost_usd", "provider_calls"]},
        ),
        (
            "Timeline",
            {
                "fields": [
                    "created_at",
                    "dispatched_at",
                    "started_at",
                    "finished_at",
                    "claimed_by",
                    "executions",
                ]
            },
        ),
        ("Spec then execute", {"fields": ["kind", "parent", "strategy_role", "prefix"]}),
    ]

    @admin.display(description="Task")
    def excerpt(self, task: Task) -> str:
        text = task.title or task.prompt
        return text if len(text) <= 60 else f"{text[:59]}…"

    # Not sortable on purpose: money is stored as text on SQLite (office.fields), so SQL
    # ordering would sort "10" before "9".
    @admin.display(description="Cost (USD)")
    def cost_usd(self, task: Task) -> str:
        return format(task.cost.normalize(), "f")

    @admin.display(description="Tokens in / out")
    def tokens(self, task: Task) -> str:
        return f"{task.input_tokens:,} / {task.output_tokens:,}"

    def get_fieldsets(self, request: HttpRequest, obj: Task | None = None) -> Any:
        if obj is None:
            return [(None, {"fields": TaskAddForm.Meta.fields})]
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Task | None = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def get_form(
        self, request: HttpRequest, obj: Task | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = type("TaskAddForm", (TaskAddForm,), {"submitted_by": request.user})
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Task, form: forms.ModelForm, change: bool
    ) -> None:
        # A new task was saved by task_submit during the form's validation.
        if change:
            super().save_model(request, obj, form, change)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "user",
        "key_hint",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    list_filter = ["revoked_at", "expires_at"]
    list_select_related = ["user"]
    search_fields = ["name", "key_hint", "user__username"]
    autocomplete_fields = ["user"]
    readonly_fields = ["key_hint", "created_at", "last_used_at", "revoked_at"]
    # The scope: the roles the token may use (none chosen: all). Editable later too, so
    # an agent's scope can be narrowed without handing it a new token.
    filter_horizontal = ["roles"]
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        if obj is None:
            return ["name", "user", "expires_at", "roles"]
        return [
            "name",
            "user",
            "key_hint",
            "expires_at",
            "roles",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = api_token_create(
            user=obj.user,
            name=obj.name,
            expires_at=obj.expires_at,
            roles=form.cleaned_data.get("roles") or (),
        )
        obj.pk, obj.key_hash, obj.key_hint = token.pk, token.key_hash, token.key_hint
        # Only the hash is stored: this message is the one chance to copy the token.
        messages.success(
            request,
            format_html(
                "The token for “{}” is <code>{}</code>. Copy it now: it will not be shown again.",
                obj.name,
                raw,
            ),
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token{'s' if count != 1 else ''}.")
