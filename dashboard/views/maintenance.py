"""The Maintenance page (`maintenance`): what is in maintenance now and what will be in the next 7 days.

Also `badge(window, end)`, the "Maintenance" pill the overview rows and the service page show for a
service a window holds. Windows are edited in the admin; this page only reads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.access import viewer_required
from monitor.alerting import maintenance
from monitor.models import MaintenanceWindow

AHEAD = dt.timedelta(days=7)


def badge(window: MaintenanceWindow, end: dt.datetime) -> SafeString:
    """Return the pill naming the window and when it ends, in the window's own time zone (and UTC on hover)."""
    local = end.astimezone(maintenance.zone(window))
    # U+2692 (hammer and pick): Debian's DejaVu fonts draw it, unlike the emoji wrench.
    return format_html(
        '<span class="status status-paused maintenance"><span class="icon" aria-hidden="true">⚒</span> '
        'Maintenance: {} until <time datetime="{}" title="{} UTC">{}</time></span>',
        window.name,
        end.isoformat(),
        f"{end.astimezone(dt.UTC):%Y-%m-%d %H:%M}",
        f"{local:%Y-%m-%d %H:%M %Z}",
    )


@dataclass(frozen=True)
class Planned:
    """One occurrence as the page lists it."""

    window: MaintenanceWindow
    start: dt.datetime
    end: dt.datetime
    now: bool  # running at the moment
    services: list[str]  # the attached services' names

    # In the window's time zone, formatted here: the template's date filter would turn them into UTC.
    @property
    def local_start(self) -> str:
        return f"{self.start.astimezone(maintenance.zone(self.window)):%a %Y-%m-%d %H:%M}"

    @property
    def local_end(self) -> str:
        return f"{self.end.astimezone(maintenance.zone(self.window)):%a %Y-%m-%d %H:%M %Z}"


@viewer_required
def maintenance_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    planned = upcoming(now, now + AHEAD)
    return render(
        request,
        "dashboard/maintenance.html",
        {
            "nav": "maintenance",
            "current": [item for item in planned if item.now],
            "upcoming": [item for item in planned if not item.now],
            "ahead_days": AHEAD.days,
        },
    )


def upcoming(since: dt.datetime, until: dt.datetime) -> list[Planned]:
    """Return every occurrence of an enabled window overlapping [since, until), by start: two queries."""
    windows = MaintenanceWindow.objects.filter(enabled=True, starts_at__lt=until).prefetch_related("services")
    found = []
    for window in windows:
        names = sorted(service.name for service in window.services.all())
        for start, end in maintenance.occurrences(window, since, until):
            found.append(Planned(window, start, end, start <= since < end, names))
    return sorted(found, key=lambda item: (item.start, item.window.name))
