"""The Overview page (`overview`): one row per service, with the fleet's counts by status, filters, sort and pages.

`?fragment=rows` returns only the rows region and `?fragment=summary` only the summary line, with
the same filters, sort and page, for the live refresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from dashboard import exposure
from dashboard import overview as reader
from dashboard.access import viewer_required
from dashboard.templatetags.portwatch import DASH, ago, days, ms, percent, span, status_badge, status_label
from dashboard.views.maintenance import badge as maintenance_badge
from monitor.probes.protocols import choices as protocol_choices
from monitor.readers import Uptime

REFRESH_EVERY = 15  # seconds


@viewer_required
def overview(request: HttpRequest) -> HttpResponse:
    filters = reader.Filters.from_query(request.GET)
    fragment = request.GET.get("fragment")
    context: dict = {"nav": "overview", "filters": filters, "refresh_every": REFRESH_EVERY}
    if fragment != "rows":
        context |= _summary_context(request)
        if fragment == "summary":
            return render(request, "dashboard/overview_summary.html", context)
    context |= _rows_context(request, filters)
    if fragment == "rows":
        return render(request, "dashboard/overview_rows.html", context)
    context |= {
        "status_choices": [(status, status_label(status)) for status in reader.STATUSES],
        "protocol_choices": protocol_choices(),
        "next_url": request.get_full_path(),
        "broken_channels": reader.broken_channels(timezone.now()),
        "exposure_links": exposure.overview_links(reader.exposure_counts()),
        "exposure_choices": list(exposure.FILTER_LABELS.items()),
    }
    return render(request, "dashboard/overview.html", context)


def _summary_context(request: HttpRequest) -> dict:
    counts = reader.summary()
    base = reverse("overview")
    return {
        "summary": [(status, f"{n:,} {status}", f"{base}?status={status}") for status, n in counts.items()],
        "summary_url": _url(request, fragment="summary"),
    }


class _Pages(Paginator):
    """Count the matching services without the sort: a sort joining and grouping the states made the count do so too."""

    def __init__(self, filters: reader.Filters) -> None:
        super().__init__(reader.services(filters), reader.page_size())
        self.filters = filters

    @cached_property
    def count(self) -> int:
        return reader.matching(self.filters).count()


def _rows_context(request: HttpRequest, filters: reader.Filters) -> dict:
    paginator = _Pages(filters)
    page = paginator.get_page(request.GET.get("page"))
    rows = reader.rows(list(page), timezone.now())
    return {
        "page": page,
        "rows": [_line(row) for row in rows],
        "uptimes_as_of": _as_of(rows),
        "showing": _showing(page),
        "rows_url": _url(request, fragment="rows"),
        "previous_url": _url(request, page=page.previous_page_number()) if page.has_previous() else "",
        "next_page_url": _url(request, page=page.next_page_number()) if page.has_next() else "",
        "sorts": _sort_links(request, filters.sort),
    }


@dataclass(frozen=True)
class Line:
    """A row as the table shows it: every cell's text computed here, once.

    The template used to format each cell through filters and tags (some 40 variable lookups a
    row, ~20 ms of a 50-row page); now it only prints these. Text is escaped by the template as
    before; the cells holding markup are built with `format_html`, which escapes what they hold.
    """

    id: int
    name: str
    url: str
    kind: str  # "SMTP mail.example.net:25"
    sources: str  # "eu-west (Up), us-east (Down)"; a single location without its status
    status: SafeString
    reason: str
    since: str
    latency: str
    spark: reader.Spark | None
    uptimes: list[str]  # 24 h, 7 d, 30 d
    cert: str
    last_check: str
    missed: int
    maintenance: SafeString | str = ""  # the "Maintenance" pill while a window holds the service


def _line(row: reader.Row) -> Line:
    now = timezone.now()
    several = len(row.locations) > 1
    return Line(
        id=row.service.id,
        name=row.service.name,
        url=reverse("service", args=[row.service.id]),
        kind=f"{row.service.protocol.upper()} {row.address}",
        sources=", ".join(f"{name} ({status_label(status)})" if several else name for name, status in row.locations),
        status=status_badge(row.status),
        reason=Truncator(row.reason).chars(120) if row.reason else "",
        since="" if row.since is None else span((now - row.since).total_seconds()),
        latency=ms(row.latency),
        spark=row.spark,
        uptimes=[_uptime(counted) for counted in row.uptimes],
        cert=_cert(row),
        last_check=ago(row.last_checked_at),
        missed=row.missed,
        maintenance=maintenance_badge(*row.maintenance) if row.maintenance else "",
    )


def _as_of(rows: list[reader.Row]) -> str:
    """Say how fresh the uptime columns are: they come from snapshots refreshed every ten minutes."""
    moments = [row.uptimes_as_of for row in rows if row.uptimes_as_of]
    if not moments:
        return ""
    return f"Uptime over the last 24 hours, 7 days and 30 days, as of {min(moments):%H:%M:%S} UTC"


def _uptime(counted: Uptime) -> str:
    if counted.uptime is None:
        return DASH
    if counted.coverage < 1:
        return format_html(
            '<abbr title="{} of the slots measured">{}</abbr>', percent(counted.coverage), percent(counted.uptime)
        )
    return percent(counted.uptime)


def _cert(row: reader.Row) -> str:
    if not row.cert_soon:
        return days(row.cert_days)
    return format_html("<strong>⚠ {}{}</strong>", days(row.cert_days), " (expires soon)" if row.cert_days >= 0 else "")


def _showing(page: Page) -> str:
    """Return "51-100 of 10,000" (with an en dash)."""
    return f"{page.start_index():,}\u2013{page.end_index():,} of {page.paginator.count:,}"


def _sort_links(request: HttpRequest, current: str) -> dict[str, dict[str, str]]:
    """Return, per sort key, the header link (a second click reverses) and its aria-sort and arrow when active."""
    links = {}
    for key in reader.SORTS:
        active = current.removeprefix("-") == key
        descending = current.startswith("-")
        links[key] = {
            "url": _url(request, sort=f"-{key}" if active and not descending else key, page=None),
            "aria": ("descending" if descending else "ascending") if active else "",
            "arrow": ("▼" if descending else "▲") if active else "",
        }
    return links


def query_url(request: HttpRequest, view: str, **changes: str | int | None) -> str:
    """Return `view`'s URL with the request's query but `changes` (None removes a key); a fragment only if asked."""
    query: QueryDict = request.GET.copy()
    query.pop("fragment", None)
    for key, value in changes.items():
        query.pop(key, None)
        if value is not None:
            query[key] = str(value)
    encoded = query.urlencode()
    return f"{reverse(view)}?{encoded}" if encoded else reverse(view)


def _url(request: HttpRequest, **changes: str | int | None) -> str:
    return query_url(request, "overview", **changes)
