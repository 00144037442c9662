"""The Incidents page (`incidents`): open incidents first, then resolved ones newest first, 50 per page.

Incidents are kept per (service, location); a row here is one outage of one service: the open
incidents of a service on the page make one row, and its resolved ones that overlap in time make
one row, each listing the locations that saw it. `?fragment=open` returns only the open rows, for
the live refresh. Filters: `?state=open|resolved`, `?service=<id>`, `?q=` (service name or reason).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.paginator import Paginator
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dashboard.access import viewer_required
from dashboard.views.overview import query_url
from monitor.models import Incident, Service

PAGE_SIZE = 50
REFRESH_EVERY = 15  # seconds
STATES = ("open", "resolved")
MAX_FILTER_LENGTH = 100


@dataclass
class Outage:
    """One row: incidents of one service, at one or more locations, that overlap in time."""

    service: Service
    started_at: dt.datetime
    ended_at: dt.datetime | None
    locations: list[str] = field(default_factory=list)
    causes: list[tuple[str, str]] = field(default_factory=list)  # (failure kind, reason), distinct
    end_reasons: list[str] = field(default_factory=list)
    duration: dt.timedelta = dt.timedelta(0)

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def add(self, incident: Incident) -> None:
        self.started_at = min(self.started_at, incident.started_at)
        if self.ended_at is not None and incident.ended_at is not None:
            self.ended_at = max(self.ended_at, incident.ended_at)
        for items, item in (
            (self.locations, incident.location),
            (self.causes, (incident.failure, incident.reason)),
            (self.end_reasons, incident.end_reason),
        ):
            if item and item not in items:
                items.append(item)


@viewer_required
def incidents(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    state = state if state in STATES else ""
    service_id = _int(request.GET.get("service"))
    q = (request.GET.get("q") or "").strip()[:MAX_FILTER_LENGTH]
    paginator = Paginator(_incidents(state, service_id, q), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    now = timezone.now()
    found = list(page)
    context = {
        "nav": "incidents",
        "page": page,
        "open_rows": _outages([incident for incident in found if incident.ended_at is None], now),
        "past_rows": _outages([incident for incident in found if incident.ended_at is not None], now),
        "state": state,
        "q": q,
        "filtered": bool(state or service_id or q),
        "open_url": _url(request, fragment="open"),
        "refresh_every": REFRESH_EVERY,
    }
    if request.GET.get("fragment") == "open":
        return render(request, "dashboard/incidents_open.html", context)
    context |= {
        "service": Service.objects.filter(pk=service_id).only("id", "name").first() if service_id else None,
        "service_id": service_id,
        "showing": f"{page.start_index():,}\u2013{page.end_index():,} of {paginator.count:,}",
        "previous_url": _url(request, page=page.previous_page_number()) if page.has_previous() else "",
        "next_page_url": _url(request, page=page.next_page_number()) if page.has_next() else "",
        "all_services_url": _url(request, service=None, page=None),
    }
    return render(request, "dashboard/incidents.html", context)


def _incidents(state: str, service_id: int | None, q: str) -> QuerySet[Incident]:
    """Return the incidents asked for: open first (newest first), then resolved, the latest to end first."""
    found = Incident.objects.select_related("service").only(
        "service__id", "service__name", "location", "started_at", "ended_at", "failure", "reason", "end_reason"
    )
    if state:
        found = found.filter(ended_at__isnull=state == "open")
    if service_id is not None:
        found = found.filter(service_id=service_id)
    if q:
        found = found.filter(Q(service__name__icontains=q) | Q(reason__icontains=q))
    return found.order_by(F("ended_at").desc(nulls_first=True), "-started_at", "-id")


def _outages(found: Iterable[Incident], now: dt.datetime) -> list[Outage]:
    """Group one page's incidents into outages: by service, joining those whose times overlap.

    Open incidents all overlap (they run until now), so a service has at most one open row.
    Rows keep the page's order: open ones by latest start, resolved ones by latest end.
    """
    by_service: dict[int, list[Incident]] = defaultdict(list)
    for incident in found:
        by_service[incident.service_id].append(incident)
    outages: list[Outage] = []
    for group in by_service.values():
        current: Outage | None = None
        for incident in sorted(group, key=lambda incident: incident.started_at):
            end = current and (current.ended_at or now)
            if current is None or incident.started_at > end:
                current = Outage(incident.service, incident.started_at, incident.ended_at)
                outages.append(current)
            current.add(incident)
    for outage in outages:
        outage.locations.sort()
        outage.duration = (outage.ended_at or now) - outage.started_at
    return sorted(outages, key=lambda outage: (outage.ended_at or outage.started_at, outage.started_at), reverse=True)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _url(request: HttpRequest, **changes: str | int | None) -> str:
    return query_url(request, "incidents", **changes)
