"""Migrations that bring data along: run for real on a database with history, backwards and forwards."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from monitor.metrics import exposition

pytestmark = pytest.mark.postgres

BEFORE = [("monitor", "0005_summaries_snapshots_counters")]
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def migrate(targets: list[tuple[str, str]]):
    """Migrate to `targets`; return the historical apps there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_0006_stores_the_series_of_every_state_that_was_there(settings):
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        old = migrate(BEFORE)
        service = old.get_model("monitor", "Service").objects.create(
            name="mail", host="mail.test", port=25, protocol="smtp", tls_mode="none", locations="eu,us"
        )
        states = old.get_model("monitor", "ServiceState")
        checks = {"checks": {"up": 3, "down": 1}, "latency": {}}
        states.objects.create(
            service_id=service.id,
            location="eu",
            status="up",
            since=NOW,
            last_checked_at=NOW,
            last_status="up",
            last_phases={"connect": 0.01, "total": 0.05},
            consecutive_successes=3,
            counters=checks,
        )
        states.objects.create(service_id=service.id, location="us", status="down", since=NOW, last_failure="refused")

        new = migrate([("monitor", "0006_state_exposition")])
        stored = {
            row.state.location: row
            for row in new.get_model("monitor", "StateExposition").objects.select_related("state")
        }
        phases = tuple(settings.PORTWATCH_METRICS_HISTOGRAM_PHASES)
        assert set(stored) == {"eu", "us"}
        assert {row.key for row in stored.values()} == {exposition.key("smtp", "mail.test", phases)}
        eu = bytes(stored["eu"].text).decode()
        assert f'portwatch_checks_total{{{exposition.LABELS},outcome="up"}} 3\n' in eu
        assert f"probe_success{{{exposition.LABELS}}} 1\n" in eu
        assert f'portwatch_service_status{{{exposition.LABELS},status="down"}} 1\n' in bytes(stored["us"].text).decode()
    finally:
        migrate(latest)


@pytest.mark.django_db(transaction=True)
def test_0011_drops_the_tls_options_dns_accepted_and_ignored_and_keeps_the_rest():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        old = migrate([("monitor", "0010_alerting_rules")])
        services = old.get_model("monitor", "Service").objects
        resolver = services.create(
            name="resolver",
            host="192.0.2.53",
            protocol="dns",
            options={"query_name": "example.com", "tls_warn_days": 7, "tls_verify": False},
        )
        web = services.create(name="web", host="example.com", protocol="http", options={"tls_warn_days": 7})

        new = migrate([("monitor", "0011_protocol_registry_and_login_password")])
        after = new.get_model("monitor", "Service").objects
        assert after.get(pk=resolver.pk).options == {"query_name": "example.com"}
        assert after.get(pk=web.pk).options == {"tls_warn_days": 7}
        assert after.get(pk=web.pk).login_password_encrypted == ""
    finally:
        migrate(latest)


@pytest.mark.django_db(transaction=True)
def test_0012_stores_the_exposure_verdicts_of_every_active_measured_state_and_its_service():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    minute = dt.timedelta(minutes=1)
    try:
        old = migrate([("monitor", "0011_protocol_registry_and_login_password")])
        services, states = old.get_model("monitor", "Service").objects, old.get_model("monitor", "ServiceState").objects
        results = old.get_model("monitor", "ProbeResult").objects
        mail = services.create(name="mail", host="mail.test", port=25, protocol="smtp", locations="eu,us,ap")
        web = services.create(name="web", host="web.test", port=443, protocol="http", tls_mode="implicit")
        auth = {"extensions": {"AUTH": "PLAIN LOGIN"}}  # offered without TLS
        for location, status in (("eu", "up"), ("ap", "paused")):
            # Both heard Postfix naming its version a minute ago; eu's last slot since was missed, ap was paused.
            results.create(
                service_id=mail.id,
                location=location,
                scheduled_at=NOW - minute,
                started_at=NOW - minute,
                status="up",
                reason="ok",
                banner="220 mail.test ESMTP Postfix (3.7.11)",
            )
            states.create(
                service_id=mail.id,
                location=location,
                status=status,
                since=NOW - minute,
                last_checked_at=NOW - minute,
                last_status="unknown",
                last_failure="missed",
                consecutive_successes=int(status == "up"),
                details=auth,
            )
        states.create(
            service_id=mail.id, location="us", status="down", since=NOW, last_checked_at=NOW, last_status="down"
        )  # refused: reached nothing
        states.create(
            service_id=web.id,
            location="default",
            status="up",
            since=NOW,
            last_checked_at=NOW,
            last_status="up",
            details={"server_header": "nginx"},  # a name without a version
        )
        old.get_model("monitor", "ServiceSummary").objects.create(service_id=web.id, status="up", severity=1, since=NOW)

        new = migrate([("monitor", "0012_exposure_flags")])
        flags = {
            (state.service_id, state.location): (state.reveals_version, state.offers_plaintext_login)
            for state in new.get_model("monitor", "ServiceState").objects.all()
        }
        assert flags == {
            (mail.id, "eu"): (True, True),
            (mail.id, "ap"): (False, False),  # paused: what it heard is history
            (mail.id, "us"): (False, False),
            (web.id, "default"): (False, False),
        }
        summaries = {
            row.service_id: (row.status, row.reveals_version, row.plaintext_login)
            for row in new.get_model("monitor", "ServiceSummary").objects.all()
        }
        assert summaries == {mail.id: ("down", True, True), web.id: ("up", False, False)}
    finally:
        migrate(latest)
