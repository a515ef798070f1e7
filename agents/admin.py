"""Admin for credentials (secrets write-only), role bindings with their routing, and
worker liveness."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.http import HttpRequest

from agents.models import (
    RATE_LIMIT_MESSAGE,
    Credential,
    RoleBinding,
    RouteCandidate,
    RoutingPolicy,
    WorkerHeartbeat,
)
from agents.routing import (
    CandidateSpec,
    RoutingInvalid,
    candidate_spec_of,
    escalation_rules_validate,
    route_candidates_validate,
)
from agents.secrets import SecretError
from agents.services import credential_set_secret
from office.admin_history import HistoryAdminMixin


class CredentialForm(forms.ModelForm):
    """The secret is entered here and never rendered back: the widget keeps no value."""

    base_url = forms.URLField(
        required=False,
        assume_scheme="https",
        max_length=300,
        help_text="Leave blank for the provider's public endpoint.",
    )
    secret = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted and never shown again. Leave blank to keep the current key.",
    )

    class Meta:
        model = Credential
        fields = [
            "label",
            "provider",
            "base_url",
            "is_simulated",
            "requests_per_minute",
            "tokens_per_minute",
        ]
        # The form field stops negatives before the model's own "at least 1" check runs;
        # both say the same thing.
        error_messages = {
            "requests_per_minute": {"min_value": RATE_LIMIT_MESSAGE},
            "tokens_per_minute": {"min_value": RATE_LIMIT_MESSAGE},
        }

    def clean_secret(self) -> str:
        raw = self.cleaned_data.get("secret", "")
        if not raw and not self.instance.pk:
            raise forms.ValidationError("Enter the provider's API key.")
        if raw:
            try:
                credential_set_secret(credential=self.instance, raw_secret=raw)
            except SecretError as exc:
                raise forms.ValidationError(str(exc)) from None
        return ""  # the clear text goes no further than the encryption above


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialForm
    list_display = [
        "label",
        "provider",
        "base_url",
        "masked_secret",
        "is_simulated",
        "requests_per_minute",
        "tokens_per_minute",
        "updated_at",
    ]
    list_filter = ["provider", "is_simulated"]
    search_fields = ["label", "base_url"]
    readonly_fields = ["masked_secret", "created_at", "updated_at"]
    fields = [
        "label",
        "provider",
        "base_url",
        "secret",
        "masked_secret",
        "is_simulated",
        "requests_per_minute",
        "tokens_per_minute",
    ]

    @admin.display(description="Key")
    def masked_secret(self, obj: Credential) -> str:
        return obj.masked_secret


class RoleBindingForm(forms.ModelForm):
    """The binding; escalation rules are checked against the chosen policy here, the
    candidates by their inline formset."""

    # Set by the admin when the request carries no candidate rows (a script posting the
    # binding alone): the policy is then checked against the candidates already saved.
    check_saved_candidates = False

    class Meta:
        model = RoleBinding
        fields = [
            "role",
            "model",
            "credential",
            "upstream_model",
            "max_tokens",
            "policy",
            "escalation_rules",
            "over_budget_model",
            "over_budget_credential",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Left out, the policy stays what it was (single for a new binding).
        self.fields["policy"].required = False

    def clean_policy(self) -> str:
        return self.cleaned_data.get("policy") or self.instance.policy or RoutingPolicy.SINGLE

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        policy = cleaned.get("policy")
        if not policy:
            return cleaned
        try:
            escalation_rules_validate(policy=policy, text=cleaned.get("escalation_rules", ""))
        except RoutingInvalid as exc:
            self.add_error("escalation_rules", list(exc.problems))
        if self.check_saved_candidates:
            saved = self.instance.candidates.all() if self.instance.pk else []
            try:
                route_candidates_validate(
                    policy=policy, candidates=[candidate_spec_of(row) for row in saved]
                )
            except RoutingInvalid as exc:
                self.add_error("policy", list(exc.problems))
        return cleaned


class RouteCandidateForm(forms.ModelForm):
    class Meta:
        model = RouteCandidate
        fields = [
            "slot",
            "position",
            "model",
            "credential",
            "upstream_model",
            "attempts",
            "timeout_seconds",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A missing credential is reported by the routing check, which names the candidate.
        self.fields["credential"].required = False


class RouteCandidateFormSet(forms.BaseInlineFormSet):
    """Checks the candidates as a whole against the policy chosen on the binding form."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return  # fix the rows first; the whole is checked once they are valid
        specs = [
            CandidateSpec(
                slot=form.cleaned_data["slot"],
                model=form.cleaned_data.get("model"),
                credential=form.cleaned_data.get("credential"),
                position=form.cleaned_data.get("position") or 0,
                attempts=form.cleaned_data.get("attempts"),
                upstream_model=form.cleaned_data.get("upstream_model", ""),
                timeout_seconds=form.cleaned_data.get("timeout_seconds"),
            )
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("slot")
        ]
        # The binding form's values are already on the instance (the admin builds the
        # formsets from the form's unsaved object).
        try:
            route_candidates_validate(policy=self.instance.policy, candidates=specs)
        except RoutingInvalid as exc:
            raise forms.ValidationError(list(exc.problems)) from None


class RouteCandidateInline(admin.TabularInline):
    model = RouteCandidate
    form = RouteCandidateForm
    formset = RouteCandidateFormSet
    extra = 0
    autocomplete_fields = ["model"]
    verbose_name = "route candidate"
    verbose_name_plural = (
        "Route candidates (tiered: one per tier; fallback: two or more, lowest position "
        "first; escalate: one cheap and one strong)"
    )


@admin.register(RoleBinding)
class RoleBindingAdmin(admin.ModelAdmin):
    form = RoleBindingForm
    inlines = [RouteCandidateInline]
    list_display = [
        "role",
        "policy",
        "model",
        "credential",
        "upstream_model",
        "max_tokens",
        "updated_at",
    ]
    list_filter = ["policy", "credential__provider", "credential"]
    search_fields = ["role__slug", "role__name", "model__slug"]
    autocomplete_fields = ["model"]
    list_select_related = ["role", "model", "credential"]
    fieldsets = [
        (None, {"fields": ["role", "model", "credential", "upstream_model", "max_tokens"]}),
        ("Routing", {"fields": ["policy", "escalation_rules"]}),
        ("Over budget", {"fields": ["over_budget_model", "over_budget_credential"]}),
    ]

    def get_inline_instances(
        self, request: HttpRequest, obj: RoleBinding | None = None
    ) -> list[InlineModelAdmin]:
        if _posts_binding_alone(request):
            return []  # nothing to validate or save for the candidates: they stay as they are
        return super().get_inline_instances(request, obj)

    def get_form(
        self,
        request: HttpRequest,
        obj: RoleBinding | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[forms.ModelForm]:
        form = super().get_form(request, obj, change=change, **kwargs)
        if _posts_binding_alone(request):
            return type(form.__name__, (form,), {"check_saved_candidates": True})
        return form


# The inline formset's prefix: Django's default, the candidates' related name.
CANDIDATES_PREFIX = "candidates"


def _posts_binding_alone(request: HttpRequest) -> bool:
    return request.method == "POST" and f"{CANDIDATES_PREFIX}-TOTAL_FORMS" not in request.POST


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(HistoryAdminMixin, admin.ModelAdmin):
    list_display = ["worker_id", "hostname", "pid", "started_at", "last_seen"]
    search_fields = ["worker_id", "hostname"]
