"""The status page reader: days from rollups and recent raw results, the worst of a component's parts, incidents."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard import statuspage, statuspage_sql
from dashboard.models import StatusComponent, StatusPage
from dashboard.tasks import refresh_status_pages
from monitor.daemon.rollups import update_rollups
from monitor.models import DailyRollup, HourlyRollup, Service
from monitor.probes import Failure, Phases, Result, Status
from tests.dashboard.conftest import DOWN, UP, make_service, probes

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MINUTE, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)
NOW = dt.datetime(2026, 11, 12, 10, 30, tzinfo=dt.UTC)
TODAY = dt.datetime(2026, 11, 12, tzinfo=dt.UTC)
MISSED = Result(Status.UNKNOWN, Failure.MISSED, "no worker took the slot", Phases())


@pytest.fixture(autouse=True)
def empty_cache():
    """Start every test without a page read by an earlier one (ids repeat across rolled-back tests)."""
    cache.clear()


def page_of(*services: Service, tag: str = "", **fields) -> StatusPage:
    page = StatusPage.objects.create(slug="public", title="Example status", **fields)
    for position, service in enumerate(services):
        StatusComponent.objects.create(page=page, service=service, position=position)
    if tag:
        StatusComponent.objects.create(page=page, tag=tag, position=len(services))
    return page


def daily(service: Service, day: dt.datetime, count: int, up: int, unknown: int = 0, location: str = "default"):
    DailyRollup.objects.create(
        service=service, location=location, start=day, count=count, up_count=up, unknown_count=unknown
    )


def day_of(page: StatusPage, date: dt.date, now: dt.datetime = NOW, component: int = 0) -> statuspage.Day:
    days = statuspage.read(page, now).components[component].days
    return next(day for day in days if day.date == date)


def test_a_page_has_90_days_oldest_first_ending_today():
    days = statuspage.read(page_of(make_service()), NOW).components[0].days
    assert [days[0].date, days[-1].date, len(days)] == [dt.date(2026, 8, 15), dt.date(2026, 11, 12), 90]


def test_a_day_down_for_14_minutes_is_amber_with_its_minutes_and_uptime():
    service = make_service(interval=60)
    daily(service, TODAY - 3 * DAY, count=1440, up=1426)
    day = day_of(page_of(service), dt.date(2026, 11, 9))
    assert (day.fill, day.tooltip) == ("warning", "9 Nov 2026: 14 min down, 99.02 % up")


def test_a_day_down_for_more_than_one_percent_of_it_is_red():
    service = make_service(interval=60)
    daily(service, TODAY - 3 * DAY, count=1440, up=1410)
    assert day_of(page_of(service), dt.date(2026, 11, 9)).fill == "down"


def test_a_day_without_downtime_is_green():
    service = make_service(interval=60)
    daily(service, TODAY - 3 * DAY, count=1440, up=1440)
    day = day_of(page_of(service), dt.date(2026, 11, 9))
    assert (day.fill, day.tooltip) == ("up", "9 Nov 2026: 0 min down, 100 % up")


def test_missed_slots_are_not_measured_rather_than_down():
    service = make_service(interval=60)
    daily(service, TODAY - 3 * DAY, count=1440, up=1380, unknown=60)
    day = day_of(page_of(service), dt.date(2026, 11, 9))
    assert (day.fill, day.tooltip) == ("up", "9 Nov 2026: 0 min down, 100 % up, 1 h not measured")


def test_a_day_with_no_rollup_is_a_gap_saying_no_data():
    day = day_of(page_of(make_service()), dt.date(2026, 11, 9))
    assert (day.fill, day.tooltip) == ("gap", "9 Nov 2026: no data")


def test_a_day_when_every_slot_was_missed_is_a_gap_saying_so():
    service = make_service(interval=60)
    daily(service, TODAY - 3 * DAY, count=1440, up=0, unknown=1440)
    day = day_of(page_of(service), dt.date(2026, 11, 9))
    assert (day.fill, day.tooltip) == ("gap", "9 Nov 2026: no data (1 d not measured)")


def test_downtime_minutes_follow_the_service_interval():
    service = make_service(interval=300, timeout=5.0)
    daily(service, TODAY - 3 * DAY, count=288, up=278)  # 10 slots of 5 minutes
    assert day_of(page_of(service), dt.date(2026, 11, 9)).down_minutes == 50


def test_downtime_minutes_are_capped_at_a_whole_day():
    service = make_service(interval=60)
    daily(service, TODAY - 3 * DAY, count=2000, up=0)  # more slots than a day holds (two schedules)
    assert day_of(page_of(service), dt.date(2026, 11, 9)).down_minutes == 1440


def test_today_adds_hourly_rollups_written_by_the_daemon_and_the_raw_results_after_them():
    service = make_service(interval=60)
    probes(service, [UP] * 60 + [DOWN] * 5 + [UP] * 115, until=TODAY + 10 * HOUR)  # 07:00 to 10:00
    update_rollups(NOW)
    probes(service, [UP] * 27 + [DOWN] * 3, until=NOW)  # 10:00 to 10:30, not rolled up yet
    assert HourlyRollup.objects.filter(start=TODAY + 9 * HOUR).exists()
    day = day_of(page_of(service), NOW.date())
    assert (day.down_minutes, day.uptime) == (8, 202 / 210)


def test_yesterday_comes_from_its_daily_rollup_once_the_daemon_wrote_it():
    service = make_service(interval=60)
    probes(service, [UP] * 100 + [DOWN] * 20, until=TODAY - HOUR)  # 21:00 to 23:00 yesterday
    update_rollups(TODAY + 10 * MINUTE)
    assert DailyRollup.objects.filter(start=TODAY - DAY).exists()
    assert day_of(page_of(service), dt.date(2026, 11, 11)).down_minutes == 20


def test_yesterday_without_its_daily_rollup_comes_from_its_hours_and_raw_results():
    service = make_service(interval=60)
    probes(service, [UP] * 60 + [DOWN] * 4 + [UP] * 56, until=TODAY - 20 * MINUTE)  # 21:40 to 23:40
    update_rollups(TODAY)  # hours up to 23:00 are rolled; yesterday's daily rollup is not written yet
    probes(service, [DOWN] * 2 + [UP] * 21, until=TODAY + 3 * MINUTE)
    assert not DailyRollup.objects.exists()
    assert day_of(page_of(service), dt.date(2026, 11, 11), now=TODAY + 3 * MINUTE).down_minutes == 6


def test_raw_results_older_than_the_raw_limit_are_never_read():
    service = make_service(interval=60)
    probes(service, [DOWN] * 10, until=NOW - 3 * HOUR)  # never rolled up: the rollup task was not running
    probes(service, [DOWN] * 2 + [UP] * 8, until=NOW)
    assert day_of(page_of(service), NOW.date()).down_minutes == 2


def test_a_tag_component_is_one_row_named_after_its_tag_showing_the_worst_service():
    calm = make_service("smtp", tags="mail", interval=60)
    shaky = make_service("imap", tags="mail,imap", interval=60)
    other = make_service("web", tags="mailweb", interval=60)  # a tag merely starting with "mail" is not "mail"
    daily(calm, TODAY - 3 * DAY, count=1440, up=1435)
    daily(other, TODAY - 3 * DAY, count=1440, up=1000)
    daily(shaky, TODAY - 3 * DAY, count=1440, up=1410)
    component = statuspage.read(page_of(tag="mail"), NOW).components[0]
    day = next(day for day in component.days if day.date == dt.date(2026, 11, 9))
    assert (component.name, day.down_minutes, day.uptime) == ("mail", 30, 1410 / 1440)


def test_a_tag_component_status_is_its_worst_service():
    probes(make_service("smtp", tags="mail"), [UP, UP])
    probes(make_service("imap", tags="mail"), [DOWN, DOWN])
    assert statuspage.read(page_of(tag="mail"), NOW).components[0].status == "down"


def test_a_service_probed_from_two_locations_shows_its_worst_location():
    service = make_service(interval=60, locations="default,eu")
    daily(service, TODAY - 3 * DAY, count=1440, up=1440)
    daily(service, TODAY - 3 * DAY, count=1440, up=1420, location="eu")
    assert day_of(page_of(service), dt.date(2026, 11, 9)).down_minutes == 20


def test_the_90_day_uptime_counts_every_measured_slot_of_the_window():
    service = make_service(interval=60)
    daily(service, TODAY - 3 * DAY, count=1440, up=1400, unknown=20)
    daily(service, TODAY - 2 * DAY, count=1440, up=1440)
    assert statuspage.read(page_of(service), NOW).components[0].uptime_90d == 2840 / 2860


def test_a_disabled_service_never_probed_is_paused():
    assert statuspage.read(page_of(make_service(enabled=False)), NOW).components[0].status == "paused"


@pytest.mark.parametrize(
    ("statuses", "indicator", "description"),
    [
        (["up", "up"], "none", "All systems operational"),
        (["up", "warning"], "minor", "Degraded performance"),
        (["up", "down"], "major", "Partial outage"),
        (["down", "down"], "critical", "Major outage"),
        (["paused", "paused"], "maintenance", "Under maintenance"),
        (["up", "paused"], "maintenance", "Some components under maintenance"),
        (["up", "unknown"], "none", "Some components not measured yet"),
        (["unknown"], "none", "Status unknown: nothing measured yet"),
        ([], "none", "No components to show"),
    ],
)
def test_the_overall_indicator_follows_the_components(statuses, indicator, description):
    overall = statuspage.overall_of(statuses)
    assert (overall.indicator, overall.description) == (indicator, description)


def test_components_with_the_same_group_are_shown_together_in_order_of_first_appearance():
    page = StatusPage.objects.create(slug="grouped", title="Grouped")
    for position, (name, group) in enumerate([("a", "Mail"), ("b", ""), ("c", "Web"), ("d", "Mail")]):
        StatusComponent.objects.create(page=page, tag=name, name=name, group=group, position=position)
    sections = statuspage.read(page, NOW).sections
    assert [(s.name, [c.name for c in s.components]) for s in sections] == [
        ("Mail", ["a", "d"]),
        ("", ["b"]),
        ("Web", ["c"]),
    ]


def test_open_incidents_come_first_then_the_newest():
    old, new, still = make_service("old"), make_service("new"), make_service("still")
    probes(old, [DOWN, DOWN, UP], until=NOW - 3 * HOUR)
    probes(new, [DOWN, DOWN, UP], until=NOW - HOUR)
    probes(still, [DOWN, DOWN], until=NOW - 2 * HOUR)
    incidents = statuspage.read(page_of(old, new, still), NOW).incidents
    assert [(incident.components, incident.ongoing) for incident in incidents] == [
        (("still",), True),
        (("new",), False),
        (("old",), False),
    ]


def test_an_incident_timeline_lists_its_status_changes():
    service = make_service()
    probes(service, [UP, DOWN, DOWN, UP], until=NOW)
    incident = statuspage.read(page_of(service), NOW).incidents[0]
    assert [(step.old_status, step.new_status) for step in incident.steps] == [("up", "down"), ("down", "up")]


def test_an_incident_hides_its_cause_and_host_unless_the_page_opts_in():
    service = make_service(host="db.internal.example")
    probes(service, [DOWN, DOWN], until=NOW)
    incident = statuspage.read(page_of(service), NOW).incidents[0]
    assert (incident.cause, incident.host, incident.location, incident.steps[0].reason) == (None, None, None, None)


def test_an_incident_shows_cause_and_host_when_the_page_opts_in():
    service = make_service(host="db.internal.example")
    probes(service, [DOWN, DOWN], until=NOW)
    incident = statuspage.read(page_of(service, show_reasons=True, show_hosts=True), NOW).incidents[0]
    assert (incident.cause, incident.host) == ("connection refused", "db.internal.example")


def test_incidents_that_ended_more_than_90_days_ago_are_left_out():
    service = make_service()
    probes(service, [DOWN, DOWN, UP], until=NOW - 91 * DAY)
    assert statuspage.read(page_of(service), NOW).incidents == ()


def busy_page(count: int) -> StatusPage:
    """A page of `count` services, half as components of their own and half under one tag, with history."""
    services = []
    for n in range(count):
        service = make_service(f"svc{n}", tags="pool" if n % 2 else "", interval=60)
        probes(service, [UP] * 50 + [DOWN] * 3 + [UP] * 40, until=NOW - HOUR)
        probes(service, [UP] * 5 + [MISSED] + [UP] * 4, until=NOW)
        daily(service, TODAY - 5 * DAY, count=1440, up=1430)
        services.append(service)
    update_rollups(NOW)
    return page_of(*services[::2], tag="pool")


@pytest.mark.parametrize("count", [2, 20])
def test_the_reader_takes_seven_queries_whatever_the_number_of_services(count):
    page = busy_page(count)
    with CaptureQueriesContext(connection) as queries:
        status = statuspage.read(page, NOW)
    assert (len(queries), len(status.incidents)) == (7, count)


@pytest.mark.parametrize("scan_by_time", [False, True])
def test_both_ways_of_finding_the_rows_give_the_same_page(monkeypatch, scan_by_time):
    page = busy_page(4)
    monkeypatch.setattr(statuspage_sql, "SCAN_BY_TIME", 0 if scan_by_time else 10**9)
    days = statuspage.read(page, NOW).components[-1].days
    assert [(day.down_minutes, day.uptime, day.unmeasured_minutes) for day in days[-6:]] == [
        (10.0, 1430 / 1440, 0.0),
        (None, None, 0.0),
        (None, None, 0.0),
        (None, None, 0.0),
        (None, None, 0.0),
        (3.0, 99 / 102, 1.0),  # 93 probes rolled up, 10 raw of which one missed
    ]


# --- The worst of a component's parts, taken in SQL --------------------------------------------------


def test_two_services_of_a_tag_down_at_different_times_of_a_day_show_the_worst_not_the_sum():
    smtp, imap = make_service("smtp", tags="mail", interval=60), make_service("imap", tags="mail", interval=60)
    daily(smtp, TODAY - 3 * DAY, count=1440, up=1430)
    daily(imap, TODAY - 3 * DAY, count=1440, up=1425)
    assert day_of(page_of(tag="mail"), dt.date(2026, 11, 9)).down_minutes == 15


def test_the_lowest_uptime_and_most_unmeasured_minutes_may_come_from_different_services():
    fast = make_service("fast", tags="mail", interval=60)
    slow = make_service("slow", tags="mail", interval=300, timeout=5.0)
    daily(fast, TODAY - 3 * DAY, count=1440, up=1380, unknown=50)  # 10 min down, 50 min not measured
    daily(slow, TODAY - 3 * DAY, count=288, up=280, unknown=2)  # 30 min down, 10 min not measured
    day = day_of(page_of(tag="mail"), dt.date(2026, 11, 9))
    assert (day.down_minutes, day.uptime, day.unmeasured_minutes) == (30, 280 / 286, 50)


def test_unknown_slots_of_a_tag_component_are_not_counted_as_down():
    service = make_service("smtp", tags="mail", interval=60)
    daily(service, TODAY - 3 * DAY, count=1440, up=1420, unknown=20)
    day = day_of(page_of(tag="mail"), dt.date(2026, 11, 9))
    assert (day.fill, day.down_minutes, day.unmeasured_minutes) == ("up", 0, 20)


def test_a_service_without_measurements_leaves_the_day_to_the_measured_one():
    measured, missed = make_service("smtp", tags="mail", interval=60), make_service("imap", tags="mail", interval=60)
    daily(measured, TODAY - 3 * DAY, count=1440, up=1440)
    daily(missed, TODAY - 3 * DAY, count=1440, up=0, unknown=1440)
    day = day_of(page_of(tag="mail"), dt.date(2026, 11, 9))
    assert (day.fill, day.uptime, day.unmeasured_minutes) == ("up", 1.0, 1440)


def test_a_day_without_rollups_between_two_measured_days_is_a_gap():
    service = make_service("smtp", tags="mail", interval=60)
    daily(service, TODAY - 4 * DAY, count=1440, up=1440)
    daily(service, TODAY - 2 * DAY, count=1440, up=1440)
    page = page_of(tag="mail")
    assert [day_of(page, dt.date(2026, 11, n)).fill for n in (8, 9, 10)] == ["up", "gap", "up"]


def test_a_tag_with_an_underscore_matches_only_itself():
    make_service("a", tags="eu_west", interval=60)
    other = make_service("b", tags="euxwest", interval=60)  # '_' would match any character in LIKE
    daily(other, TODAY - 3 * DAY, count=1440, up=0)
    assert day_of(page_of(tag="eu_west"), dt.date(2026, 11, 9)).fill == "gap"


def test_the_90_day_uptime_of_a_tag_is_its_lowest_service_not_its_lowest_day():
    steady, shaky = make_service("steady", tags="mail", interval=60), make_service("shaky", tags="mail", interval=60)
    daily(steady, TODAY - 3 * DAY, count=1440, up=1340)
    daily(steady, TODAY - 2 * DAY, count=1440, up=1440)
    daily(shaky, TODAY - 3 * DAY, count=1440, up=1400)
    daily(shaky, TODAY - 2 * DAY, count=1440, up=1390)
    assert statuspage.read(page_of(tag="mail"), NOW).components[0].uptime_90d == 2780 / 2880


# --- The cache ------------------------------------------------------------------------------------------


def test_a_second_cached_read_runs_no_queries():
    page = page_of(make_service())
    statuspage.cached_read(page)
    with CaptureQueriesContext(connection) as queries:
        statuspage.cached_read(page)
    assert len(queries) == 0


def test_editing_the_page_reads_it_again():
    page = page_of(make_service())
    statuspage.cached_read(page)
    page.title = "Renamed"
    page.save()
    assert statuspage.cached_read(page).page.title == "Renamed"


def test_a_recovery_step_never_shows_the_servers_greeting_even_with_reasons():
    service = make_service()
    probes(service, [UP, DOWN, DOWN, UP], until=NOW)
    incident = statuspage.read(page_of(service, show_reasons=True), NOW).incidents[0]
    assert [step.reason for step in incident.steps] == ["connection refused", None]


def test_the_beat_task_reads_every_page_ahead_so_visitors_run_no_page_queries():
    first = page_of(make_service("mail"))
    second = StatusPage.objects.create(slug="web", title="Web")
    StatusComponent.objects.create(page=second, service=make_service("web"), position=0)
    assert refresh_status_pages() == 2
    with CaptureQueriesContext(connection) as queries:
        statuspage.cached_read(first), statuspage.cached_read(second)
    assert len(queries) == 0


def test_the_refresh_task_is_registered_with_celery_and_scheduled_by_beat(settings):
    from monitor.celery import app

    app.loader.import_default_modules()
    assert "portwatch.refresh_status_pages" in app.tasks
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-status-pages"]
    assert entry["schedule"] == statuspage.REFRESH_SECONDS < statuspage.CACHE_SECONDS
