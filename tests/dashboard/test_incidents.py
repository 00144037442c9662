"""The Incidents page: open first, outages grouped across locations, filters, pages, roles, escaping, queries."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitor.models import Incident, Service
from monitor.probes import Failure, Phases, Result, Status
from tests.dashboard.conftest import DOWN, UP, make_service, probes

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_REASON = "<img src=x onerror=alert(1)>"


def page(client, **query) -> str:
    response = client.get("/incidents/", query)
    assert response.status_code == 200
    return response.content.decode()


def incident(service: Service, location: str = "default", *, start: int, end: int | None = None, **fields) -> Incident:
    """Create an incident that started `start` minutes ago and ended `end` minutes ago (None: still open)."""
    now = dt.datetime.now(dt.UTC)
    return Incident.objects.create(
        service=service,
        location=location,
        started_at=now - dt.timedelta(minutes=start),
        ended_at=None if end is None else now - dt.timedelta(minutes=end),
        failure=fields.pop("failure", "refused"),
        reason=fields.pop("reason", "connection refused"),
        **fields,
    )


def rows_of(html: str, section: str) -> list[str]:
    """Return the rows of a section ("open-incidents" or "resolved-incidents") as text without tags."""
    start = html.find(f'id="{section}"')
    if start < 0:
        return []
    body = html[start : html.index("</section>", start)]
    return [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ][1:]


# --- Roles -------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get("/incidents/")
    assert (response.status_code, response["Location"]) == (302, "/login/?next=/incidents/")


def test_a_signed_in_user_without_a_role_is_refused(nobody):
    assert nobody.get("/incidents/").status_code == 403


@pytest.mark.parametrize("role", ["viewer", "editor", "admin_client_"])
def test_every_role_sees_the_incidents(role, request):
    incident(make_service("mail"), start=10)
    assert len(rows_of(page(request.getfixturevalue(role)), "open-incidents")) == 1


# --- What a row says ---------------------------------------------------------------------------


def test_an_outage_recorded_by_the_daemon_shows_as_open_with_its_cause(viewer):
    probes(make_service("mail"), [DOWN, DOWN])
    (row,) = rows_of(page(viewer), "open-incidents")
    assert row.startswith("mail ✖ Open") and "refused : connection refused" in row


def test_a_recovered_outage_shows_as_resolved_with_its_duration(viewer):
    probes(make_service("mail"), [DOWN, DOWN, UP])  # one minute apart: down from the first to the recovery
    (row,) = rows_of(page(viewer), "resolved-incidents")
    assert "Resolved" in row and " 2 min " in row


def test_an_open_incident_lasts_so_far(viewer):
    incident(make_service("mail"), start=90)
    (row,) = rows_of(page(viewer), "open-incidents")
    assert "1 h 30 min so far" in row


def test_why_an_incident_ended_is_shown(viewer):
    incident(make_service("mail"), start=30, end=20, end_reason="monitoring stopped: service disabled")
    (row,) = rows_of(page(viewer), "resolved-incidents")
    assert "Ended: monitoring stopped: service disabled" in row


def test_open_incidents_come_before_resolved_ones_which_are_newest_first(viewer):
    incident(make_service("older"), start=300, end=200)
    incident(make_service("newer"), start=100, end=50)
    incident(make_service("open"), start=400)
    html = page(viewer)
    assert html.index('id="open-incidents"') < html.index('id="resolved-incidents"')
    assert [row.split()[0] for row in rows_of(html, "resolved-incidents")] == ["newer", "older"]


# --- Grouping across locations -----------------------------------------------------------------


def test_open_incidents_of_one_service_at_several_locations_make_one_row_listing_them(viewer):
    service = make_service("mail", locations="eu,us")
    incident(service, "us", start=10)
    incident(service, "eu", start=12)
    (row,) = rows_of(page(viewer), "open-incidents")
    assert row.endswith("eu, us") and "12 min so far" in row


def test_overlapping_resolved_incidents_of_one_service_make_one_row_from_first_start_to_last_end(viewer):
    service = make_service("mail", locations="eu,us")
    incident(service, "eu", start=60, end=30)
    incident(service, "us", start=40, end=10)
    (row,) = rows_of(page(viewer), "resolved-incidents")
    assert row.endswith("eu, us") and " 50 min " in row


def test_resolved_incidents_apart_in_time_stay_apart(viewer):
    service = make_service("mail", locations="eu,us")
    incident(service, "eu", start=60, end=50)
    incident(service, "us", start=40, end=30)
    assert len(rows_of(page(viewer), "resolved-incidents")) == 2


def test_different_causes_at_different_locations_are_all_listed(viewer):
    service = make_service("mail", locations="eu,us")
    incident(service, "eu", start=10, failure="timeout", reason="timed out after 5 s")
    incident(service, "us", start=10)
    (row,) = rows_of(page(viewer), "open-incidents")
    assert "timeout : timed out after 5 s" in row and "refused : connection refused" in row


# --- Filters and pages -------------------------------------------------------------------------


@pytest.fixture
def both() -> tuple[Service, Service]:
    mail, web = make_service("mail"), make_service("web", protocol="http", port=80)
    incident(mail, start=10)
    incident(web, start=60, end=30, reason="503 Service Unavailable", failure="http_status")
    return mail, web


def test_the_open_filter_shows_open_incidents_only(viewer, both):
    html = page(viewer, state="open")
    assert len(rows_of(html, "open-incidents")) == 1 and 'id="resolved-incidents"' not in html


def test_the_resolved_filter_shows_resolved_incidents_only(viewer, both):
    html = page(viewer, state="resolved")
    assert len(rows_of(html, "resolved-incidents")) == 1 and 'id="open-incidents"' not in html


def test_the_service_filter_shows_that_services_incidents_and_names_it(viewer, both):
    html = page(viewer, service=both[1].id)
    assert rows_of(html, "open-incidents") == [] and len(rows_of(html, "resolved-incidents")) == 1
    assert f'Incidents of <a href="/services/{both[1].id}/">web</a>' in html


def test_the_text_filter_matches_the_reason(viewer, both):
    html = page(viewer, q="unavailable")
    assert rows_of(html, "open-incidents") == [] and len(rows_of(html, "resolved-incidents")) == 1


def test_a_filter_that_matches_nothing_says_so_and_offers_to_clear_it(viewer, both):
    html = page(viewer, q="nothing-like-this")
    assert "No incident matches these filters" in html and '<a href="/incidents/">Clear the filters</a>' in html


def test_pages_hold_50_incidents_and_link_to_the_next_keeping_the_filters(viewer):
    services = [make_service(f"s{index:02}") for index in range(51)]
    for index, service in enumerate(services):
        incident(service, start=1000 - index, end=900 - index)
    html = page(viewer, state="resolved")
    assert len(rows_of(html, "resolved-incidents")) == 50
    assert (
        "Showing 1\u201350 of 51 incidents" in html
        and 'href="/incidents/?state=resolved&amp;page=2" rel="next"' in html
    )


def test_the_open_fragment_is_the_refreshing_open_section_alone(viewer, both):
    html = page(viewer, fragment="open", q="mail")
    assert html.startswith('<section id="open-incidents"')
    assert 'data-refresh="/incidents/?q=mail&amp;fragment=open" data-every="15"' in html
    assert len(rows_of(html, "open-incidents")) == 1


# --- Escaping and cost -------------------------------------------------------------------------


def test_a_hostile_service_name_and_reason_are_escaped(viewer):
    hostile = Result(Status.DOWN, Failure.REFUSED, HOSTILE_REASON, Phases(total=0.001))
    probes(make_service(HOSTILE_NAME), [hostile, hostile])
    html = page(viewer)
    assert HOSTILE_NAME not in html and HOSTILE_REASON not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def queries_for(client, count: int) -> int:
    for index in range(count):
        service = make_service(f"s{count}-{index:02}", locations="eu,us")
        incident(service, "eu", start=60, end=None if index % 2 else 30)
        incident(service, "us", start=50, end=None if index % 2 else 20)
    with CaptureQueriesContext(connection) as queries:
        page(client, service=Service.objects.first().id)
        page(client)
    Service.objects.all().delete()
    return len(queries)


def test_the_page_takes_as_many_queries_for_3_incidents_as_for_30(viewer):
    assert queries_for(viewer, 3) == queries_for(viewer, 30)
