"""The Django admin for services: list, filter, search, and a form whose errors sit next to the field at fault."""

from __future__ import annotations

import dataclasses

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from monitor.models import Alert, Channel, DeliveryAttempt, Notification, Service
from monitor.probes import PROTOCOLS, ConnectionOptions
from monitor.secrets import masked


def options_help() -> str:
    """Return which options each protocol takes, read from the engine's registry so new protocols appear here."""
    common = [field.name for field in dataclasses.fields(ConnectionOptions)]
    lines = [f'A JSON object, e.g. {{"tls_warn_days": 7}}. Every protocol: {", ".join(common)}.']
    for key, module in PROTOCOLS.items():
        own = [field.name for field in dataclasses.fields(module.Options) if field.name not in common]
        if own:
            lines.append(f"{key}: {', '.join(own)}.")
    return " ".join(lines)


class ServiceForm(forms.ModelForm):
    class Meta:
        model = Service
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["options"].help_text = options_help()
        modes = "; ".join(f"{key}: {', '.join(module.TLS_MODES)}" for key, module in PROTOCOLS.items())
        self.fields["tls_mode"].help_text = f"TLS modes each protocol supports: {modes}."


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    form = ServiceForm
    list_display = ("name", "protocol", "host", "port", "tls_mode", "interval", "enabled")
    list_filter = ("protocol", "tls_mode", "enabled", "locations")
    search_fields = ("name", "host", "tags")
    readonly_fields = ("created", "updated")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "tags")}),
        ("Target", {"fields": ("protocol", "host", "port", "tls_mode")}),
        ("Schedule", {"fields": ("interval", "timeout", "locations")}),
        ("Incidents", {"fields": ("failure_threshold", "recovery_threshold")}),
        ("Options", {"fields": ("options",)}),
        ("History", {"fields": ("created", "updated")}),
    )


class ChannelForm(forms.ModelForm):
    """Secrets are typed in, never shown back: a blank field on an existing channel keeps what is stored."""

    url = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False, label="URL")
    secret = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False)

    class Meta:
        model = Channel
        fields = ("name", "kind", "enabled", "tags", "url", "secret", "timeout")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ("url", "secret"):
            self.initial.pop(name, None)  # never rendered into the page, even in a hidden field
            stored = getattr(self.instance, name, "") if self.instance.pk else ""
            shown = f"Stored: {masked(stored)}. Leave blank to keep it." if stored else "Not set."
            self.fields[name].help_text = shown
        self.fields["url"].help_text += (
            " Webhook: where to POST, http:// or https://. Email: the recipients, comma-separated."
            " Apprise: one or more apprise URLs, space-separated."
        )

    def clean_url(self) -> str:
        url = self.cleaned_data["url"] or (self.instance.url if self.instance.pk else "")
        if not url:
            raise forms.ValidationError("URL is required.")
        return url

    def clean_secret(self) -> str:
        return self.cleaned_data["secret"] or (self.instance.secret if self.instance.pk else "")


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ("name", "kind", "masked_url", "tags", "enabled", "timeout")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "tags")

    @admin.display(description="URL")
    def masked_url(self, channel: Channel) -> str:
        return channel.masked_url


from monitor import admin_history  # noqa: E402  (registers the read-only history pages)


@admin.register(Alert)
class AlertAdmin(admin_history.ReadOnlyAdmin):
    list_display = ("service", "location", "kind", "since", "created", "notified", "reason")
    list_filter = ("kind", "notified")
    search_fields = ("service__name",)


@admin.register(Notification)
class NotificationAdmin(admin_history.ReadOnlyAdmin):
    list_display = ("alert", "channel", "status", "attempts", "next_attempt_at", "sent_at", "last_error")
    list_filter = ("status", "channel")

    def get_queryset(self, request: HttpRequest):
        # The channel by name only: its URL and secret are neither decrypted nor shown here.
        related = super().get_queryset(request).select_related("alert__service", "channel")
        return related.defer("channel__url", "channel__secret")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin_history.ReadOnlyAdmin):
    list_select_related = ("notification",)
    list_display = ("notification", "at", "ok", "status", "elapsed", "error")
    list_filter = ("ok",)
