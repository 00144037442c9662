"""/metrics' portwatch_maintenance, scraped through Django's test client and read by prometheus_client's parser."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon.recording import Outcome, record
from monitor.metrics.collector import SERVICE_LABELS, collect
from monitor.models import MaintenanceWindow, Service
from tests.conftest import need
from tests.dashboard.conftest import UP
from tests.metrics.conftest import TOKEN

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = dt.datetime.now(dt.UTC)


def scrape() -> dict[str, list]:
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def service(name: str, **fields) -> Service:
    return Service.objects.create(**{"name": name, "host": "127.0.0.1", "port": 2525, "protocol": "smtp"} | fields)


def window(services=(), **fields) -> MaintenanceWindow:
    defaults = {"name": "upgrade", "starts_at": NOW - dt.timedelta(minutes=5), "ends_at": NOW + dt.timedelta(hours=1)}
    made = MaintenanceWindow.objects.create(**defaults | fields)
    made.services.set(services)
    return made


def six(sample) -> tuple:
    return tuple(sample.labels[name] for name in SERVICE_LABELS)


def test_each_pair_of_a_held_service_has_the_series_with_the_labels_of_its_other_series():
    named = service("mx1", locations="eu,us")
    service('mx "2"', tags="mail", port=None)  # escaped name, standard port
    service("web", tags="web")
    window(services=[named], tags="mail")
    families = scrape()
    held = {six(sample): sample.value for sample in families["portwatch_maintenance"]}
    info = {six(sample) for sample in families["portwatch_service_info"] if sample.labels["service"] != "web"}
    assert held == dict.fromkeys(info, 1.0)
    assert {labels[0] for labels in held} == {"mx1", 'mx "2"'}
    assert ('mx "2"', "smtp", "127.0.0.1", "25", "default", "127.0.0.1:25") in held


def test_a_location_the_service_no_longer_has_is_held_too_as_its_paused_series_are_still_written():
    mx = service("mx1", locations="eu,us")
    moment = NOW - dt.timedelta(minutes=1)
    record([Outcome(mx.id, "us", moment, moment, UP)])  # a state at us, through the daemon's writer
    mx.locations = "eu"
    mx.save(update_fields=["locations"])
    window(services=[mx])
    families = scrape()
    assert {s.labels["location"] for s in families["portwatch_maintenance"]} == {"eu", "us"}
    assert {s.labels["location"] for s in families["portwatch_service_info"]} == {"eu", "us"}


def test_nothing_is_held_outside_a_window_but_the_family_is_declared():
    mx = service("mx1")
    window(services=[mx], starts_at=NOW + dt.timedelta(hours=1), ends_at=NOW + dt.timedelta(hours=2))
    body = b"".join(collect()).decode()
    assert "# TYPE portwatch_maintenance gauge" in body
    assert "\nportwatch_maintenance{" not in body


def test_promtool_accepts_the_family():
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool is not installed (Debian's prometheus package has it)")
    window(services=[service('odd "name"\\', locations="eu")])
    body = b"".join(collect()).decode()
    assert "\nportwatch_maintenance{" in body
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
