"""The service detail page and "check now", against a real database and real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard import checks, detail
from dashboard.access import MANUAL_PROBES_PER_WINDOW
from dashboard.badges import token_for
from monitor.daemon.recording import Outcome, record
from monitor.models import DailyRollup, HourlyRollup, Incident, ProbeResult, ServiceState
from monitor.probes import Failure, Phases, Result, Status
from monitor.stats import DAY, HOUR, floor
from tests.dashboard.conftest import DOWN, UP, make_service, probes, tls_facts
from tests.peers.smtp_server import SERVER_NAME, LineServer, smtp_server

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()  # the rate limit counts in the cache


# --- Helpers ---------------------------------------------------------------------------------------


class _Element(HTMLParser):
    """Find the element with a given id and remember where it starts and ends in the document."""

    def __init__(self, wanted: str) -> None:
        super().__init__(convert_charrefs=False)
        self.wanted, self.tag, self.depth = wanted, None, 0
        self.start: tuple[int, int] | None = None
        self.end: tuple[int, int] | None = None

    def handle_starttag(self, tag, attrs):
        if self.start is None and dict(attrs).get("id") == self.wanted:
            self.tag, self.start = tag, self.getpos()
        elif self.start is not None and self.end is None and tag == self.tag:
            self.depth += 1

    def handle_endtag(self, tag):
        if self.start is not None and self.end is None and tag == self.tag:
            if self.depth == 0:
                self.end = self.getpos()
            self.depth -= 1


def element(html: str, wanted: str) -> str:
    """Return the HTML of the element with id `wanted` (start tag to end tag); fail when there is none."""
    finder = _Element(wanted)
    finder.feed(html)
    assert finder.start and finder.end, f"no element with id={wanted!r}"
    lines = html.splitlines(keepends=True)

    def offset(position: tuple[int, int]) -> int:
        return sum(len(line) for line in lines[: position[0] - 1]) + position[1]

    return html[offset(finder.start) : offset(finder.end)]


def page(client: Client, service, **query) -> str:
    response = client.get(f"/services/{service.id}/", query)
    assert response.status_code == 200
    return response.content.decode()


@contextlib.contextmanager
def served(server) -> Iterator[int]:
    """Run an async context manager server (LineServer, smtp_server()) on a loop thread; yield its port.

    The dashboard's "check now" runs its own event loop in the request's thread, so the server
    needs a loop of its own.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        entered = asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(timeout=10)
        try:
            yield entered if isinstance(entered, int) else entered.port
        finally:
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def result_with(**fields) -> Result:
    return Result(**{"status": Status.UP, "failure": None, "reason": "ok", "phases": Phases(total=0.01)} | fields)


def rollups(service, days: int, now: dt.datetime, location: str = "default") -> None:
    """Write `days` days of hourly and daily rollups before the current hour, as the rollup writer would."""
    latency = {phase: {"min": 0.01, "avg": 0.02, "max": 0.04, "p95": 0.03} for phase in (*detail.PHASES, "total")}
    current = floor(now, HOUR)
    hours = [current - n * HOUR for n in range(1, days * 24 + 1)]
    HourlyRollup.objects.bulk_create(
        HourlyRollup(service=service, location=location, start=hour, count=60, up_count=59, latency=latency)
        for hour in hours
    )
    today = floor(now, DAY)
    DailyRollup.objects.bulk_create(
        DailyRollup(
            service=service, location=location, start=today - n * DAY, count=1440, up_count=1430, latency=latency
        )
        for n in range(1, days + 1)
    )


# --- Access ----------------------------------------------------------------------------------------


def test_an_unknown_service_is_404(viewer):
    assert viewer.get("/services/999999/").status_code == 404


def test_a_signed_in_user_without_a_role_gets_403(nobody):
    assert nobody.get(f"/services/{make_service().id}/").status_code == 403


