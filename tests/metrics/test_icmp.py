"""The icmp prober's blackbox series: from real echo replies of 127.0.0.1 and ::1, at /probe, at /metrics for a stored
service, and side by side with Debian's real blackbox_exporter pinging the same address.

The kernel answers the echo requests on loopback; pinging needs an ICMP socket, unprivileged where
net.ipv4.ping_group_range admits the process's group, else raw (root or CAP_NET_RAW), for us and the exporter alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon.recording import Outcome, record
from monitor.metrics import exposition as rendering
from monitor.metrics.blackbox import exposition, fnv1a, series
from monitor.metrics.exposition import LABELS, SEPARATOR, PairState
from monitor.models import Service, ServiceState
from monitor.probes import Failure, Phases, Result, Status, Target, parse_options, run_probe
from tests.conftest import need
from tests.metrics.conftest import TOKEN, parse, value
from tests.metrics.test_blackbox_exporter import blackbox

ICMP_PHASES = {"resolve", "setup", "rtt"}
SAME_VALUES = {"probe_success", "probe_ip_protocol", "probe_ip_addr_hash"}
# blackbox writes the reply's TTL when its socket tells it; the engine does not record it (blackbox.py says why)
NOT_RECORDED = {"probe_icmp_reply_hop_limit"}
NOW = dt.datetime.now(dt.UTC)


def can_ping() -> bool:
    """Return whether this process may open an ICMP socket, unprivileged or raw."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return True
        except PermissionError:
            continue
    return False


@pytest.fixture
def ping_allowed() -> None:
    need(can_ping(), "no ICMP socket: run as root, grant CAP_NET_RAW or widen net.ipv4.ping_group_range")


async def ping(host: str, **raw) -> Result:
    result = await run_probe("icmp", Target(host, 0), parse_options("icmp", raw), timeout=3.0)
    assert result.status is Status.UP, result.reason
    return result


def answer(result: Result, host: str) -> dict:
    text = exposition(series(result, "icmp", host=host)).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def phases(family) -> dict[str, float]:
    return {sample.labels["phase"]: sample.value for sample in family.samples}


# Result -> series ------------------------------------------------------------------------------------------


async def test_the_rtt_is_the_average_round_trip_and_setup_the_sockets_making(ping_allowed):
    result = await ping("127.0.0.1", count=3, interval=0.05)
    families = answer(result, "127.0.0.1")

    durations = phases(families["probe_icmp_duration_seconds"])
    assert set(durations) == ICMP_PHASES
    assert durations["rtt"] == result.details["rtt_avg"] > 0
    assert (durations["resolve"], durations["setup"]) == (result.phases.resolve, result.phases.connect)
    assert families["probe_success"].samples[0].value == 1
    assert families["probe_ip_addr_hash"].samples[0].value == fnv1a(bytes([127, 0, 0, 1]))
    assert "probe_icmp_reply_hop_limit" not in families  # not recorded: left out, not made up
    assert "probe_failed_due_to_regex" not in families  # a tcp and http family, not icmp's


def test_without_a_reply_the_rtt_is_zero_as_blackbox_leaves_it():
    details = {"socket": "raw", "sent": 1, "received": 0, "loss_percent": 100.0}
    result = Result(Status.DOWN, Failure.TIMEOUT, "no echo reply", Phases(connect=0.001, total=1.0), details=details)
    families = answer(result, "192.0.2.1")

    assert phases(families["probe_icmp_duration_seconds"]) == {"resolve": 0, "setup": 0.001, "rtt": 0}
    assert families["probe_success"].samples[0].value == 0
    assert families["portwatch_probe_failure_info"].samples[0].labels == {"kind": "timeout"}


# /probe --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "version"), [("127.0.0.1", 4), ("::1", 6)])
async def test_probe_with_an_icmp_module_pings_the_bare_host(ping_allowed, scrape, target, version):
    families = parse(await scrape("icmp", target))

    assert value(families, "probe_success") == 1
    assert value(families, "probe_ip_protocol") == version
    assert set(phases(families["probe_icmp_duration_seconds"])) == ICMP_PHASES
    assert value(families, "probe_icmp_duration_seconds", phase="rtt") > 0


# /metrics for a stored service -----------------------------------------------------------------------------


async def test_a_rendering_of_a_stored_icmp_state_reads_the_rtt_from_its_details(ping_allowed):
    result = await ping("127.0.0.1", count=2, interval=0.05)
    phases_ = {name: getattr(result.phases, name) for name in (*Phases.NAMES, "total")}
    state = PairState("up", "", NOW, "127.0.0.1", False, 1, "up", phases_, None, result.details, {})

    text = rendering.render("icmp", "127.0.0.1", ("total",), state).replace(LABELS, 'service="ping"')
    families = {family.name: family for family in text_string_to_metric_families(text.replace(SEPARATOR, ""))}

    assert phases(families["probe_icmp_duration_seconds"])["rtt"] == result.details["rtt_avg"] > 0


@pytest.mark.django_db
def test_metrics_has_the_icmp_series_of_a_stored_service(ping_allowed):
    svc = Service.objects.create(name="ping", host="127.0.0.1", port=None, protocol="icmp", options={"count": 1})
    results = [asyncio.run(ping("127.0.0.1", count=1)) for _ in range(2)]
    first = NOW - 2 * dt.timedelta(seconds=60)
    slots = [first + i * dt.timedelta(seconds=60) for i in range(2)]
    record([Outcome(svc.id, "default", slot, slot, result) for slot, result in zip(slots, results, strict=True)])

    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    body = b"".join(response.streaming_content).decode()
    rtts = [
        sample
        for family in text_string_to_metric_families(body)
        if family.name == "probe_icmp_duration_seconds"
        for sample in family.samples
        if sample.labels["service"] == "ping" and sample.labels["phase"] == "rtt"
    ]

    assert response.status_code == 200
    assert [sample.value for sample in rtts] == [ServiceState.objects.get(service=svc).details["rtt_avg"]]
    assert rtts[0].value > 0


# Side by side with blackbox_exporter -----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
async def test_both_answer_an_icmp_module_with_the_same_families_and_labels(ping_allowed, exporter, scrape, target):
    theirs = await asyncio.to_thread(blackbox, exporter, "icmp", target)
    ours = parse(await scrape("icmp", target))

    assert value(theirs, "probe_success") == 1, "the exporter could not ping"
    blackboxs = {name for name in ours if not name.startswith("portwatch_")}
    assert blackboxs == set(theirs) - NOT_RECORDED
    for name in blackboxs:
        mine, family = ours[name], theirs[name]
        assert (mine.type, mine.documentation) == (family.type, family.documentation), name
        assert labelled(mine) == labelled(family), name
        if name in SAME_VALUES:
            assert [s.value for s in mine.samples] == [s.value for s in family.samples], name


def labelled(family) -> set[tuple]:
    """Return each sample's labels, in no order: Go's client sorts a family's samples by label value."""
    return {tuple(sorted(sample.labels.items())) for sample in family.samples}
