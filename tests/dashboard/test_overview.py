"""The Overview page: a row per service, worst status of its locations, filters, sorts, pages, roles, escaping, cost."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.overview import Filters, services
from dashboard.templatetags.portwatch import DASH
from monitor import readers
from monitor.daemon import snapshots
from monitor.daemon.recording import pause
from monitor.daemon.rollups import update_rollups
from monitor.models import Service, UptimeSnapshot
from monitor.probes import Failure, Phases, Result, Status
from tests.dashboard.conftest import DOWN, UP, make_service, probes, tls_facts

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_REASON = "<img src=x onerror=alert(1)>"
WARNING = Result(Status.WARNING, Failure.TLS_EXPIRING, "expires soon", Phases(total=0.02), tls=tls_facts(5))
MISSED = Result(Status.UNKNOWN, Failure.MISSED, "no worker took the slot", Phases())


def page(client, **query) -> str:
    response = client.get("/", query)
    assert response.status_code == 200
    return response.content.decode()


def names_in(html: str) -> list[str]:
    """Return the service names of the rows, in order."""
    return re.findall(r'<a href="/services/\d+/">([^<]*)</a>', html)


def region(html: str, element_id: str) -> str:
    """Return the HTML from the element with `element_id` to the end of the document."""
    return html[html.index(f'id="{element_id}"') :]


# --- Roles -------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/login/?next=/")


def test_a_signed_in_user_without_a_role_is_refused(nobody):
    assert nobody.get("/").status_code == 403


@pytest.mark.parametrize("role", ["viewer", "editor", "admin_client_"])
def test_every_role_sees_the_overview(role, request):
    make_service("mail")
    assert names_in(page(request.getfixturevalue(role))) == ["mail"]


# --- Rows --------------------------------------------------------------------------------------


def test_a_service_probed_from_several_locations_has_one_row_with_the_worst_status(viewer):
    service = make_service("mail", locations="eu,us")
    probes(service, [UP], location="eu")
    probes(service, [DOWN, DOWN], location="us")
    html = page(viewer)
    assert names_in(html) == ["mail"]
    assert "status-down" in region(html, "services")
    assert "eu (Up), us (Down)" in html


def test_a_service_is_paused_only_when_all_its_locations_are(viewer):
    service = make_service("mail", locations="eu,us")
    probes(service, [UP], location="eu")
    probes(service, [UP], location="us")
    pause({(service.id, "eu")}, "location removed")
    assert "status-up" in region(page(viewer), "services")
    pause({(service.id, "us")}, "location removed")
    assert "status-paused" in region(page(viewer), "services")


def test_a_row_shows_the_current_latency_in_ms(viewer):
    probes(make_service("mail"), [UP])  # total 0.015 s
    assert "15 ms" in page(viewer)


def test_a_row_links_to_the_services_page_and_shows_protocol_and_address(viewer):
    service = make_service("mail", host="mail.example.com", port=587)
    html = page(viewer)
    assert f'href="/services/{service.id}/"' in html
    assert "SMTP mail.example.com:587" in html


def test_a_certificate_expiring_within_14_days_is_flagged_in_words(viewer):
    probes(make_service("mail"), [WARNING])
    assert "5 d (expires soon)" in page(viewer)


def test_an_expired_certificate_is_flagged_as_expired(viewer):
    expired = Result(Status.DOWN, Failure.TLS_EXPIRED, "certificate has expired", Phases(total=0.02), tls=tls_facts(-3))
    probes(make_service("mail"), [expired])
    assert "<strong>⚠ expired 3 d ago</strong>" in page(viewer)


def test_a_service_without_tls_shows_a_dash_for_its_certificate(viewer):
    probes(make_service("mail"), [UP])
    html = page(viewer)
    assert "expires soon" not in html
    assert re.search(rf'<td class="num">{DASH}</td>\s*<td>[^<]* ago', html)


def test_missed_checks_of_the_last_24_hours_are_counted(viewer):
    probes(make_service("mail"), [UP, MISSED, MISSED, MISSED, UP])
    assert "3 missed" in page(viewer)


def test_uptime_with_incomplete_coverage_says_how_much_was_measured(viewer):
    probes(make_service("mail"), [UP, MISSED, UP, UP])
    assert 'title="75.00 % of the slots measured">100 %' in page(viewer)


def test_uptime_without_any_result_is_a_dash(viewer):
    make_service("mail")
    html = page(viewer)
    assert "100 %" not in html and html.count(f'<td class="num">{DASH}</td>') >= 3


def test_uptime_comes_from_the_snapshot_and_says_when_it_was_taken(viewer):
    service = make_service("mail")
    now = dt.datetime.now(dt.UTC)
    probes(service, [UP, UP, DOWN, UP], until=now - 4 * dt.timedelta(seconds=service.interval))
    snapshots.refresh()
    as_of = UptimeSnapshot.objects.get().computed_at
    probes(service, [DOWN, DOWN, DOWN, DOWN], until=now)
    html = page(viewer)
    assert "75.00 %" in html  # 3 of 4 as of the snapshot, not 3 of 8
    assert f"as of {as_of:%H:%M:%S} UTC" in html
    UptimeSnapshot.objects.update(computed_at=as_of - readers.SNAPSHOT_MAX_AGE)  # stale: read live instead
    assert "37.50 %" in page(viewer)


def test_the_sparkline_draws_one_point_per_rolled_up_hour(viewer):
    service = make_service("mail")
    now = dt.datetime.now(dt.UTC)
    # Both probes of each pair land mid-hour: near the top of an hour they used to straddle two hours.
    half_past = now.replace(minute=30, second=0, microsecond=0) - dt.timedelta(hours=1)
    for hours_ago in (4, 3, 2):
        probes(service, [UP, UP], until=half_past - dt.timedelta(hours=hours_ago))
    update_rollups(now)
    html = page(viewer)
    points = re.search(
        r'<svg class="spark"[^>]*><title>Latency over the last 24 h[^<]*</title><polyline points="([^"]*)"', html
    )
    assert points and len(points.group(1).split()) == 3


# --- Summary -----------------------------------------------------------------------------------


def test_the_summary_counts_the_whole_fleet_by_status_not_just_the_page(viewer, settings):
    settings.PORTWATCH_OVERVIEW_PAGE_SIZE = 1
    probes(make_service("a"), [UP])
    probes(make_service("b"), [UP])
    probes(make_service("c"), [DOWN, DOWN])
    make_service("d", enabled=False)
    summary = region(page(viewer), "summary").split("</p>")[0]
    for text in ("2 up", "0 warning", "1 down", "0 unknown", "1 paused"):
        assert text in summary


def test_each_summary_count_links_to_its_status_filter(viewer):
    make_service("a")
    assert 'href="/?status=down"' in region(page(viewer), "summary").split("</p>")[0]


def test_the_summary_fragment_is_the_summary_alone(viewer):
    make_service("a")
    html = page(viewer, fragment="summary")
    assert html.startswith('<p id="summary"') and "1 unknown" in html


# --- Filters -----------------------------------------------------------------------------------


@pytest.fixture
def fleet() -> None:
    """Three services: mail (smtp, up, tag prod, at eu), imap (down, tags prod-eu and mail), web (http, unknown)."""
    probes(make_service("mail", tags="prod", locations="eu"), [UP], location="eu")
    probes(
        make_service(
            "imap", host="imap.example.com", port=993, protocol="imap", tls_mode="implicit", tags="prod-eu,mail"
        ),
        [DOWN, DOWN],
    )
    make_service("web", host="web.example.com", port=80, protocol="http")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "down"}, ["imap"]),
        ({"status": "unknown"}, ["web"]),
        ({"protocol": "http"}, ["web"]),
        ({"tag": "prod"}, ["mail"]),  # a whole tag, not a part of "prod-eu"
        ({"tag": "MAIL"}, ["imap"]),
        ({"location": "eu"}, ["mail"]),
        ({"location": "default"}, ["imap", "web"]),  # no location set means the default one
        ({"q": "EXAMPLE"}, ["imap", "web"]),  # host
        ({"q": "mai"}, ["mail"]),  # name
    ],
)
def test_filters_narrow_the_rows(viewer, fleet, query, expected):
    assert sorted(names_in(page(viewer, **query, sort="name"))) == expected


def test_the_paused_filter_includes_disabled_services_that_were_never_probed(viewer, fleet):
    make_service("retired", enabled=False)
    assert names_in(page(viewer, status="paused")) == ["retired"]


def test_a_filter_that_matches_nothing_says_so_and_offers_to_clear_it(viewer, fleet):
    html = page(viewer, q="nothing-like-this")
    assert "No service matches these filters" in html
    assert '<a href="/">Clear the filters</a>' in html


def test_without_any_service_editors_are_offered_to_add_one(editor):
    assert 'href="/services/new"' in region(page(editor), "services")


def test_the_filter_form_labels_its_inputs(viewer):
    html = page(viewer)
    for name in ("status", "protocol", "tag", "location", "q"):
        assert f'<label for="filter-{name}">' in html and f'id="filter-{name}" name="{name}"' in html


def test_the_protocol_filter_lists_every_protocol_of_the_engine(viewer):
    from monitor.probes import PROTOCOLS

    html = page(viewer)
    for key in PROTOCOLS:
        assert f'<option value="{key}">' in html


# --- Sorting -----------------------------------------------------------------------------------


def test_the_default_order_is_by_name(viewer, fleet):
    assert names_in(page(viewer)) == ["imap", "mail", "web"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["imap", "mail", "web"]),
        ("-name", ["web", "mail", "imap"]),
        ("status", ["imap", "web", "mail"]),  # the worst first
        ("-status", ["mail", "web", "imap"]),
        ("latency", ["imap", "mail", "web"]),  # 1 ms, 15 ms, never measured last
        ("-latency", ["mail", "imap", "web"]),
    ],
)
def test_sorting_orders_the_rows(viewer, fleet, sort, expected):
    assert names_in(page(viewer, sort=sort)) == expected


def test_sorting_by_latency_ignores_paused_locations(viewer):
    probes(make_service("steady"), [Result(Status.UP, None, "ok", Phases(total=0.05), tls=None)])
    moved = make_service("moved", locations="eu,us")
    probes(moved, [Result(Status.UP, None, "ok", Phases(total=0.9), tls=None)], location="eu")
    probes(moved, [Result(Status.UP, None, "ok", Phases(total=0.01), tls=None)], location="us")
    pause({(moved.id, "eu")}, "location removed")
    assert names_in(page(viewer, sort="-latency")) == ["steady", "moved"]


def test_sorting_by_certificate_puts_the_fewest_days_first_and_services_without_tls_last(viewer):
    probes(make_service("plain"), [UP])
    probes(make_service("later"), [Result(Status.UP, None, "ok", Phases(total=0.01), tls=tls_facts(90))])
    probes(make_service("sooner"), [WARNING])
    assert names_in(page(viewer, sort="cert")) == ["sooner", "later", "plain"]


def test_sorting_by_last_check_puts_the_stalest_first(viewer):
    now = dt.datetime.now(dt.UTC)
    probes(make_service("fresh"), [UP], until=now)
    probes(make_service("stale"), [UP], until=now - dt.timedelta(hours=2))
    assert names_in(page(viewer, sort="last_check")) == ["stale", "fresh"]


def test_sorting_by_since_puts_the_longest_in_its_status_first(viewer):
    now = dt.datetime.now(dt.UTC)
    probes(make_service("recent"), [UP], until=now)
    probes(make_service("old"), [UP], until=now - dt.timedelta(hours=2))
    assert names_in(page(viewer, sort="since")) == ["old", "recent"]


def test_a_sorted_column_header_links_to_the_reverse_order(viewer, fleet):
    html = page(viewer, sort="name")
    assert re.search(r'<th scope="col" aria-sort="ascending"><a href="/\?sort=-name">Service', html)


def test_sort_and_filter_happen_in_sql_and_agree_with_the_rows(fleet):
    ordered = services(Filters.from_query({"sort": "-status", "tag": "prod"}))
    assert [service.name for service in ordered] == ["mail"]


# --- Pages -------------------------------------------------------------------------------------


@pytest.fixture
def five(settings) -> None:
    settings.PORTWATCH_OVERVIEW_PAGE_SIZE = 2
    for name in "abcde":
        make_service(name, tags="prod")


def test_pages_show_which_rows_of_how_many(viewer, five):
    assert "Showing 3\u20134 of 5" in page(viewer, page=2, sort="name")


def test_page_links_keep_the_filters_and_sort(viewer, five):
    html = page(viewer, page=2, sort="name", tag="prod")
    assert 'href="/?sort=name&amp;tag=prod&amp;page=1" rel="prev"' in html
    assert 'href="/?sort=name&amp;tag=prod&amp;page=3" rel="next"' in html


def test_the_rows_fragment_is_the_refreshing_region_alone_with_the_same_query(viewer, five):
    html = page(viewer, fragment="rows", page=2, sort="name")
    assert html.startswith('<div id="services" data-refresh="/?page=2&amp;sort=name&amp;fragment=rows" data-every="15"')
    assert names_in(html) == ["c", "d"]


# --- Bulk selection ----------------------------------------------------------------------------


def test_editors_get_a_labelled_checkbox_per_row_tied_to_the_bulk_form(editor):
    service = make_service("mail")
    html = page(editor)
    assert f'name="service" value="{service.id}" form="bulk" aria-label="Select mail"' in html
    assert 'data-select-all="service"' in html
    form = region(html, "bulk").split("</form>")[0]
    assert 'action="/services/bulk"' in form and 'name="csrfmiddlewaretoken"' in form
    assert 'name="next" value="/"' in form and 'name="tag"' in form
    assert all(f'<option value="{action}">' in form for action in ("pause", "resume", "tag", "untag"))


def test_viewers_get_no_checkboxes_and_no_bulk_form(viewer):
    make_service("mail")
    html = page(viewer)
    assert 'name="service"' not in html and 'id="bulk"' not in html


# --- Escaping ----------------------------------------------------------------------------------


def test_a_hostile_service_name_and_reason_are_escaped(viewer):
    hostile = Result(Status.DOWN, Failure.REFUSED, HOSTILE_REASON, Phases(total=0.001))
    probes(make_service(HOSTILE_NAME), [hostile, hostile])
    html = page(viewer)
    assert HOSTILE_NAME not in html and HOSTILE_REASON not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


# --- Cost --------------------------------------------------------------------------------------


def queries_for(client, count: int) -> int:
    now = dt.datetime.now(dt.UTC)
    for index in range(count):
        service = make_service(f"s{count}-{index:03}", locations="eu,us")
        probes(service, [UP, DOWN, UP], until=now - dt.timedelta(hours=2), location="eu")
        probes(service, [WARNING, UP], location="us")
    update_rollups(now)
    with CaptureQueriesContext(connection) as queries:
        page(client)
    Service.objects.all().delete()
    return len(queries)


def test_the_page_takes_as_many_queries_for_3_services_as_for_60(editor):
    assert queries_for(editor, 3) == queries_for(editor, 60)
