"""The dashboard's channel form: every Channel field, checked by the model's own `clean()`, secrets never shown back.

Exposes `ChannelForm` and `CHANNEL_FIELDSETS`. It extends the admin's form (monitor/admin.py), which owns the
rule for secrets: `url` and `secret` are typed in and never rendered, their help says what is stored,
masked, and a blank field on an existing channel keeps the stored value.
"""

from __future__ import annotations

from django import forms

from monitor.admin import ChannelForm as AdminChannelForm
from monitor.models import Channel, Service

# Fields in the order the page shows them, grouped by what they decide.
CHANNEL_FIELDSETS: list[tuple[str, tuple[str, ...]]] = [
    ("Channel", ("name", "kind", "enabled")),
    ("Where to", ("url", "secret", "timeout")),
    ("For which services", ("tags", "services")),
    ("When", ("group_window", "reminder_minutes", "escalate_to", "escalate_after_minutes")),
    ("On duty", ("schedule_days", "schedule_from", "schedule_until", "schedule_timezone")),
]
TIME = forms.TimeInput(attrs={"type": "time"}, format="%H:%M")


class ChannelForm(AdminChannelForm):
    """Every editable Channel field; the model's `clean()` checks the URL for its kind, the schedule and the chain."""

    class Meta(AdminChannelForm.Meta):
        fields = [name for _, names in CHANNEL_FIELDSETS for name in names]
        widgets = {
            "services": forms.SelectMultiple(attrs={"size": 6}),
            "schedule_from": TIME,
            "schedule_until": TIME,
        }

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("label_suffix", "")  # labels sit above their inputs, no colon needed
        super().__init__(*args, **kwargs)
        # Names only: listing whole channels would decrypt every other channel's secrets for a label.
        others = Channel.objects.only("id", "name").order_by("name")
        self.fields["escalate_to"].queryset = others.exclude(pk=self.instance.pk) if self.instance.pk else others
        self.fields["services"].queryset = Service.objects.only("id", "name").order_by("name")
        self.fields["url"].widget.attrs.update(autocomplete="off", spellcheck="false")
        self.fields["secret"].widget.attrs.update(autocomplete="new-password")

    def fieldsets(self) -> list[tuple[str, list[forms.BoundField]]]:
        """Return (legend, bound fields) pairs for the template."""
        return [(legend, [self[name] for name in names]) for legend, names in CHANNEL_FIELDSETS]
