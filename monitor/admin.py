"""The Django admin for services: list, filter, search, and a form whose errors sit next to the field at fault."""

from __future__ import annotations

import dataclasses

from django import forms
from django.contrib import admin

from monitor.models import Service
from monitor.probes import PROTOCOLS, ConnectionOptions


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


from monitor import admin_history  # noqa: E402, F401  (registers the read-only history pages)
