"""The Django admin for services: list, filter, search, and a form whose errors sit next to the field at fault."""

from __future__ import annotations

import dataclasses
import zoneinfo

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from monitor.alerting import maintenance
from monitor.models import Alert, Channel, DeliveryAttempt, MaintenanceWindow, Notification, Service
from monitor.probes import PROTOCOLS, ConnectionOptions
from monitor.probes.options import LoginOptions, TLSOptions
from monitor.secrets import masked


def options_help() -> str:
    """Return which options each protocol takes, read from the engine's registry so new protocols appear here."""
    groups = [
        ("Every protocol", ConnectionOptions, lambda protocol: True),
        ("With TLS", TLSOptions, lambda protocol: issubclass(protocol.options, TLSOptions)),
        ("With a login check", LoginOptions, lambda protocol: issubclass(protocol.options, LoginOptions)),
    ]
    shared = {"password"}  # never an option: the login password has its own, encrypted field
    lines = ['A JSON object, e.g. {"tls_warn_days": 7}.']
    for title, options, applies in groups:
        names = [field.name for field in dataclasses.fields(options) if field.name not in shared]
        which = "" if options is ConnectionOptions else f" ({', '.join(k for k, p in PROTOCOLS.items() if applies(p))})"
        lines.append(f"{title}{which}: {', '.join(names)}.")
        shared.update(names)
    for key, protocol in PROTOCOLS.items():
        own = [field.name for field in dataclasses.fields(protocol.options) if field.name not in shared]
        if own:
            lines.append(f"{key}: {', '.join(own)}.")
    return " ".join(lines)


class ServiceForm(forms.ModelForm):
    """A service; its login password is typed in, stored encrypted and never shown back (blank keeps it)."""

    login_password = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        required=False,
        strip=False,
    )
    clear_login_password = forms.BooleanField(required=False, label="Remove the stored login password")

    class Meta:
        model = Service
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["options"].help_text = options_help()
        modes = "; ".join(f"{key}: {', '.join(protocol.tls_modes)}" for key, protocol in PROTOCOLS.items())
        self.fields["tls_mode"].help_text = f"TLS modes each protocol supports: {modes}."
        with_login = ", ".join(key for key, protocol in PROTOCOLS.items() if issubclass(protocol.options, LoginOptions))
        stored = "A password is stored (encrypted); leave blank to keep it." if self.instance.has_login_password else ""
        self.fields[
            "login_password"
        ].help_text = f"For a login check ({with_login}) of the account in the username option. {stored}".strip()

    def clean(self) -> dict:
        data = super().clean()
        if data.get("login_password"):
            self.instance.set_login_password(data["login_password"])
        elif data.get("clear_login_password"):
            self.instance.set_login_password(None)
        return data


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
        ("Options", {"fields": ("options", "login_password", "clear_login_password")}),
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


class MaintenanceWindowForm(forms.ModelForm):
    """Times are typed and shown in the window's own time zone, as the people planning the work think of them."""

    TIMES = ("starts_at", "ends_at", "repeat_until")

    class Meta:
        model = MaintenanceWindow
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in self.TIMES:
            self.fields[name].help_text = "In the window's time zone."
            if self.instance.pk and (moment := getattr(self.instance, name)) is not None:
                zone = maintenance.zone(self.instance)
                self.initial[name] = moment.astimezone(zone).replace(tzinfo=None)  # naive: shown as is

    def clean(self) -> dict:
        """Read the times in the window's zone, then check them together (`maintenance.validate`), each error at
        its field."""
        cleaned = super().clean()
        self._in_window_zone(cleaned)
        names = ("name", "starts_at", "ends_at", "repeat", "repeat_until", "timezone", "enabled")
        if all(name in cleaned for name in names):  # a field already refused has its own error
            try:
                maintenance.validate(MaintenanceWindow(**{name: cleaned[name] for name in names}))
            except forms.ValidationError as error:
                self.add_error(None, error)
        return cleaned

    def _in_window_zone(self, cleaned: dict) -> None:
        """Turn the times Django read in its own zone back into wall-clock times, and place them in the window's."""
        try:
            zone = zoneinfo.ZoneInfo(cleaned.get("timezone") or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return  # validate() says so at the field
        for name in self.TIMES:
            if (moment := cleaned.get(name)) is not None:
                wall = timezone.localtime(moment).replace(tzinfo=None)
                cleaned[name] = maintenance.from_wall(wall, zone, first=name != "ends_at")


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    form = MaintenanceWindowForm
    list_display = ("name", "occurrence", "repeat", "timezone", "enabled")
    list_filter = ("repeat", "enabled")
    search_fields = ("name", "tags", "note")
    filter_horizontal = ("services",)

    @admin.display(description="Now or next")
    def occurrence(self, window: MaintenanceWindow) -> str:
        found = maintenance.next_occurrence(window, timezone.now())
        if found is None:
            return "none left" if window.enabled else "disabled"
        zone = maintenance.zone(window)
        start, end = (moment.astimezone(zone) for moment in found)
        running = "now, " if start <= timezone.now() else ""
        return f"{running}{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M %Z}"


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
