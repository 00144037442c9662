"""Uptime snapshots: the figures a live read gives, read back in one query, never used once stale."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitor import readers
from monitor.daemon import snapshots
from monitor.daemon.rollups import single_run
from monitor.models import ProbeResult, Service, UptimeSnapshot
from tests.daemon.test_rollups import NOW, make_history, roll_up_history

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MINUTE, DAY = dt.timedelta(minutes=1), dt.timedelta(days=1)
AT = NOW - 7 * MINUTE  # inside the stretch not rolled up yet: the windows' tails come from raw results


@pytest.fixture
def fleet() -> dict[str, Service]:
    """Nine days of history for two services (alpha at two locations), rolled up as the daemon does."""
    services = make_history(NOW - 9 * DAY, NOW, dt.timedelta(minutes=23))
    roll_up_history(NOW - 9 * DAY, NOW)
    return services


def pairs_of(services: dict[str, Service]) -> list[tuple[int, str]]:
    """Every location of every service: (beta, eu) too, which has no results."""
    return [(service.id, location) for service in services.values() for location in service.location_list]


def test_a_snapshot_holds_what_a_live_read_gives_at_its_moment(fleet):
    assert snapshots.refresh(AT) == len(pairs_of(fleet))
    live = readers.uptimes(pairs_of(fleet), readers.WINDOWS, AT)
    recent, as_of = readers.recent_uptimes(pairs_of(fleet), AT + MINUTE)
    assert recent == live
    assert as_of == AT
    assert any(uptime.unknown and uptime.down for by_window in recent.values() for uptime in by_window.values())
    assert UptimeSnapshot.objects.count() == 4
    assert recent[fleet["beta"].id, "eu"] == dict.fromkeys(readers.WINDOWS, readers.Uptime())


def test_a_fresh_snapshot_is_read_in_one_query_and_results_after_it_wait_for_the_next_refresh(fleet):
    pairs = pairs_of(fleet)
    snapshots.refresh(AT)
    before = readers.uptimes(pairs, readers.WINDOWS, AT)
    alpha = fleet["alpha"]
    ProbeResult.objects.create(
        service=alpha, location="default", scheduled_at=AT, started_at=AT, status="down", reason="refused"
    )
    with CaptureQueriesContext(connection) as queries:
        recent, as_of = readers.recent_uptimes(pairs, AT + MINUTE)
    assert len(queries) == 1
    assert (recent, as_of) == (before, AT)
    live = readers.uptimes(pairs, readers.WINDOWS, AT + MINUTE)
    assert live[alpha.id, "default"][DAY].down == before[alpha.id, "default"][DAY].down + 1
    snapshots.refresh(AT + MINUTE)
    assert readers.recent_uptimes(pairs, AT + MINUTE) == (live, AT + MINUTE)


def test_a_stale_snapshot_is_ignored_and_the_pairs_are_read_live(fleet):
    pairs = pairs_of(fleet)
    snapshots.refresh(AT - readers.SNAPSHOT_MAX_AGE - MINUTE)
    recent, as_of = readers.recent_uptimes(pairs, AT)
    assert as_of == AT
    assert recent == readers.uptimes(pairs, readers.WINDOWS, AT)
    assert recent != dict(readers.uptimes(pairs, readers.WINDOWS, AT - readers.SNAPSHOT_MAX_AGE - MINUTE))


def test_a_snapshot_from_after_the_moment_asked_for_is_not_used(fleet):
    pairs = pairs_of(fleet)
    snapshots.refresh(AT)
    recent, as_of = readers.recent_uptimes(pairs, AT - 2 * dt.timedelta(hours=1))
    assert as_of == AT - 2 * dt.timedelta(hours=1)
    assert recent == readers.uptimes(pairs, readers.WINDOWS, AT - 2 * dt.timedelta(hours=1))


def test_a_pair_added_since_the_refresh_is_read_live_beside_the_snapshot(fleet):
    snapshots.refresh(AT)
    added = Service.objects.create(name="gamma", host="127.0.0.1", port=25, protocol="tcp")
    ProbeResult.objects.create(
        service=added, location="default", scheduled_at=AT, started_at=AT, status="up", reason="ok"
    )
    pairs = [*pairs_of(fleet), (added.id, "default")]
    recent, as_of = readers.recent_uptimes(pairs, AT + MINUTE)
    assert recent[added.id, "default"][DAY] == readers.Uptime(up=1)
    assert as_of == AT  # the oldest figure shown
    assert list(recent) == pairs


def test_pairs_that_are_gone_lose_their_snapshot(fleet):
    snapshots.refresh(AT)
    alpha = fleet["alpha"]
    alpha.locations = "default"
    alpha.save()
    fleet["beta"].delete()
    assert snapshots.refresh(AT + MINUTE) == 1  # of four
    assert list(UptimeSnapshot.objects.values_list("service_id", "location", "computed_at")) == [
        (alpha.id, "default", AT + MINUTE)
    ]


def test_paused_services_keep_their_snapshot(fleet):
    beta = fleet["beta"]
    beta.enabled = False
    beta.save()
    snapshots.refresh(AT)
    assert UptimeSnapshot.objects.filter(service=beta).count() == 2


def test_a_refresh_writes_in_chunks_of_a_bounded_size(fleet, monkeypatch):
    monkeypatch.setattr(snapshots, "ROWS_PER_WRITE", 1)
    assert snapshots.refresh(AT) == len(pairs_of(fleet))
    assert readers.recent_uptimes(pairs_of(fleet), AT)[0] == readers.uptimes(pairs_of(fleet), readers.WINDOWS, AT)


def test_the_whole_fleet_read_by_time_alone_equals_reading_it_pair_by_pair(fleet):
    Service.objects.create(name="gamma", host="127.0.0.1", port=25, protocol="tcp")  # no history at all
    everyone = readers.uptimes(None, readers.WINDOWS, AT)
    assert len(everyone) == 5
    for pair, by_window in everyone.items():
        assert readers.uptimes([pair], readers.WINDOWS, AT)[pair] == by_window


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_refresh_while_another_runs_does_nothing(fleet):
    with single_run(snapshots.ADVISORY_LOCK) as alone:
        assert alone
        # The advisory lock is per session: a second connection is what another worker would hold.
        from django.db import connections

        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [snapshots.ADVISORY_LOCK])
                assert cursor.fetchone()[0] is False
        finally:
            other.close()
    assert snapshots.refresh(AT) == len(pairs_of(fleet))
