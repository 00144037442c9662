"""Maintenance on the dashboard: the badge on the overview row and the service page, and the list of windows."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from django.utils import timezone

from monitor.models import MaintenanceWindow
from tests.dashboard.conftest import make_service

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOSTILE_NAME = "<script>alert(1)</script>"


def window(name: str, starts_in: dt.timedelta, lasts: dt.timedelta, services=(), **fields) -> MaintenanceWindow:
    start = timezone.now() + starts_in
    made = MaintenanceWindow.objects.create(name=name, starts_at=start, ends_at=start + lasts, **fields)
    made.services.set(services)
    return made


def get(client, url: str, **query) -> str:
    response = client.get(url, query)
    assert response.status_code == 200
    return response.content.decode()


def row_of(html: str, name: str) -> str:
    """Return the overview's table row of the service called `name`."""
    rows = re.findall(r"<tr>.*?</tr>", html, flags=re.S)
    return next(row for row in rows if f">{name}</a>" in row)


# --- The badge -----------------------------------------------------------------------------------


def test_the_overview_row_of_a_held_service_names_the_window_and_its_end(viewer):
    held = make_service("mx1")
    make_service("web", protocol="http", port=80)
    running = window("kernel upgrade", -dt.timedelta(minutes=5), dt.timedelta(hours=2), services=[held])
    html = get(viewer, "/")
    end = running.ends_at.astimezone(dt.UTC)
    assert "Maintenance: kernel upgrade until" in row_of(html, "mx1")
    assert f'title="{end:%Y-%m-%d %H:%M} UTC"' in row_of(html, "mx1")
    assert "Maintenance" not in row_of(html, "web")


def test_a_service_held_by_tag_shows_the_badge_in_the_windows_own_time_zone(viewer):
    make_service("mx1", tags="mail")
    running = window(
        "nightly", -dt.timedelta(minutes=5), dt.timedelta(hours=1), tags="mail", timezone="America/New_York"
    )
    local = running.ends_at.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert f"{local:%Y-%m-%d %H:%M %Z}</time>" in row_of(get(viewer, "/"), "mx1")  # EST or EDT, not UTC


def test_no_badge_before_a_window_starts_or_for_a_disabled_one(viewer):
    service = make_service("mx1")
    window("later", dt.timedelta(hours=1), dt.timedelta(hours=1), services=[service])
    window("off", -dt.timedelta(minutes=5), dt.timedelta(hours=1), services=[service], enabled=False)
    assert "Maintenance:" not in get(viewer, "/")
    assert "Maintenance:" not in get(viewer, f"/services/{service.id}/")


def test_the_service_page_and_its_live_status_show_the_badge(viewer):
    service = make_service("mx1")
    window("disk swap", -dt.timedelta(minutes=5), dt.timedelta(hours=2), services=[service])
    assert "Maintenance: disk swap until" in get(viewer, f"/services/{service.id}/")
    assert "Maintenance: disk swap until" in get(viewer, f"/services/{service.id}/", fragment="status")


def test_a_windows_name_is_escaped_in_the_badge(viewer):
    service = make_service("mx1")
    window(HOSTILE_NAME, -dt.timedelta(minutes=5), dt.timedelta(hours=2), services=[service])
    for html in (get(viewer, "/"), get(viewer, f"/services/{service.id}/")):
        assert HOSTILE_NAME not in html
        assert "Maintenance: &lt;script&gt;alert(1)&lt;/script&gt; until" in html


# --- The list ------------------------------------------------------------------------------------


def test_the_list_shows_what_runs_now_and_what_starts_in_the_next_seven_days(viewer):
    service = make_service("mx1")
    window("running", -dt.timedelta(minutes=5), dt.timedelta(hours=1), services=[service])
    window("tomorrow", dt.timedelta(days=1), dt.timedelta(hours=1), tags="mail")
    window("next month", dt.timedelta(days=30), dt.timedelta(hours=1))
    window("disabled", dt.timedelta(days=2), dt.timedelta(hours=1), enabled=False)
    html = get(viewer, "/maintenance/")
    now, upcoming = html.split('id="maintenance-upcoming"')
    assert "running" in now and "mx1" in now and "tomorrow" not in now
    assert "tomorrow" in upcoming and "mail" in upcoming
    assert "next month" not in html and "disabled" not in html


def test_a_daily_window_is_listed_once_per_day_ahead(viewer):
    window("backup", dt.timedelta(hours=1), dt.timedelta(minutes=30), repeat="daily")
    upcoming = get(viewer, "/maintenance/").split('id="maintenance-upcoming"')[1]
    assert upcoming.count('<th scope="row">backup</th>') == 7


def test_the_list_escapes_names_and_notes(viewer):
    window(HOSTILE_NAME, dt.timedelta(hours=1), dt.timedelta(hours=1), note="<img src=x onerror=alert(1)>")
    html = get(viewer, "/maintenance/")
    assert HOSTILE_NAME not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get("/maintenance/")
    assert (response.status_code, response["Location"]) == (302, "/login/?next=/maintenance/")


def test_a_signed_in_user_without_a_role_is_refused(nobody):
    assert nobody.get("/maintenance/").status_code == 403
