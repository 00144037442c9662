"""Cumulative counters on the state: every recorded slot once, by outcome, and a latency histogram of the good ones."""

from __future__ import annotations

import datetime as dt

import pytest

from monitor.daemon.recording import Outcome, record
from monitor.probes import Failure, Phases, Result, Status
from monitor.stats import LATENCY_BUCKETS, counted
from tests.daemon.test_recording import T0, at, down, make_service, state_of, up, warning

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def test_a_value_on_a_bucket_bound_counts_in_that_bucket_as_prometheus_le_says():
    counters = counted({}, "up", "", {"total": 0.25})
    buckets = counters["latency"]["total"]["buckets"]
    assert buckets == [int(bound >= 0.25) for bound in LATENCY_BUCKETS]
    assert buckets[LATENCY_BUCKETS.index(0.25)] == 1 and buckets[LATENCY_BUCKETS.index(0.1)] == 0


def test_a_value_past_the_last_bound_is_only_in_the_count():
    counters = counted({}, "up", "", {"total": 12.0})
    assert counters["latency"]["total"] == {"buckets": [0] * len(LATENCY_BUCKETS), "count": 1, "sum": 12.0}


def test_every_outcome_is_counted_and_only_good_results_reach_the_histogram():
    service = make_service(failure_threshold=1)
    internal = Result(Status.UNKNOWN, Failure.INTERNAL_ERROR, "prober crashed", Phases())
    record([at(service, 0, up(0.004)), at(service, 1, warning()), at(service, 2, down())])
    record([Outcome.missed(service.id, "default", T0 + dt.timedelta(minutes=3), "no worker took the slot")])
    record([at(service, 4, internal), at(service, 5, up(0.300))])
    counters = state_of(service).counters
    assert counters["checks"] == {"up": 2, "warning": 1, "down": 1, "missed": 1, "error": 1}
    total = counters["latency"]["total"]
    assert total["count"] == 3  # two up and one warning; the refused one is not a latency
    assert total["sum"] == pytest.approx(0.004 + 0.004 + 0.300)
    assert total["buckets"] == [2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]
    assert set(counters["latency"]) == {"resolve", "connect", "tls", "processing", "transfer", "total"}


def test_a_late_slot_counts_once_without_moving_the_state_and_a_repeated_one_not_at_all():
    service = make_service(failure_threshold=1)
    record([at(service, 5, up())])
    record([at(service, 3, down())])  # older than the newest applied: stored and counted, not applied
    record([at(service, 3, down())])  # the same slot again: nothing
    state = state_of(service)
    assert state.status == "up"
    assert state.counters["checks"] == {"up": 1, "down": 1}


def test_missed_slots_are_counted_by_reason_as_the_daemon_words_it():
    service = make_service()
    record([Outcome.missed(service.id, "default", T0, "not probed: no worker is serving location 'default'")])
    record(
        [
            Outcome.missed(
                service.id, "default", T0 + dt.timedelta(minutes=1), "not probed: the slot was never dispatched"
            )
        ]
    )
    record([Outcome.missed(service.id, "default", T0 + dt.timedelta(minutes=2), "not probed: something new")])
    assert state_of(service).counters["missed"] == {"unserved": 1, "never_dispatched": 1, "other": 1}
