"""Public status pages: `StatusPage` (a stable URL and what it may reveal) and its `StatusComponent` rows.

A component shows one service, or every service with a tag as one aggregated row. Admins manage both
in the Django admin (`dashboard/admin.py`); `dashboard/statuspage.py` reads them for the public page.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from monitor import validation
from monitor.models import Service


class StatusPage(models.Model):
    """A public page at /status/<slug>/: by default it shows names and statuses only, no hosts and no reasons."""

    slug = models.SlugField(
        max_length=60, unique=True, help_text="The page's stable address: /status/<slug>/ and /status/<slug>.json."
    )
    title = models.CharField(max_length=120)
    description = models.TextField(blank=True, help_text="Plain text shown under the title.")
    public = models.BooleanField(
        default=True, help_text="Off: the page answers 404 to everyone who may not see services in the dashboard."
    )
    show_hosts = models.BooleanField(
        default=False, help_text="Show each incident's host and location. Off keeps your infrastructure private."
    )
    show_reasons = models.BooleanField(
        default=False, help_text="Show why a probe failed (e.g. 'connection refused'). Off shows statuses only."
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class StatusComponent(models.Model):
    """One row of a status page: a service, or every service with `tag` (shown as one row, the worst of them)."""

    page = models.ForeignKey(StatusPage, on_delete=models.CASCADE, related_name="components")
    name = models.CharField(
        max_length=100, blank=True, help_text="The public name; empty means the service's name (or the tag)."
    )
    group = models.CharField(
        max_length=100, blank=True, help_text="Components with the same group are shown together under it."
    )
    position = models.PositiveIntegerField(default=0, help_text="Lower comes first.")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    tag = models.CharField(
        max_length=validation.MAX_TAG_LENGTH, blank=True, help_text="Every service with this tag, as one row."
    )

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            # The same rule as clean(), for writes that skip it (shell, bulk_create).
            models.CheckConstraint(
                condition=(models.Q(service__isnull=False) & models.Q(tag=""))
                | (models.Q(service__isnull=True) & ~models.Q(tag="")),
                name="component_service_xor_tag",
            ),
        ]

    def __str__(self) -> str:
        return self.public_name

    @property
    def public_name(self) -> str:
        if self.name:
            return self.name
        if self.service_id is not None:
            return self.service.name
        return self.tag

    def clean(self) -> None:
        """Check that exactly one of service and tag is set; store the tag as services store theirs."""
        if self.tag:
            try:
                self.tag = validation.normalise_tags(self.tag, what="Tag")
            except ValidationError as error:
                raise ValidationError({"tag": error.messages}) from None
            if "," in self.tag:
                raise ValidationError({"tag": f"Tag must be a single tag, not {self.tag!r}."})
        if self.service_id is not None and self.tag:
            raise ValidationError({"tag": "Choose a service or a tag, not both."})
        if self.service_id is None and not self.tag:
            raise ValidationError({"service": "Choose a service, or give a tag to show every service with it."})
