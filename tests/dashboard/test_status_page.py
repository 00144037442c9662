"""The public status page and its JSON through real requests: who sees it, what it reveals, bars, indicator, cost."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard.models import StatusComponent, StatusPage
from monitor.daemon.rollups import update_rollups
from monitor.models import DailyRollup, Service
from monitor.probes import Failure, Phases, Result, Status
from monitor.stats import DAY, floor
from tests.dashboard.conftest import DOWN, UP, make_service, probes

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOST = "db.internal.example"
SECRET = "530 greeting of mail-7.internal"  # a reason: what the server said
BROKEN = Result(Status.DOWN, Failure.SERVER_REJECTED, SECRET, Phases(connect=0.001, total=0.002))
BAR = re.compile(r'<rect [^>]*class="fill-(\w+)"><title>([^<]*)</title></rect>')
JSON_KEYS = {"page", "status", "components", "incidents", "generated_at"}


@pytest.fixture(autouse=True)
def empty_cache():
    """Start every test without a page read by an earlier one (ids repeat across rolled-back tests)."""
    cache.clear()


def page_of(*services: Service, slug: str = "public", **fields) -> StatusPage:
    page = StatusPage.objects.create(slug=slug, **({"title": "Example status"} | fields))
    for position, service in enumerate(services):
        StatusComponent.objects.create(page=page, service=service, position=position)
    return page


def failing_page(**fields) -> StatusPage:
    service = make_service(host=HOST)
    probes(service, [UP, BROKEN, BROKEN])
    return page_of(service, **fields)


def bars(html: str) -> list[tuple[str, str]]:
    return BAR.findall(html)


def test_a_status_page_is_shown_without_login(client):
    page_of(make_service())
    response = client.get("/status/public/")
    assert (response.status_code, 'id="overall"' in response.text) == (200, True)


def test_an_unknown_status_page_is_404(client):
    assert client.get("/status/nothing-here/").status_code == 404


def test_a_page_that_is_not_public_is_404_to_anonymous_visitors(client):
    page_of(make_service(), public=False)
    assert client.get("/status/public/").status_code == 404


def test_a_page_that_is_not_public_is_404_to_a_user_without_a_role(nobody):
    page_of(make_service(), public=False)
    assert nobody.get("/status/public/").status_code == 404


def test_a_page_that_is_not_public_is_shown_to_a_viewer(viewer):
    page_of(make_service(), public=False)
    assert viewer.get("/status/public/").status_code == 200


def test_the_page_has_no_navigation_for_anonymous_visitors(client):
    page_of(make_service())
    html = client.get("/status/public/").text
    assert ('<body class="public">', "/incidents/" in html) == ('<body class="public">', False)


def test_hosts_are_hidden_unless_the_page_opts_in(client):
    failing_page()
    assert HOST not in client.get("/status/public/").text


def test_hosts_are_shown_when_the_page_opts_in(client):
    failing_page(show_hosts=True)
    assert HOST in client.get("/status/public/").text


def test_reasons_are_hidden_unless_the_page_opts_in(client):
    failing_page()
    assert SECRET not in client.get("/status/public/").text


def test_reasons_are_shown_when_the_page_opts_in(client):
    failing_page(show_reasons=True)
    assert SECRET in client.get("/status/public/").text


def test_an_ongoing_incident_is_listed_with_its_component(client):
    failing_page()
    html = client.get("/status/public/").text
    incidents = html[html.index('id="incidents"') :]
    assert ("mail outage" in incidents, "Ongoing" in incidents) == (True, True)


def test_the_page_draws_90_day_bars_per_component(client):
    page_of(make_service())
    assert len(bars(client.get("/status/public/").text)) == 90


def test_a_bar_is_coloured_by_the_downtime_of_its_day_and_says_so(client):
    service = make_service(interval=60)
    day = floor(dt.datetime.now(dt.UTC), DAY) - 3 * DAY
    DailyRollup.objects.create(service=service, location="default", start=day, count=1440, up_count=1426)
    page_of(service)
    label = f"{day.day} {day:%b %Y}"
    assert (
        "warning",
        f"{label}: 14 min down, 99.02 % up",
    ) in bars(client.get("/status/public/").text)


def test_bars_of_recorded_history_are_green_and_days_before_it_are_gaps(client):
    service = make_service(interval=60)
    probes(service, [UP] * 30)
    update_rollups()
    page_of(service)
    fills = [fill for fill, _ in bars(client.get("/status/public/").text)]
    assert (fills[0], fills[-1]) == ("gap", "up")


def test_the_overall_indicator_says_major_outage_when_everything_is_down(client):
    probes(make_service(), [DOWN, DOWN])
    page_of(Service.objects.get())
    html = client.get("/status/public/").text
    overall = html[html.index('id="overall"') : html.index('id="components"')]
    assert ("Major outage" in overall, "✖" in overall) == (True, True)


def test_the_overall_indicator_says_all_systems_operational_when_everything_is_up(client):
    probes(make_service(), [UP])
    page_of(Service.objects.get())
    html = client.get("/status/public/").text
    assert "All systems operational" in html[html.index('id="overall"') :]


def test_the_status_region_refreshes_itself_every_minute(client):
    page_of(make_service())
    html = client.get("/status/public/").text
    assert (
        '<div id="status" class="status-region" data-refresh="/status/public/?fragment=status" data-every="60">' in html
    )


def test_the_fragment_is_the_status_region_alone(client):
    page_of(make_service())
    html = client.get("/status/public/?fragment=status").text
    assert (html.startswith('<div id="status"'), "<html" in html) == (True, False)


def test_a_second_visitor_within_a_minute_is_served_from_the_cache(client):
    page_of(make_service())
    client.get("/status/public/")
    with CaptureQueriesContext(connection) as queries:
        client.get("/status/public.json")
    assert len(queries) == 1  # the page itself, for its slug and whether it is public


def test_hostile_names_are_escaped(client):
    page = page_of(make_service(), title="<img src=x onerror=alert(1)>")
    page.components.update(name="<script>alert(1)</script>")
    html = client.get("/status/public/").text
    assert ("<script>alert" in html, "<img src=x" in html, "&lt;script&gt;alert(1)" in html) == (False, False, True)


def build(prefix: str, count: int) -> StatusPage:
    services = []
    for n in range(count):
        service = make_service(f"{prefix}{n}", tags=prefix)
        probes(service, [UP, DOWN, DOWN, UP, UP])
        services.append(service)
    page = page_of(*services[: count // 2], slug=prefix)
    StatusComponent.objects.create(page=page, tag=prefix, position=count)
    return page


def test_the_page_runs_the_same_queries_for_2_and_20_services(client):
    counts = []
    for prefix, count in (("few", 2), ("many", 20)):
        build(prefix, count)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/status/{prefix}/").status_code == 200
        counts.append(len(queries))
    assert counts == [8, 8]


# --- JSON ------------------------------------------------------------------------------------------


def test_the_json_summary_is_served_without_login_with_its_documented_keys(client):
    failing_page()
    data = client.get("/status/public.json").json()
    assert (
        set(data),
        set(data["status"]),
        set(data["components"][0]),
        set(data["components"][0]["days"][0]),
        set(data["incidents"][0]),
    ) == (
        JSON_KEYS,
        {"indicator", "description"},
        {"name", "group", "status", "uptime_90d", "days"},
        {"date", "down_minutes", "uptime", "unmeasured"},
        {"name", "status", "started_at", "resolved_at", "duration_seconds", "components"},
    )


def test_the_json_summary_says_a_major_outage_is_critical(client):
    failing_page()
    assert client.get("/status/public.json").json()["status"] == {
        "indicator": "critical",
        "description": "Major outage",
    }


def test_the_json_summary_names_the_page_by_its_absolute_url(client):
    failing_page()
    page = client.get("/status/public.json").json()["page"]
    assert page == {"slug": "public", "title": "Example status", "url": "http://testserver/status/public/"}


def test_the_json_summary_has_90_days_with_a_known_day(client):
    service = make_service(interval=60)
    day = floor(dt.datetime.now(dt.UTC), DAY) - 3 * DAY
    DailyRollup.objects.create(
        service=service, location="default", start=day, count=1440, up_count=1380, unknown_count=20
    )
    page_of(service)
    days = client.get("/status/public.json").json()["components"][0]["days"]
    known = next(entry for entry in days if entry["date"] == day.date().isoformat())
    assert (len(days), known) == (
        90,
        {"date": day.date().isoformat(), "down_minutes": 40.0, "uptime": 0.971831, "unmeasured": 20.0},
    )


def test_the_json_summary_hides_host_and_cause_unless_the_page_opts_in(client):
    failing_page()
    text = client.get("/status/public.json").content.decode()
    assert (HOST in text, SECRET in text) == (False, False)


def test_the_json_summary_gives_cause_and_host_when_the_page_opts_in(client):
    failing_page(show_reasons=True, show_hosts=True)
    incident = client.get("/status/public.json").json()["incidents"][0]
    assert (incident["cause"], incident["host"], incident["status"]) == (SECRET, HOST, "investigating")


def test_the_json_summary_of_a_page_that_is_not_public_is_404_anonymously(client):
    page_of(make_service(), public=False)
    assert client.get("/status/public.json").status_code == 404


# --- Models and admin --------------------------------------------------------------------------------


def test_a_component_needs_a_service_or_a_tag():
    component = StatusComponent(page=StatusPage.objects.create(slug="p", title="P"))
    with pytest.raises(ValidationError) as error:
        component.full_clean()
    assert set(error.value.message_dict) == {"service"}


def test_a_component_cannot_have_both_a_service_and_a_tag():
    component = StatusComponent(page=StatusPage.objects.create(slug="p", title="P"), service=make_service(), tag="mail")
    with pytest.raises(ValidationError) as error:
        component.full_clean()
    assert error.value.message_dict == {"tag": ["Choose a service or a tag, not both."]}


def test_a_component_tag_is_stored_as_services_store_theirs():
    component = StatusComponent(page=StatusPage.objects.create(slug="p", title="P"), tag=" Mail ")
    component.full_clean()
    assert component.tag == "mail"


@pytest.fixture
def superuser() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="a long test password"))
    return client


def admin_form(**component) -> dict[str, str]:
    data = {"title": "Status", "slug": "status", "description": "", "public": "on"}
    data |= {
        "components-TOTAL_FORMS": "1",
        "components-INITIAL_FORMS": "0",
        "components-MIN_NUM_FORMS": "0",
        "components-MAX_NUM_FORMS": "1000",
    }
    return data | {f"components-0-{key}": value for key, value in ({"position": "0"} | component).items()}


def test_the_admin_saves_a_page_with_a_tag_component(superuser):
    superuser.post("/admin/dashboard/statuspage/add/", admin_form(tag="mail", group="Mail"))
    assert list(StatusComponent.objects.values_list("page__slug", "tag", "group")) == [("status", "mail", "Mail")]


def test_the_admin_shows_a_component_with_both_service_and_tag_refused_at_the_tag(superuser):
    service = make_service()
    response = superuser.post("/admin/dashboard/statuspage/add/", admin_form(service=str(service.id), tag="mail"))
    assert ("Choose a service or a tag, not both." in response.text, StatusPage.objects.exists()) == (True, False)
