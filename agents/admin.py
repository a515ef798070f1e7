"""Admin for credentials (secrets write-only), role bindings and worker liveness."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from agents.models import RATE_LIMIT_MESSAGE, Credential, RoleBinding, WorkerHeartbeat
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


@admin.register(RoleBinding)
class RoleBindingAdmin(admin.ModelAdmin):
    list_display = ["role", "model", "credential", "upstream_model", "max_tokens", "updated_at"]
    list_filter = ["credential__provider", "credential"]
    search_fields = ["role__slug", "role__name", "model__slug"]
    autocomplete_fields = ["model"]
    list_select_related = ["role", "model", "credential"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(HistoryAdminMixin, admin.ModelAdmin):
    list_display = ["worker_id", "hostname", "pid", "started_at", "last_seen"]
    search_fields = ["worker_id", "hostname"]
