"""Maintenance windows: which occurrence covers a moment (daily, weekly, across DST), who is held, what is refused."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from django.core.exceptions import ValidationError

from monitor.alerting.maintenance import covering, in_maintenance, next_occurrence, occurrence, occurrences, validate
from monitor.models import MaintenanceWindow, Service

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def berlin(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=BERLIN)


def window(starts_at: dt.datetime, ends_at: dt.datetime, **fields) -> MaintenanceWindow:
    services = fields.pop("services", [])
    made = MaintenanceWindow.objects.create(
        name=fields.pop("name", "upgrade"), starts_at=starts_at, ends_at=ends_at, **fields
    )
    made.services.set(services)
    return made


def service(name: str, tags: str = "") -> Service:
    return Service.objects.create(name=name, host="127.0.0.1", port=25, protocol="smtp", tags=tags)


# --- occurrence() ------------------------------------------------------------------------------------------------


def test_a_one_off_window_covers_from_its_start_up_to_but_not_at_its_end():
    once = window(utc(2025, 5, 1, 10), utc(2025, 5, 1, 12))
    assert occurrence(once, utc(2025, 5, 1, 10)) == (utc(2025, 5, 1, 10), utc(2025, 5, 1, 12))
    assert occurrence(once, utc(2025, 5, 1, 11, 59)) is not None
    assert occurrence(once, utc(2025, 5, 1, 12)) is None
    assert occurrence(once, utc(2025, 5, 1, 9, 59)) is None
    assert occurrence(once, utc(2025, 5, 2, 11)) is None  # does not repeat


def test_a_daily_window_recurs_every_day_at_the_same_time_and_not_before_its_first():
    daily = window(utc(2025, 5, 1, 22), utc(2025, 5, 2, 1), repeat="daily")  # across midnight
    assert occurrence(daily, utc(2025, 5, 20, 23, 30)) == (utc(2025, 5, 20, 22), utc(2025, 5, 21, 1))
    assert occurrence(daily, utc(2025, 5, 21, 0, 30)) == (utc(2025, 5, 20, 22), utc(2025, 5, 21, 1))
    assert occurrence(daily, utc(2025, 5, 21, 1)) is None
    assert occurrence(daily, utc(2025, 4, 30, 23)) is None


def test_a_weekly_window_recurs_on_its_weekday_only():
    weekly = window(utc(2025, 5, 4, 2), utc(2025, 5, 4, 4), repeat="weekly")  # a Sunday
    assert occurrence(weekly, utc(2025, 5, 18, 3)) == (utc(2025, 5, 18, 2), utc(2025, 5, 18, 4))
    assert occurrence(weekly, utc(2025, 5, 19, 3)) is None


def test_a_berlin_window_keeps_its_local_hours_after_the_clocks_go_forward():
    nightly = window(berlin(2025, 3, 1, 2), berlin(2025, 3, 1, 4), repeat="daily", timezone="Europe/Berlin")
    # 02:00-04:00 CEST is 00:00-02:00 UTC; a recurrence in UTC would still be 01:00-03:00.
    assert occurrence(nightly, utc(2025, 4, 1, 0, 30)) == (utc(2025, 4, 1, 0), utc(2025, 4, 1, 2))
    assert occurrence(nightly, utc(2025, 4, 1, 2, 30)) is None


def test_on_the_night_the_clocks_skip_its_start_the_window_starts_when_the_clock_reads_it_after_the_jump():
    nightly = window(berlin(2025, 3, 1, 2), berlin(2025, 3, 1, 4), repeat="daily", timezone="Europe/Berlin")
    # 2025-03-30: 02:00 CET does not exist, the clock jumps to 03:00 CEST (01:00 UTC); 04:00 CEST is 02:00 UTC.
    assert occurrence(nightly, utc(2025, 3, 30, 1, 30)) == (utc(2025, 3, 30, 1), utc(2025, 3, 30, 2))
    assert occurrence(nightly, utc(2025, 3, 30, 0, 30)) is None


def test_on_the_night_the_clocks_repeat_its_end_the_window_ends_at_the_second_one():
    nightly = window(berlin(2025, 10, 1, 1, 30), berlin(2025, 10, 1, 2, 30), repeat="daily", timezone="Europe/Berlin")
    # 2025-10-26: 01:30 CEST is 23:30 UTC the day before; 02:30 comes twice, the second at 01:30 UTC.
    expected = (utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 1, 30))
    assert occurrence(nightly, utc(2025, 10, 26, 1, 15)) == expected
    assert occurrence(nightly, utc(2025, 10, 26, 1, 30)) is None


def test_no_occurrence_starts_after_repeat_until_but_the_last_one_runs_to_its_end():
    daily = window(utc(2025, 5, 1, 22), utc(2025, 5, 1, 23), repeat="daily", repeat_until=utc(2025, 5, 3, 22, 30))
    assert occurrence(daily, utc(2025, 5, 3, 22, 45)) == (utc(2025, 5, 3, 22), utc(2025, 5, 3, 23))
    assert occurrence(daily, utc(2025, 5, 4, 22, 15)) is None


def test_a_disabled_window_never_covers():
    off = window(utc(2025, 5, 1, 10), utc(2025, 5, 1, 12), repeat="daily", enabled=False)
    assert occurrence(off, utc(2025, 5, 1, 11)) is None
    assert list(occurrences(off, utc(2025, 5, 1), utc(2025, 5, 8))) == []


def test_occurrences_lists_each_one_overlapping_the_span_in_order():
    daily = window(utc(2025, 5, 1, 22), utc(2025, 5, 2, 1), repeat="daily")
    found = list(occurrences(daily, utc(2025, 5, 10, 0, 30), utc(2025, 5, 12, 22)))
    assert [start for start, _ in found] == [utc(2025, 5, 9, 22), utc(2025, 5, 10, 22), utc(2025, 5, 11, 22)]


def test_the_next_occurrence_is_the_current_one_or_else_the_next_to_start():
    weekly = window(utc(2025, 5, 4, 2), utc(2025, 5, 4, 4), repeat="weekly", repeat_until=utc(2025, 5, 11, 2))
    assert next_occurrence(weekly, utc(2025, 5, 4, 3)) == (utc(2025, 5, 4, 2), utc(2025, 5, 4, 4))
    assert next_occurrence(weekly, utc(2025, 5, 5)) == (utc(2025, 5, 11, 2), utc(2025, 5, 11, 4))
    assert next_occurrence(weekly, utc(2025, 5, 12)) is None


# --- Who is held -------------------------------------------------------------------------------------------------


def test_a_window_covers_its_services_and_those_with_one_of_its_tags_only():
    named, tagged, other = service("mx1"), service("mx2", tags="mail,eu"), service("web", tags="web")
    window(utc(2025, 5, 1, 10), utc(2025, 5, 1, 12), services=[named], tags="mail")
    at = utc(2025, 5, 1, 11)
    assert covering(named, at) is not None and covering(tagged, at) is not None
    assert covering(other, at) is None
    assert set(in_maintenance(at)) == {named.id, tagged.id}
    assert in_maintenance(utc(2025, 5, 1, 12)) == {}


def test_of_several_windows_the_latest_ending_is_given():
    mx = service("mx1", tags="mail")
    window(utc(2025, 5, 1, 10), utc(2025, 5, 1, 12), name="short", services=[mx])
    window(utc(2025, 5, 1, 9), utc(2025, 5, 1, 15), name="long", tags="mail")
    at = utc(2025, 5, 1, 11)
    held_by, until = covering(mx, at)
    assert (held_by.name, until) == ("long", utc(2025, 5, 1, 15))
    assert in_maintenance(at)[mx.id][0].name == "long"


def test_a_disabled_window_holds_nobody():
    mx = service("mx1", tags="mail")
    window(utc(2025, 5, 1, 10), utc(2025, 5, 1, 12), services=[mx], tags="mail", enabled=False)
    assert covering(mx, utc(2025, 5, 1, 11)) is None
    assert in_maintenance(utc(2025, 5, 1, 11)) == {}


def test_in_maintenance_reads_two_queries_whatever_the_fleet_and_can_be_limited(django_assert_num_queries):
    fleet = Service.objects.bulk_create(
        Service(name=f"s{n}", host="127.0.0.1", port=25, protocol="smtp", tags="mail" if n % 2 else "web")
        for n in range(300)
    )
    window(utc(2025, 5, 1, 10), utc(2025, 5, 1, 12), services=fleet[:5], tags="mail")
    with django_assert_num_queries(2):
        held = in_maintenance(utc(2025, 5, 1, 11))
    assert set(held) == {s.id for s in fleet[:5]} | {s.id for s in fleet if s.tags == "mail"}
    assert set(in_maintenance(utc(2025, 5, 1, 11), among=[fleet[0].id, fleet[2].id, fleet[3].id])) == {
        fleet[0].id,
        fleet[2].id,
        fleet[3].id,
    }


# --- validate() --------------------------------------------------------------------------------------------------


def errors(**fields) -> dict[str, list[str]]:
    values = {"name": "x", "starts_at": utc(2025, 5, 1, 10), "ends_at": utc(2025, 5, 1, 12)} | fields
    with pytest.raises(ValidationError) as raised:
        validate(MaintenanceWindow(**values))
    return raised.value.message_dict


def test_a_window_must_end_after_it_starts():
    assert errors(ends_at=utc(2025, 5, 1, 10)) == {"ends_at": ["The window must end after it starts."]}


def test_a_repeating_window_must_be_shorter_than_its_period():
    assert errors(ends_at=utc(2025, 5, 2, 10), repeat="daily") == {
        "ends_at": ["A daily window must last less than a day."]
    }
    assert errors(ends_at=utc(2025, 5, 8, 10), repeat="weekly") == {
        "ends_at": ["A weekly window must last less than a week."]
    }


def test_the_time_zone_must_be_known():
    assert errors(timezone="Mars/Olympus") == {
        "timezone": ["Unknown time zone 'Mars/Olympus': use a name like Europe/Berlin."]
    }


def test_the_repetition_must_end_after_the_first_start_and_only_a_repeating_window_has_one():
    assert errors(repeat="daily", repeat_until=utc(2025, 5, 1, 9)) == {
        "repeat_until": ["The repetition must end after the window first starts."]
    }
    assert errors(repeat_until=utc(2025, 6, 1)) == {
        "repeat_until": ["Only a repeating window has an end to its repetition."]
    }


def test_a_sound_window_passes():
    validate(MaintenanceWindow(name="x", starts_at=utc(2025, 5, 1, 22), ends_at=utc(2025, 5, 2, 2), repeat="daily"))


# --- The admin ---------------------------------------------------------------------------------------------------

ADD_URL = "/admin/monitor/maintenancewindow/add/"


@pytest.fixture
def admin_client(client):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_superuser("root", password="a long test password"))
    return client


def admin_form(**fields: str) -> dict[str, str]:
    return {
        "name": "nightly",
        "starts_at_0": "2025-05-01",
        "starts_at_1": "02:00:00",
        "ends_at_0": "2025-05-01",
        "ends_at_1": "04:00:00",
        "repeat": "daily",
        "timezone": "Europe/Berlin",
        "enabled": "on",
    } | fields


def test_the_admin_shows_each_error_of_validate_at_its_field(admin_client):
    for fields, expected in [
        (
            {"timezone": "Mars/Olympus"},
            {"timezone": ["Unknown time zone 'Mars/Olympus': use a name like Europe/Berlin."]},
        ),
        ({"ends_at_0": "2025-05-02"}, {"ends_at": ["A daily window must last less than a day."]}),
    ]:
        response = admin_client.post(ADD_URL, admin_form(**fields))
        assert (response.status_code, response.context["adminform"].form.errors) == (200, expected)
    assert not MaintenanceWindow.objects.exists()


def test_the_admin_reads_and_shows_times_in_the_windows_zone_and_lists_the_next_occurrence(admin_client):
    mx = service("mx1")
    response = admin_client.post(ADD_URL, admin_form(services=str(mx.id)))
    assert response.status_code == 302, response.context["adminform"].form.errors
    saved = MaintenanceWindow.objects.get()
    assert (saved.starts_at, saved.ends_at) == (utc(2025, 5, 1, 0), utc(2025, 5, 1, 2))  # 02:00-04:00 CEST
    assert list(saved.services.all()) == [mx]
    editing = admin_client.get(f"/admin/monitor/maintenancewindow/{saved.pk}/change/").content.decode()
    assert 'name="starts_at_1" value="02:00:00"' in editing
    listing = admin_client.get("/admin/monitor/maintenancewindow/").content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d 02:00 to \d{4}-\d\d-\d\d 04:00 CES?T", listing)
