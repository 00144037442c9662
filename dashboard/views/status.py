"""The public views, without login: a status page, its JSON summary, and a service's SVG badges.

`status_page` renders /status/<slug>/ (its `?fragment=status` part alone for live refresh),
`status_json` the summary below, `badge` /badge/<token>/<kind>.svg. A page that is not public is
404 for everyone who may not see services in the dashboard (`roles.SEE`); badges are found by their
signed token only, so nobody can walk the service ids.

The JSON summary at /status/<slug>.json (`summary()`) is a stable interface; fields are only
ever added. Times are ISO 8601 in UTC, ratios are 0..1 (not percent), minutes may be fractional:

    {"page": {"slug", "title", "url"},
     "status": {"indicator": "none" | "minor" | "major" | "critical" | "maintenance", "description"},
     "components": [{"name", "group" ("" when none), "status": "up" | "warning" | "down" | "unknown" | "paused",
                     "uptime_90d": ratio | null,
                     "days": [{"date": "YYYY-MM-DD", "down_minutes": number | null (null: no data),
                               "uptime": ratio | null, "unmeasured": minutes}, ... 90, oldest first]}],
     "incidents": [{"name", "status": "investigating" | "resolved", "started_at", "resolved_at" | null,
                    "duration_seconds" (so far, while open), "components": [names],
                    "cause" (only with show_reasons), "host" and "location" (only with show_hosts)},
                   ... of the last 90 days, open ones first, then the newest, at most 50],
     "generated_at"}
"""

from __future__ import annotations

import datetime as dt

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from dashboard import badges, roles, statuspage
from dashboard.models import StatusPage
from monitor.models import Service

FRAGMENT = "status"  # the region that refreshes: overall status, components, incidents
REFRESH_SECONDS = 60  # the status region's refresh in the browser; beat re-reads the page every 30 s
BADGE_MAX_AGE = 60  # seconds; README renderers (GitHub's camo) and browsers may reuse a badge this long


def status_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Render a status page, or only its status region with ?fragment=status."""
    page = _visible_page(request, slug)
    query = request.GET.copy()
    query["fragment"] = FRAGMENT
    context = {
        "page": page,
        "status": statuspage.cached_read(page),
        "nav": "",
        "refresh_url": f"{request.path}?{query.urlencode()}",
        "refresh_seconds": REFRESH_SECONDS,
    }
    if request.GET.get("fragment") == FRAGMENT:
        return render(request, "dashboard/status_region.html", context)
    return render(request, "dashboard/status_page.html", context)


def status_json(request: HttpRequest, slug: str) -> JsonResponse:
    """Return the page's summary as JSON (schema in the module docstring)."""
    page = _visible_page(request, slug)
    url = request.build_absolute_uri(reverse("status_page", args=[page.slug]))
    return JsonResponse(summary(statuspage.cached_read(page), url), json_dumps_params={"ensure_ascii": False})


def badge(request: HttpRequest, token: str, kind: str) -> HttpResponse:
    """Return a service's status, uptime or latency badge as SVG; ?label= replaces the left text."""
    service_id = badges.service_id_from(token)
    if service_id is None or kind not in badges.KINDS:
        raise Http404("no such badge")
    fields = ("id", "name", "locations", "enabled")
    service = get_object_or_404(Service.objects.only(*fields), id=service_id)
    shown = badges.badge_for(service, kind)
    label = request.GET.get("label")
    if label:
        shown = badges.Badge(label, shown.value, shown.colour)
    response = HttpResponse(badges.render(shown), content_type="image/svg+xml")
    response["Cache-Control"] = f"max-age={BADGE_MAX_AGE}"
    return response


def _visible_page(request: HttpRequest, slug: str) -> StatusPage:
    page = get_object_or_404(StatusPage, slug=slug)
    if not page.public and not request.user.has_perm(roles.SEE):
        raise Http404("no such status page")  # 404, not 403: a private page's slug is not confirmed
    return page


def summary(status: statuspage.PageStatus, url: str) -> dict:
    """Return the page's JSON document (schema in the module docstring); `url` is the page's absolute address."""
    page = status.page
    return {
        "page": {"slug": page.slug, "title": page.title, "url": url},
        "status": {"indicator": status.overall.indicator, "description": status.overall.description},
        "components": [_component_json(component) for component in status.components],
        "incidents": [_incident_json(incident, page) for incident in status.incidents],
        "generated_at": _iso(status.generated_at),
    }


def _component_json(component: statuspage.Component) -> dict:
    return {
        "name": component.name,
        "group": component.group,
        "status": component.status,
        "uptime_90d": _round(component.uptime_90d, 6),
        "days": [
            {
                "date": day.date.isoformat(),
                "down_minutes": _round(day.down_minutes, 1),
                "uptime": _round(day.uptime, 6),
                "unmeasured": round(day.unmeasured_minutes, 1),
            }
            for day in component.days
        ],
    }


def _incident_json(incident: statuspage.PublicIncident, page: StatusPage) -> dict:
    data = {
        "name": incident.name,
        "status": "investigating" if incident.ongoing else "resolved",
        "started_at": _iso(incident.started_at),
        "resolved_at": _iso(incident.ended_at),
        "duration_seconds": round(incident.duration.total_seconds()),
        "components": list(incident.components),
    }
    if page.show_reasons:
        data["cause"] = incident.cause
    if page.show_hosts:
        data |= {"host": incident.host, "location": incident.location}
    return data


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
