"""Readers: uptime and latency over windows equal the raw truth, whatever they are read from, in few queries."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitor import readers
from monitor.daemon.recording import Outcome, record
from monitor.models import DailyRollup, HourlyRollup, ProbeResult, Service
from monitor.models.history import PHASES
from monitor.probes import Failure, Phases, Result, Status
from monitor.readers import Uptime
from tests.daemon.test_rollups import NOW, PAIRS, by_hand, make_history, make_service, raw_rows, roll_up_history

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MINUTE, HOUR, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(days=1)
UNTIL = NOW - 7 * MINUTE  # inside the stretch not rolled up yet
WINDOWS = readers.WINDOWS
UP = Result(Status.UP, None, "ok", Phases(connect=0.01, total=0.02))
DOWN = Result(Status.DOWN, Failure.REFUSED, "refused", Phases(connect=0.001, total=0.001))
MISSED = Result(Status.UNKNOWN, Failure.MISSED, "no worker took the slot", Phases())


def history(days: int) -> dict[str, Service]:
    """`days` of results every 23 minutes, rolled up as the daemon would have; the last hour or so stays raw."""
    start = NOW - days * DAY
    services = make_history(start, NOW, dt.timedelta(minutes=23))
    roll_up_history(start, NOW)
    return services


@pytest.fixture
def month() -> dict[str, Service]:
    return history(31)


@pytest.fixture
def week() -> dict[str, Service]:
    return history(9)


def truth(service: Service, location: str, since: dt.datetime, until: dt.datetime) -> Uptime:
    rows = raw_rows(service, location, since, until)
    up = sum(row.status in ("up", "warning") for row in rows)
    unknown = sum(row.status == "unknown" for row in rows)
    return Uptime(up=up, down=len(rows) - up - unknown, unknown=unknown)


def pairs_of(services: dict[str, Service]) -> list[tuple[int, str]]:
    return [(services[name].id, location) for name, location in PAIRS]


def summed(pairs: list[tuple[int, str]], windows=WINDOWS, now=UNTIL) -> dict:
    """Return what `uptimes()` sums in SQL for each pair: {window: Uptime}, or None for a pair lacking a rollup."""
    plans = readers._plans(windows, now)
    sums = readers._Summed(pairs, plans, readers._mine(pairs))
    raw = readers._RawCounts(sums.raw_condition(), readers._bounds(plans))
    return {pair: None if sums.lacks(pair) else sums.uptimes(pair, raw) for pair in pairs}


def period_by_period(pairs: list[tuple[int, str]], windows=WINDOWS, now=UNTIL) -> dict:
    """Return what `uptimes()` reads for a pair lacking a rollup: each window added up period by period."""
    plans = readers._plans(windows, now)
    history = readers._History(pairs, plans)
    raw = readers._RawCounts(history.raw_condition(), readers._bounds(plans))
    return {pair: history.uptimes(pair, raw) for pair in pairs}


def test_uptime_counts_unknown_results_apart_from_up_and_down():
    counts = Uptime(up=6, down=2, unknown=2)
    assert (counts.total, counts.uptime, counts.coverage) == (10, 0.75, 0.8)
    assert (Uptime().uptime, Uptime().coverage, Uptime(unknown=3).uptime, Uptime(unknown=3).coverage) == (
        None,
        None,
        None,
        0.0,
    )


@pytest.mark.parametrize("age", [10 * MINUTE, 3 * HOUR, 2 * DAY], ids=["raw", "hourly", "daily"])
def test_missed_slots_count_apart_whether_read_from_raw_results_or_rollups(age):
    service = make_service("alpha")
    start = NOW.replace(minute=0) - age  # 11:50: raw; 09:00: an hourly rollup; two days ago: a daily one
    results = [UP] * 6 + [DOWN] * 2 + [MISSED] * 2
    record([Outcome(service.id, "default", start + n * MINUTE, start + n * MINUTE, r) for n, r in enumerate(results)])
    roll_up_history(NOW - 3 * DAY, NOW)
    counts = readers.uptime(service.id, "default", 7 * DAY, now=NOW)
    assert (counts, counts.uptime, counts.coverage) == (Uptime(up=6, down=2, unknown=2), 0.75, 0.8)


def test_uptime_and_latency_over_each_window_equal_the_raw_truth(month):
    pairs = pairs_of(month)
    uptimes = readers.uptimes(pairs, now=UNTIL)
    summaries = readers.latency_summaries(pairs, now=UNTIL)
    for name, location in PAIRS:
        pair = (month[name].id, location)
        for window in WINDOWS:
            assert uptimes[pair][window] == truth(month[name], location, UNTIL - window, UNTIL)
            expected = by_hand(raw_rows(month[name], location, UNTIL - window, UNTIL))[3]
            for phase in PHASES:
                for stat in ("min", "avg", "max"):
                    assert summaries[pair][window][phase][stat] == expected[phase][stat]


def test_service_ids_stand_for_each_of_their_locations(week):
    by_pair = readers.uptimes([week["alpha"].id], (DAY,), now=UNTIL)
    assert by_pair == readers.uptimes([(week["alpha"].id, "default"), (week["alpha"].id, "eu")], (DAY,), now=UNTIL)
    assert set(by_pair) == {(week["alpha"].id, "default"), (week["alpha"].id, "eu")}


def test_uptime_reads_rollups_and_survives_the_raw_results_being_pruned(month):
    since = UNTIL - 30 * DAY
    expected = {pair: truth(month[pair[0]], pair[1], since.replace(minute=0), UNTIL) for pair in PAIRS}
    ProbeResult.objects.filter(started_at__lt=NOW - 2 * DAY).delete()
    for name, location in PAIRS:
        # The first, partial hour's raw rows are gone: the window counts that whole hour from its rollup.
        assert readers.uptime(month[name].id, location, 30 * DAY, now=UNTIL) == expected[(name, location)]


def test_a_day_without_its_daily_rollup_is_read_from_its_hourly_rollups(week):
    day = NOW.replace(hour=0) - 5 * DAY
    expected = {pair: truth(week[pair[0]], pair[1], UNTIL - 7 * DAY, UNTIL) for pair in PAIRS}
    DailyRollup.objects.filter(start=day).delete()
    ProbeResult.objects.filter(started_at__gte=day, started_at__lt=day + DAY).delete()  # so only hours can say
    uptimes = readers.uptimes(pairs_of(week), (7 * DAY,), now=UNTIL)
    for name, location in PAIRS:
        assert uptimes[(week[name].id, location)][7 * DAY] == expected[(name, location)]


def test_an_hour_without_its_hourly_rollup_is_read_from_its_raw_results(week):
    day = NOW.replace(hour=0) - 5 * DAY
    expected = {pair: truth(week[pair[0]], pair[1], UNTIL - 7 * DAY, UNTIL) for pair in PAIRS}
    DailyRollup.objects.filter(start=day).delete()
    HourlyRollup.objects.filter(start=day + 3 * HOUR).delete()
    uptimes = readers.uptimes(pairs_of(week), (7 * DAY,), now=UNTIL)
    for name, location in PAIRS:
        assert uptimes[(week[name].id, location)][7 * DAY] == expected[(name, location)]


def test_a_partial_first_day_whose_hours_were_pruned_counts_whole_from_its_daily_rollup(week):
    first_day = (UNTIL - 7 * DAY).replace(hour=0, minute=0)
    expected = {pair: truth(week[pair[0]], pair[1], first_day, UNTIL) for pair in PAIRS}
    ProbeResult.objects.filter(started_at__lt=first_day + DAY).delete()
    HourlyRollup.objects.filter(start__lt=first_day + DAY).delete()
    for name, location in PAIRS:
        assert readers.uptime(week[name].id, location, 7 * DAY, now=UNTIL) == expected[(name, location)]


@pytest.mark.parametrize(
    "now",
    [UNTIL, NOW - 5 * HOUR - 17 * MINUTE, NOW.replace(hour=0), NOW - 23 * HOUR + 11 * MINUTE],
    ids=["latest", "hours-ago", "midnight", "a-day-ago"],
)
def test_sums_in_sql_equal_the_period_by_period_reading_when_rollups_are_complete(month, now):
    pairs = pairs_of(month)
    assert summed(pairs, now=now) == period_by_period(pairs, now=now)


@pytest.mark.parametrize(
    ("model", "start"),
    [(DailyRollup, NOW.replace(hour=0) - 5 * DAY), (HourlyRollup, (UNTIL - 7 * DAY).replace(minute=0) + 3 * HOUR)],
    ids=["a-whole-day", "an-hour-of-the-partial-first-day"],
)
def test_only_the_pair_missing_a_rollup_is_read_period_by_period(week, model, start):
    pairs = pairs_of(week)
    model.objects.filter(service=week["alpha"], location="eu", start=start).delete()
    assert [pair for pair, counts in summed(pairs, (DAY, 7 * DAY)).items() if counts is None] == [
        (week["alpha"].id, "eu")
    ]
    expected = {
        (week[name].id, location): {7 * DAY: truth(week[name], location, UNTIL - 7 * DAY, UNTIL)}
        for name, location in PAIRS
    }
    assert readers.uptimes(pairs, (7 * DAY,), now=UNTIL) == expected


def test_sums_in_sql_count_a_pruned_first_hour_whole_as_the_period_by_period_reading_does(month):
    ProbeResult.objects.filter(started_at__lt=NOW - 2 * DAY).delete()
    pairs = pairs_of(month)
    assert summed(pairs) == period_by_period(pairs)


def test_sums_in_sql_count_a_first_day_whose_hours_were_pruned_whole_as_the_period_by_period_reading_does(week):
    first_day = (UNTIL - 7 * DAY).replace(hour=0, minute=0)
    ProbeResult.objects.filter(started_at__lt=first_day + DAY).delete()
    HourlyRollup.objects.filter(start__lt=first_day + DAY).delete()
    pairs = pairs_of(week)
    assert summed(pairs, (DAY, 7 * DAY)) == period_by_period(pairs, (DAY, 7 * DAY))


def test_uptime_reads_rollups_in_one_query_with_one_row_per_pair_and_table(week):
    with CaptureQueriesContext(connection) as captured:
        readers.uptimes(pairs_of(week), (DAY, 7 * DAY), now=UNTIL)
    reads = [query["sql"] for query in captured if "rollup" in query["sql"] and "MAX(" not in query["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(reads[0])
        rows = cursor.fetchall()
    assert (len(reads), len(rows), len(captured)) == (1, 2 * len(PAIRS), 3)  # pairs given: no locations query


def test_uptime_of_a_window_without_probes_is_none():
    service = make_service("alpha")
    counts = readers.uptime(service.id, "default", DAY, now=NOW)
    assert (counts, counts.uptime, counts.coverage) == (Uptime(), None, None)
    assert readers.latency_summary(service.id, "default", DAY, now=NOW) == {}


def test_current_states_are_keyed_by_service_and_location():
    alpha, beta = make_service("alpha"), make_service("beta")
    record([Outcome(service.id, "eu", NOW, NOW, UP) for service in (alpha, beta)])
    states = readers.current_states([alpha.id])
    assert list(states) == [(alpha.id, "eu")]
    assert states[(alpha.id, "eu")].last_status == "up"
    assert set(readers.current_states()) == {(alpha.id, "eu"), (beta.id, "eu")}


def test_bulk_readers_take_the_same_number_of_queries_for_3_services_as_for_300():
    services = [
        Service.objects.create(name=f"s{n}", host="127.0.0.1", port=25, protocol="tcp", locations="default,eu")
        for n in range(300)
    ]
    moments = [NOW - age for age in (40 * DAY, 29 * DAY, 8 * DAY, 5 * DAY, DAY + 3 * HOUR, 3 * HOUR, 10 * MINUTE)]
    results = [UP, DOWN, MISSED, UP, UP, DOWN, MISSED]
    record(
        [
            Outcome(service.id, location, at, at, result)
            for service in services
            for location in ("default", "eu")
            for at, result in zip(moments, results, strict=True)
        ]
    )
    roll_up_history(NOW - DAY, NOW)
    DailyRollup.objects.filter(start=(NOW - 5 * DAY).replace(hour=0)).delete()  # a day read from its hours

    def queries(ids: list[int]) -> list[int]:
        counts = []
        for read in (
            lambda: readers.uptimes(ids, now=NOW),
            lambda: readers.latency_summaries(ids, now=NOW),
            lambda: readers.current_states(ids),
        ):
            with CaptureQueriesContext(connection) as captured:
                read()
            counts.append(len(captured))
        return counts

    few, many = queries([service.id for service in services[:3]]), queries([service.id for service in services])
    assert few == many
    assert many == [4 + 2, 5, 1]  # uptime: 2 more when pairs lack a rollup, here all (no results most days)
    sample = readers.uptimes([services[-1].id], now=NOW)[(services[-1].id, "eu")]
    assert sample[30 * DAY] == Uptime(up=2, down=2, unknown=2)


@pytest.mark.parametrize("module", ["readers", "readers_sums", "stats"])
def test_readers_never_import_the_daemons_writers(module):
    tree = ast.parse((Path(readers.__file__).parent / f"{module}.py").read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name and name.startswith("monitor.daemon")]
