"""SVG badges through real requests: public, escaped, the right value and colour, 404 for bad tokens, few queries."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard import badges
from monitor.daemon.rollups import update_rollups
from monitor.models import DailyRollup
from monitor.probes import Failure, Phases, Result, Status
from monitor.stats import DAY, HOUR, floor
from tests.dashboard.conftest import DOWN, UP, make_service, probes

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SVG = "{http://www.w3.org/2000/svg}"
MISSED = Result(Status.UNKNOWN, Failure.MISSED, "no worker took the slot", Phases())


def url(service, kind: str = "status", query: str = "") -> str:
    return f"/badge/{badges.token_for(service.id)}/{kind}.svg{query}"


def texts(response) -> list[str]:
    """Return the badge's visible texts (label, value), parsed as XML: it must be well-formed."""
    root = ET.fromstring(response.content)
    return [text.text for text in root.iter(f"{SVG}text") if text.get("aria-hidden") is None]


def value_colour(response) -> str:
    root = ET.fromstring(response.content)
    return [rect.get("fill") for rect in root.iter(f"{SVG}rect")][2]  # clip, label, value


def test_a_badge_is_served_without_login_as_svg(client):
    response = client.get(url(make_service()))
    assert (response.status_code, response["Content-Type"]) == (200, "image/svg+xml")


def test_a_badge_may_be_cached_for_a_minute(client):
    assert client.get(url(make_service()))["Cache-Control"] == "max-age=60"


def test_the_status_badge_says_up_in_green_with_the_service_name(client):
    service = make_service("smtp-eu")
    probes(service, [UP])
    response = client.get(url(service))
    assert (texts(response), value_colour(response)) == (["smtp-eu", "up"], badges.COLOURS["up"])


def test_the_status_badge_says_down_in_red(client):
    service = make_service()
    probes(service, [UP, DOWN, DOWN])
    response = client.get(url(service))
    assert (texts(response)[1], value_colour(response)) == ("down", badges.COLOURS["down"])


def test_the_status_badge_of_a_service_never_probed_says_unknown(client):
    assert texts(client.get(url(make_service())))[1] == "unknown"


def test_the_uptime_badge_counts_measured_probes_of_30_days(client):
    service = make_service()
    probes(service, [UP] * 98 + [DOWN] * 2 + [MISSED] * 5)
    response = client.get(url(service, "uptime"))
    assert (texts(response), value_colour(response)) == (["uptime 30d", "98.00 %"], badges.COLOURS["down"])


def test_the_uptime_badge_without_results_says_no_data(client):
    assert texts(client.get(url(make_service(), "uptime"))) == ["uptime 30d", "no data"]


def test_the_latency_badge_gives_the_mean_total_time_of_good_probes(client):
    service = make_service()
    fast = Result(Status.UP, None, "ok", Phases(connect=0.01, total=0.023))
    probes(service, [fast, UP, DOWN])  # UP's total is 15 ms; DOWN's timings say how fast it failed
    assert texts(client.get(url(service, "latency"))) == ["latency", "19 ms"]


def test_a_label_parameter_replaces_the_left_text(client):
    assert texts(client.get(url(make_service(), query="?label=mail+relay")))[0] == "mail relay"


def test_a_hostile_label_is_escaped(client):
    response = client.get(url(make_service(), query="?label=%3Cscript%3Ealert(1)%3C/script%3E"))
    assert (b"<script>" in response.content, texts(response)[0]) == (False, "<script>alert(1)</script>")


def test_a_hostile_service_name_is_escaped(client):
    response = client.get(url(make_service('<script>"x"&</script>')))
    assert (b"<script>" in response.content, texts(response)[0]) == (False, '<script>"x"&</script>')


def test_a_long_label_is_cut_to_its_limit(client):
    response = client.get(url(make_service(), query="?label=" + "x" * 500))
    assert texts(response)[0] == "x" * (badges.MAX_LABEL_LENGTH - 1) + "…"


def test_control_characters_in_a_label_are_dropped_so_the_svg_stays_well_formed(client):
    assert texts(client.get(url(make_service(), query="?label=a%00b%1Bc")))[0] == "abc"


def test_a_longer_text_makes_a_wider_badge(client):
    service = make_service()
    narrow = ET.fromstring(client.get(url(service, query="?label=ii")).content)
    wide = ET.fromstring(client.get(url(service, query="?label=WW")).content)
    assert int(wide.get("width")) - int(narrow.get("width")) == round(2 * 10.88 + 12) - round(2 * 3.02 + 12)


def test_a_bad_token_is_404(client):
    assert client.get("/badge/1-forged/status.svg").status_code == 404


def test_a_token_of_a_deleted_service_is_404(client):
    service = make_service()
    address = url(service)
    service.delete()
    assert client.get(address).status_code == 404


def test_an_unknown_kind_is_404(client):
    assert client.get(url(make_service(), "ping")).status_code == 404


@pytest.mark.parametrize("kind", badges.KINDS)
def test_a_badge_takes_at_most_six_queries(client, kind):
    service = make_service(locations="default,eu")
    now = dt.datetime.now(dt.UTC)
    probes(service, [UP, DOWN, UP], until=now - 2 * HOUR)
    probes(service, [UP, UP], until=now - 2 * HOUR, location="eu")
    update_rollups()  # hourly and daily rollups to read as well as raw results
    DailyRollup.objects.create(service=service, location="eu", start=floor(now, DAY) - 3 * DAY, count=10, up_count=9)
    probes(service, [UP, DOWN])
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url(service, kind)).status_code == 200
    assert len(queries) <= 6