def test_an_anonymous_visitor_is_sent_to_the_login_page():
    response = Client().get(f"/services/{make_service().id}/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_viewer_sees_neither_check_now_nor_the_editing_actions(viewer):
    html = page(viewer, make_service())
    assert 'id="check-now"' not in html
    assert 'id="service-actions"' not in html


def test_an_editor_sees_check_now_edit_pause_and_delete(editor):
    service = make_service()
    actions = element(page(editor, service), "service-actions")
    assert f'href="/services/{service.id}/edit"' in actions
    assert f'action="/services/{service.id}/pause"' in actions
    assert f'href="/services/{service.id}/delete"' in actions
    assert '<button type="submit" id="check-now" class="primary">Check now</button>' in page(editor, service)


def test_a_disabled_service_offers_resume_instead_of_pause(admin_client_):
    service = make_service(enabled=False)
    actions = element(page(admin_client_, service), "service-actions")
    assert f'action="/services/{service.id}/resume"' in actions and "/pause" not in actions


def test_the_page_has_no_inline_script_for_the_csp_to_block(editor):
    html = page(editor, make_service())
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert re.findall(r"\son[a-z]+=", html) == []
    assert '<script src="/static/dashboard/detail.js" defer></script>' in html


# --- Header and per-location state -----------------------------------------------------------------


def test_the_header_shows_the_worst_status_over_the_locations(viewer):
    service = make_service(locations="eu,us")
    probes(service, [UP], location="eu")
    probes(service, [DOWN, DOWN], location="us")
    status = element(page(viewer, service), "overall-status")
    assert "status-down" in status and "since" in status


def test_each_location_has_a_row_with_its_state_and_last_reason(viewer):
    service = make_service(locations="eu,us")
    probes(service, [DOWN], location="us")
    table = element(page(viewer, service), "locations")
    assert re.search(r"<th scope=\"row\">eu</th>.*?not checked yet", table, re.S)
    assert re.search(r"<th scope=\"row\">us</th>.*?connection refused", table, re.S)


def test_the_status_fragment_returns_only_the_refreshing_region(viewer):
    service = make_service()
    html = viewer.get(f"/services/{service.id}/", {"fragment": "status"}).content.decode()
    assert html.startswith('<div id="status"') and "<html" not in html


def test_refresh_urls_keep_the_chosen_range(viewer):
    service = make_service()
    html = page(viewer, service, range="7d")
    assert f'data-refresh="/services/{service.id}/?range=7d&amp;fragment=results"' in html
    assert f'data-refresh="/services/{service.id}/?range=7d&amp;fragment=status"' in html


# --- Latency ---------------------------------------------------------------------------------------


def test_the_chosen_range_tab_is_marked_current(viewer):
    tabs = re.findall(
        r'<a href="[^"]*\?range=(\w+)#latency"( aria-current="true")?', page(viewer, make_service(), range="7d")
    )
    assert [key for key, current in tabs if current] == ["7d"]


def test_an_unknown_range_shows_the_last_24_hours(viewer):
    assert "over the last 24 h</title>" in page(viewer, make_service(), range="1y")


def test_the_1h_chart_has_a_point_per_successful_probe_only():
    service = make_service()
    probes(service, [UP, DOWN, UP, result_with(status=Status.WARNING, failure=Failure.TLS_EXPIRING)])
    series = detail.latency_series(service, "1h", timezone.now())
    assert [point.phases[3] for point in series.points] == [0.01, 0.01, 0.0]


def test_the_24h_chart_takes_rolled_up_hours_and_the_current_hour_from_raw_results():
    now = floor(timezone.now(), HOUR) - 3 * HOUR + dt.timedelta(minutes=30)
    service = make_service()
    rollups(service, 1, now)
    probes(service, [result_with(phases=Phases(connect=0.5, total=0.5))], until=now)
    series = detail.latency_series(service, "24h", now)
    assert len(series.points) == 24
    assert series.points[-1].at == floor(now, HOUR) and series.points[-1].phases[1] == 0.5
    assert series.points[0].phases[1] == 0.02  # the rollup's average


def test_a_rolled_up_hour_weights_each_location_by_its_successful_probes():
    now = floor(timezone.now(), HOUR) + dt.timedelta(minutes=30)
    service = make_service(locations="eu,us")
    hour = floor(now, HOUR) - 2 * HOUR
    for location, up, avg in (("eu", 30, 0.01), ("us", 10, 0.05), ("eu", 0, 9.0)):  # no successes: counts for nothing
        latency = {phase: {"min": avg, "avg": avg, "max": avg, "p95": avg} for phase in (*detail.PHASES, "total")}
        at = hour if up else hour - HOUR
        HourlyRollup.objects.create(
            service=service, location=location, start=at, count=60, up_count=up, latency=latency
        )
    points = detail.latency_series(service, "7d", now).points
    assert [(point.at, round(point.phases[1], 6)) for point in points] == [(hour, 0.02)]  # (30 x 10 + 10 x 50) / 40 ms


def test_the_30d_chart_takes_whole_days_from_daily_rollups_and_today_from_its_hours():
    now = floor(timezone.now(), DAY) - DAY + 6 * HOUR + dt.timedelta(minutes=30)
    service = make_service()
    rollups(service, 3, now)  # today: six hours rolled up, 59 successes each at 20 ms
    probes(service, [result_with(phases=Phases(connect=0.5, total=0.5))], until=now)  # and one of the current hour
    series = detail.latency_series(service, "30d", now)
    today = floor(now, DAY)
    assert [point.at for point in series.points] == [today - 3 * DAY, today - 2 * DAY, today - DAY, today]
    assert series.points[0].phases[1] == 0.02  # the daily rollup's average
    assert round(series.points[-1].phases[1], 6) == round((6 * 59 * 0.02 + 0.5) / (6 * 59 + 1), 6)


def test_a_day_not_rolled_up_yet_comes_from_its_hourly_rollups():
    now = floor(timezone.now(), DAY) - DAY + dt.timedelta(minutes=30)
    service = make_service()
    for hours_ago, up, avg in ((1, 10, 0.01), (2, 30, 0.05)):  # yesterday's last two hours, no daily rollup yet
        latency = {phase: {"min": avg, "avg": avg, "max": avg, "p95": avg} for phase in (*detail.PHASES, "total")}
        start = floor(now, DAY) - hours_ago * HOUR
        HourlyRollup.objects.create(
            service=service, location="default", start=start, count=60, up_count=up, latency=latency
        )
    points = detail.latency_series(service, "30d", now).points
    assert [(point.at, round(point.phases[1], 6)) for point in points] == [(floor(now, DAY) - DAY, 0.04)]


def test_an_hour_not_rolled_up_yet_comes_from_its_raw_results():
    now = floor(timezone.now(), HOUR) - 3 * HOUR + dt.timedelta(minutes=2)
    service = make_service()
    probes(service, [result_with(phases=Phases(tls=0.25, total=0.25))], until=now - dt.timedelta(minutes=10))
    points = detail.latency_series(service, "24h", now).points
    assert [(point.at, point.phases[2]) for point in points] == [(floor(now, HOUR) - HOUR, 0.25)]


def test_the_chart_draws_a_band_per_phase(viewer):
    service = make_service()
    probes(service, [UP, UP, UP])
    chart = element(page(viewer, service, range="1h"), "latency-chart")
    assert {"resolve", "connect", "tls", "processing", "transfer"} == set(re.findall(r'class="phase-(\w+)"', chart))
    assert 'role="img"' in chart and "<desc" in chart


def test_beside_the_chart_min_avg_p95_and_max_of_the_total_per_window(viewer):
    service = make_service()
    probes(service, [result_with(phases=Phases(total=0.010)), result_with(phases=Phases(total=0.030))])
    table = element(page(viewer, service), "latency")
    row = re.search(r'<th scope="row">1 h</th>(.*?)</tr>', table, re.S)[1]
    assert re.findall(r'<td class="num">([^<]*)</td>', row) == ["10 ms", "20 ms", "30 ms", "30 ms"]


# --- Timeline --------------------------------------------------------------------------------------


def quarter_two_hours_ago() -> dt.datetime:
    moment = timezone.now() - 2 * HOUR
    return moment.replace(minute=moment.minute // 15 * 15, second=0, microsecond=0)


def test_a_quarter_hour_is_coloured_by_its_worst_measured_status(viewer):
    service = make_service()
    start = quarter_two_hours_ago()
    probes(service, [UP, UP, DOWN], until=start + dt.timedelta(minutes=10))
    record([Outcome.missed(service.id, "default", start + dt.timedelta(minutes=12), "no worker")])
    bucket = next(bucket for bucket in detail.timeline(service, timezone.now()) if bucket.start == start)
    assert (bucket.status, bucket.up, bucket.down, bucket.missed) == ("down", 2, 1, 1)
    label = f"{start:%H:%M}\u2013{start + dt.timedelta(minutes=15):%H:%M}: 2 up, 1 down, 1 missed"
    assert f'class="fill-down"><title>{label}</title>' in element(page(viewer, service), "timeline")


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_the_timeline_is_counted_from_the_index_alone():
    service = make_service()
    probes(service, [UP, DOWN] * 10)
    record([Outcome.missed(service.id, "default", quarter_two_hours_ago(), "no worker")])
    with CaptureQueriesContext(connection) as queries:
        detail.timeline(service, timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a test table is small enough to read whole
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(f"EXPLAIN {queries.captured_queries[-1]['sql']}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan using result_service_status" in plan


def test_a_quarter_hour_with_only_missed_slots_is_a_gap_that_says_not_measured(viewer):
    service = make_service()
    start = quarter_two_hours_ago()
    record([Outcome.missed(service.id, "default", start + dt.timedelta(minutes=m), "no worker") for m in (1, 2)])
    label = f"{start:%H:%M}\u2013{start + dt.timedelta(minutes=15):%H:%M}: not measured: 2 missed"
    gap = f'class="fill-gap" pointer-events="all" vector-effect="non-scaling-stroke"><title>{label}</title>'
    assert gap in element(page(viewer, service), "timeline")


def test_the_timeline_has_96_quarter_hours_and_30_days(viewer):
    timeline = element(page(viewer, make_service()), "timeline")
    assert len(re.findall(r'<rect x="[^"]*" y="1"', element(timeline, "timeline-chart"))) == 96
    assert len(re.findall(r'<rect x="[^"]*" y="1"', element(timeline, "daily-chart"))) == 30


def test_a_day_without_a_rollup_is_a_gap_and_a_day_with_one_shows_its_uptime():
    now = timezone.now()
    service = make_service()
    DailyRollup.objects.create(
        service=service, location="default", start=floor(now, DAY) - DAY, count=1440, up_count=1430, unknown_count=5
    )
    days = detail.daily_row(service, now)
    assert [(day.up, day.down, day.missed) for day in days[-2:]] == [(0, 0, 0), (1430, 5, 5)]
    assert not days[-2].measured and days[-1].status == "down"


# --- Recent results ------------------------------------------------------------------------------


def test_the_latest_50_results_are_listed_newest_first(viewer):
    service = make_service()
    probes(service, [result_with(reason=f"reply {n}") for n in range(60)])
    table = element(page(viewer, service), "recent-results")
    reasons = re.findall(r"<td>reply (\d+)</td>", table)
    assert reasons == [str(n) for n in range(59, 9, -1)]


def test_the_latest_50_results_of_several_locations_are_merged_newest_first(viewer):
    service = make_service(locations="eu,us")
    now = dt.datetime.now(dt.UTC)
    probes(service, [result_with(reason=f"eu {n}") for n in range(40)], location="eu", until=now)
    probes(
        service, [result_with(reason=f"us {n}") for n in range(40)], location="us", until=now - dt.timedelta(seconds=30)
    )
    table = element(page(viewer, service), "recent-results")
    reasons = re.findall(r"<td>((?:eu|us) \d+)</td>", table)
    expected = [f"{where} {n}" for n in range(39, 14, -1) for where in ("eu", "us")]
    assert reasons == expected


def test_a_hostile_reason_is_shown_as_text(viewer):
    service = make_service()
    probes(service, [result_with(status=Status.DOWN, failure=Failure.PROTOCOL_ERROR, reason=HOSTILE)])
    html = element(page(viewer, service), "recent-results")
    assert ESCAPED in html and "<script>" not in html


def test_the_results_fragment_returns_only_the_results(viewer):
    service = make_service()
    probes(service, [UP])
    html = viewer.get(f"/services/{service.id}/", {"fragment": "results"}).content.decode()
    assert html.startswith('<section class="card" id="recent-results"') and "220 mail ready" in html


# --- Certificates ------------------------------------------------------------------------------------


def test_a_service_without_tls_says_so(viewer):
    assert "No TLS on this service" in element(page(viewer, make_service()), "certificates")


def test_the_certificate_of_the_last_probe_is_shown(viewer):
    service = make_service()
    probes(service, [result_with(tls=tls_facts(days_left=40))])
    certificates = element(page(viewer, service), "certificates")
    for text in ("CN=mail.test", "CN=Test CA", "TLSv1.3", "TLS_AES_256_GCM_SHA384", "<dd>40 d</dd>"):
        assert text in certificates


def test_every_redirect_hop_with_tls_shows_its_certificate(viewer):
    service = make_service("web", protocol="http", port=443)
    first, second = tls_facts(subject="CN=www.test").to_dict(), tls_facts(subject="CN=login.test").to_dict()
    hops = [
        {"url": "https://www.test/", "status": 301, "tls": first},
        {"url": "http://plain.test/"},
        {"url": "https://login.test/", "status": 200, "tls": second},
    ]
    probes(service, [result_with(tls=tls_facts(subject="CN=www.test"), details={"hops": hops})])
    certificates = element(page(viewer, service), "certificates")
    assert "hop 1: https://www.test/" in certificates and "hop 3: https://login.test/" in certificates
    assert "CN=login.test" in certificates and "hop 2" not in certificates


def test_an_intermediate_that_expires_before_the_leaf_is_named():
    facts = tls_facts(days_left=300).to_dict() | {
        "chain_expiry_role": "intermediate",
        "chain_expiry_subject": "CN=Old Intermediate",
        "chain_days_left": 12.0,
    }
    certificate = detail.certificate(facts, timezone.now())
    assert certificate.first_expiry == "intermediate CN=Old Intermediate"
    assert round(certificate.first_expiry_days) == 12


def test_certificate_fields_are_shown_as_text(viewer):
    service = make_service()
    probes(service, [result_with(tls=tls_facts(subject=f"CN={HOSTILE}"))])
    certificates = element(page(viewer, service), "certificates")
    assert "<script>" not in certificates and f"CN={ESCAPED}" in certificates


# --- Greeting ----------------------------------------------------------------------------------------


def test_the_greeting_shows_the_banner_and_the_ehlo_extensions(viewer):
    service = make_service()
    probes(
        service, [result_with(banner="220 mail.test ESMTP", details={"extensions": {"SIZE": "1000", "STARTTLS": ""}})]
    )
    greeting = element(page(viewer, service), "greeting")
    assert "<pre>220 mail.test ESMTP\n\nEHLO:\n  SIZE 1000\n  STARTTLS</pre>" in greeting


def test_the_greeting_stays_after_a_missed_slot(viewer):
    service = make_service()
    probes(service, [result_with(banner="220 still here")], until=timezone.now() - 2 * dt.timedelta(minutes=1))
    record([Outcome.missed(service.id, "default", timezone.now() - dt.timedelta(seconds=30), "no worker")])
    assert "<pre>220 still here</pre>" in element(page(viewer, service), "greeting")


def test_the_greeting_stays_after_the_server_stopped_answering(viewer):
    service = make_service()
    probes(service, [result_with(banner="220 heard before"), DOWN, DOWN])
    assert "<pre>220 heard before</pre>" in element(page(viewer, service), "greeting")


def test_a_greeting_is_cut_at_4_kb():
    text, truncated = detail.greeting_text("imap", "* OK ok", {"capabilities": ["X" * 100] * 100})
    assert truncated and len(text.encode()) == detail.MAX_GREETING_BYTES


def test_a_hostile_greeting_recorded_by_a_probe_is_shown_as_text(viewer):
    with served(LineServer(HOSTILE.encode() + b"\r\n")) as port:
        service = make_service("hostile", protocol="tcp", port=port, options={"read_banner": True})
        probes(service, [checks.probe_service(service)])
    greeting = element(page(viewer, service), "greeting")
    assert f"<pre>{ESCAPED}</pre>" in greeting and "<img" not in greeting


# --- Incidents and badges ------------------------------------------------------------------------------


def test_incidents_are_listed_newest_first_with_open_ones_marked(viewer):
    service = make_service()
    now = timezone.now()
    Incident.objects.create(
        service=service,
        location="default",
        started_at=now - 3 * HOUR,
        ended_at=now - 2 * HOUR,
        failure="refused",
        reason="connection refused",
        end_reason="monitoring stopped: service disabled",
    )
    Incident.objects.create(
        service=service, location="default", started_at=now - HOUR, failure="timeout", reason="slow"
    )
    incidents = element(page(viewer, service), "incidents")
    assert incidents.index("slow") < incidents.index("connection refused")
    assert "open</span>" in incidents and "<td>1 h</td>" in incidents
    assert "monitoring stopped: service disabled" in incidents


def test_the_badges_section_offers_three_badges_as_images_and_markdown(viewer):
    service = make_service()
    badges = element(page(viewer, service), "badges")
    for kind in ("status", "uptime", "latency"):
        url = f"http://testserver/badge/{token_for(service.id)}/{kind}.svg"
        assert f'<img src="{url}"' in badges
        assert f'value="![mail {kind}]({url})"' in badges


# --- Query counts ------------------------------------------------------------------------------------


def queries_for(client: Client, service, **query) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/services/{service.id}/", query).status_code == 200
    return len(queries)


@pytest.mark.parametrize("range_key", ["1h", "24h", "30d"])
def test_the_page_takes_as_many_queries_with_30_days_of_history_as_with_1(viewer, range_key):
    counts = []
    for days, name in ((1, "young"), (30, "old")):
        service = make_service(name)
        rollups(service, days, timezone.now())
        probes(service, [UP, DOWN] * 20)
        Incident.objects.bulk_create(
            Incident(service=service, location="default", started_at=timezone.now() - n * HOUR, reason="x")
            for n in range(days)
        )
        counts.append(queries_for(viewer, service, range=range_key))
    assert counts[0] == counts[1]


def test_the_page_takes_as_many_queries_with_3_locations_as_with_1(viewer):
    counts = []
    for locations in ("eu", "eu,us,asia"):
        service = make_service(locations, locations=locations)
        for location in service.location_list:
            probes(service, [UP, DOWN], location=location)
        counts.append(queries_for(viewer, service))
    assert counts[0] == counts[1]


# --- Check now ----------------------------------------------------------------------------------------


def test_check_now_probes_a_real_server_and_saves_nothing(editor):
    with served(smtp_server()) as port:
        service = make_service(port=port)
        probes(service, [DOWN])
        before = (ProbeResult.objects.count(), list(ServiceState.objects.values_list("status", "last_checked_at")))
        response = editor.post(f"/services/{service.id}/check")
    result = element(response.content.decode(), "check-result")
    assert response.status_code == 200
    assert "status-up" in result and f"220 {SERVER_NAME}" in result and "SIZE 33554432" in result
    assert (ProbeResult.objects.count(), list(ServiceState.objects.values_list("status", "last_checked_at"))) == before


def test_check_now_by_fetch_returns_only_the_result_fragment(admin_client_):
    with served(LineServer(b"220 ready\r\n")) as port:
        service = make_service("banner", protocol="tcp", port=port, options={"read_banner": True})
        response = admin_client_.post(f"/services/{service.id}/check", **FETCH)
    html = response.content.decode()
    assert html.startswith('<div class="stack" id="check-outcome">') and "<pre>220 ready</pre>" in html


def test_check_now_reports_a_refused_connection_as_down(editor):
    with served(LineServer(b"")) as port:
        pass  # the port is closed again: nothing listens there any more
    service = make_service("gone", protocol="tcp", port=port)
    html = editor.post(f"/services/{service.id}/check", **FETCH).content.decode()
    assert "status-down" in html and "<code>refused</code>" in html


def test_a_hostile_greeting_in_check_now_is_shown_as_text(editor):
    with served(LineServer(HOSTILE.encode() + b"\r\n")) as port:
        service = make_service("hostile", protocol="tcp", port=port, options={"read_banner": True})
        html = editor.post(f"/services/{service.id}/check", **FETCH).content.decode()
    assert f"<pre>{ESCAPED}</pre>" in html and "<img" not in html and "<script" not in html


def test_a_viewer_may_not_check_now(viewer):
    assert viewer.post(f"/services/{make_service().id}/check").status_code == 403


def test_check_now_takes_a_post(editor):
    assert editor.get(f"/services/{make_service().id}/check").status_code == 405


def test_check_now_needs_the_csrf_token(db):
    from tests.dashboard.conftest import user_with_role

    client = Client(enforce_csrf_checks=True)
    client.force_login(user_with_role("eddie", "editors"))
    assert client.post(f"/services/{make_service().id}/check").status_code == 403


def test_check_now_of_an_unknown_service_is_404(editor):
    assert editor.post("/services/999999/check").status_code == 404


def test_check_now_over_the_rate_limit_answers_429_and_says_why(editor):
    with served(LineServer(b"220 ready\r\n")) as port:
        service = make_service("banner", protocol="tcp", port=port)
        codes = [
            editor.post(f"/services/{service.id}/check", **FETCH).status_code for _ in range(MANUAL_PROBES_PER_WINDOW)
        ]
        response = editor.post(f"/services/{service.id}/check")
    assert codes == [200] * MANUAL_PROBES_PER_WINDOW
    assert response.status_code == 429
    assert "Too many manual checks" in element(response.content.decode(), "check-result")
