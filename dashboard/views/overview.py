"""The Overview page (`overview`): one row per service, with the fleet's counts by status, filters, sort and pages.

`?fragment=rows` returns only the rows region and `?fragment=summary` only the summary line, with
the same filters, sort and page, for the live refresh.
"""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from dashboard import overview as reader
from dashboard.access import viewer_required
from dashboard.templatetags.portwatch import status_label
from monitor.models.service import PROTOCOL_CHOICES

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
        "protocol_choices": PROTOCOL_CHOICES,
        "next_url": request.get_full_path(),
    }
    return render(request, "dashboard/overview.html", context)


def _summary_context(request: HttpRequest) -> dict:
    counts = reader.summary()
    base = reverse("overview")
    return {
        "summary": [(status, f"{n:,} {status}", f"{base}?status={status}") for status, n in counts.items()],
        "summary_url": _url(request, fragment="summary"),
    }


def _rows_context(request: HttpRequest, filters: reader.Filters) -> dict:
    paginator = Paginator(reader.services(filters), reader.page_size())
    page = paginator.get_page(request.GET.get("page"))
    return {
        "page": page,
        "rows": reader.rows(list(page), timezone.now()),
        "showing": _showing(page),
        "rows_url": _url(request, fragment="rows"),
        "previous_url": _url(request, page=page.previous_page_number()) if page.has_previous() else "",
        "next_page_url": _url(request, page=page.next_page_number()) if page.has_next() else "",
        "sorts": _sort_links(request, filters.sort),
    }


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
