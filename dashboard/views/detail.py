"""The service detail page (`service_detail`, with `?fragment=status|results` for live refresh) and `check_now`.

"Check now" probes the service at once through the engine and shows the result; it saves nothing
(no result row, no state change): the schedule stays the only writer of history.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard import badges, charts, checks, detail, exposure
from dashboard.access import MANUAL_PROBE_WINDOW, MANUAL_PROBES_PER_WINDOW, allow, editor_required, viewer_required
from dashboard.views.maintenance import badge as maintenance_badge
from monitor.alerting.maintenance import covering
from monitor.models import Service
from monitor.probes import Result

REFRESH_EVERY = 15  # seconds between live refreshes of the status and the latest results
FRAGMENTS = {"status": "dashboard/detail_status.html", "results": "dashboard/detail_results.html"}
BADGE_KINDS = (("status", "Status"), ("uptime", "Uptime"), ("latency", "Latency"))
PHASE_ROWS = (*charts.PHASE_LABELS.items(), ("total", "Total"))
TOO_MANY = (
    f"Too many manual checks: at most {MANUAL_PROBES_PER_WINDOW} every {MANUAL_PROBE_WINDOW} seconds "
    "(they make the server connect out). Try again in a minute."
)


@viewer_required
def service_detail(request: HttpRequest, service_id: int) -> HttpResponse:
    service = get_object_or_404(Service, pk=service_id)
    now = timezone.now()
    fragment = request.GET.get("fragment")
    if fragment == "status":
        return render(request, FRAGMENTS[fragment], _status(request, service))
    if fragment == "results":
        return render(request, FRAGMENTS[fragment], _results(request, service, now))
    return render(request, "dashboard/detail.html", _page(request, service, now))


@editor_required
@require_POST
def check_now(request: HttpRequest, service_id: int) -> HttpResponse:
    service = get_object_or_404(Service, pk=service_id)
    if allow(request):
        context, status = {"check": _check(service, checks.probe_service(service))}, 200
    else:
        context, status = {"check": {"error": TOO_MANY}}, 429
    if request.headers.get("X-Requested-With") == "fetch":
        return render(request, "dashboard/check_result.html", context, status=status)
    return render(request, "dashboard/detail.html", _page(request, service, timezone.now()) | context, status=status)


def _check(service: Service, result: Result) -> dict[str, Any]:
    now = timezone.now()
    greeting, truncated = detail.greeting_text(service.protocol, result.banner, result.details)
    return {
        "result": result,
        "at": now,
        "phases": [(label, getattr(result.phases, name)) for name, label in PHASE_ROWS],
        "certificate": detail.certificate(result.tls.to_dict(), now) if result.tls else None,
        "greeting": greeting,
        "truncated": truncated,
        "greeting_limit": detail.MAX_GREETING_BYTES,
    }


def _refresh_url(request: HttpRequest, service: Service, fragment: str) -> str:
    """Return the detail page's URL with `?fragment=` added to the current query (range and all)."""
    query: QueryDict = request.GET.copy()
    query["fragment"] = fragment
    return f"{reverse('service', args=[service.id])}?{query.urlencode()}"


def _status(request: HttpRequest, service: Service) -> dict[str, Any]:
    states = detail.states(service)
    status, since = detail.overall(states)
    return {
        "service": service,
        "states": states,
        "status": status,
        "since": since,
        "locations": detail.location_rows(service, states),
        "maintenance": maintenance_badge(*held) if (held := covering(service, timezone.now())) else "",
        "refresh_status": _refresh_url(request, service, "status"),
        "refresh_every": REFRESH_EVERY,
    }


def _results(request: HttpRequest, service: Service, now: dt.datetime) -> dict[str, Any]:
    return {
        "service": service,
        "results": detail.recent_results(service, now),
        "refresh_results": _refresh_url(request, service, "results"),
        "refresh_every": REFRESH_EVERY,
    }


def _page(request: HttpRequest, service: Service, now: dt.datetime) -> dict[str, Any]:
    """Return everything the full page shows: a fixed number of queries whatever the history."""
    context = _status(request, service) | _results(request, service, now)
    states = context["states"]
    key = request.GET.get("range")
    key = key if key in detail.RANGES else detail.DEFAULT_RANGE
    series = detail.latency_series(service, key, now)
    table = detail.latency_table(service, [row.location for row in context["locations"]], now)
    buckets, days = detail.timeline(service, now), detail.daily_row(service, now)
    return context | {
        "nav": "overview",
        "port": _port(service),
        "range": key,
        "ranges": [(option, label, _range_url(service, option)) for option, label in detail.RANGE_LABELS.items()],
        "range_label": detail.RANGE_LABELS[key],
        "series": series,
        "chart": charts.latency_chart(series.points, series.start, series.end, series.step),
        "summaries": _summaries(table),
        "timeline_svg": charts.bars_svg(charts.timeline_bars(buckets)),
        "timeline_summary": charts.row_summary(buckets, "quarter-hours"),
        "timeline_start": buckets[0].start,
        "days_svg": charts.bars_svg(charts.daily_bars(days)),
        "days_summary": charts.row_summary(days, "days"),
        "days_start": days[0].start,
        "days_end": days[-1].start,
        "certificates": detail.certificates(states, now),
        "greetings": detail.greetings(service.protocol, states, context["results"]),
        "greeting_limit": detail.MAX_GREETING_BYTES,
        "exposure": exposure.panel(service),
        "incidents": detail.incidents(service),
        "alerts": detail.alerts(service),
        "problem": detail.open_problem(service),
        "badges": _badges(request, service),
        "next": reverse("service", args=[service.id]),
    }


def _range_url(service: Service, key: str) -> str:
    return f"{reverse('service', args=[service.id])}?range={key}#latency"


def _summaries(table: dict[str, list[detail.SummaryRow]]) -> list[tuple[str, list]]:
    """Return [(location, [(range label, {min, avg, p95, max})])]: one small table per location."""
    keys = list(detail.RANGE_LABELS)
    by_location = zip(*(table[key] for key in keys), strict=True)  # each range lists the locations in one order
    return [
        (rows[0].location, [(detail.RANGE_LABELS[key], row.total) for key, row in zip(keys, rows, strict=True)])
        for rows in by_location
    ]


def _port(service: Service) -> int | None:
    try:
        return service.effective_port()
    except ValueError:  # no port and no standard one: the page still shows the rest
        return None


def _badges(request: HttpRequest, service: Service) -> list[dict[str, str]]:
    token = badges.token_for(service.id)
    name = service.name.replace("[", "").replace("]", "")  # brackets would end the Markdown alt text
    found = []
    for kind, label in BADGE_KINDS:
        url = request.build_absolute_uri(reverse("badge", args=[token, kind]))
        found.append({"kind": kind, "label": label, "url": url, "markdown": f"![{name} {kind}]({url})"})
    return found
