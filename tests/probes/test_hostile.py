"""Hostile peers: every misbehaviour ends in a `down` result of the right kind, on time, in bounded memory."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from monitor.probes import PROTOCOLS, Status, Target, run_probe
from tests.peers import hostile
from tests.peers.hostile import HostileServer

TIMEOUT = 1.0
GRACE = 0.5  # the engine promises a result within the timeout plus this
TALKERS = ("smtp", "pop3", "imap", "http")  # protocols that must understand what the server says


def options_for(protocol: str):
    raw = {"read_banner": True} if protocol == "tcp" else {}
    return PROTOCOLS[protocol].options.from_mapping(raw)


async def probe(server: HostileServer, protocol: str, tls: str = "none"):
    started = time.monotonic()
    result = await run_probe(protocol, Target("127.0.0.1", server.port, tls), options_for(protocol), timeout=TIMEOUT)
    return result, time.monotonic() - started


CASES = [
    *[(hostile.silent, protocol, "timeout") for protocol in (*TALKERS, "tcp")],
    *[(hostile.slow, protocol, "timeout") for protocol in (*TALKERS, "tcp")],
    *[(hostile.endless_line, protocol, "response_too_large") for protocol in (*TALKERS, "tcp")],
    *[(hostile.flood, protocol, "response_too_large") for protocol in TALKERS],
    *[(hostile.garbage, protocol, "protocol_error") for protocol in TALKERS],
    *[(hostile.close_mid_dialogue, protocol, "connection_closed") for protocol in TALKERS],
]


@pytest.mark.parametrize(("behaviour", "protocol", "failure"), CASES, ids=[f"{b.__name__}-{p}" for b, p, _ in CASES])
async def test_it_reports_a_hostile_peer_as_down_on_time(behaviour, protocol, failure):
    async with HostileServer(behaviour, protocol) as server:
        result, elapsed = await probe(server, protocol)

    assert (result.status, str(result.failure)) == (Status.DOWN, failure), result.reason
    assert elapsed < TIMEOUT + GRACE


async def test_it_reports_plaintext_after_starttls_as_a_handshake_failure():
    async with HostileServer(hostile.starttls_then_plaintext, "smtp") as server:
        result, elapsed = await probe(server, "smtp", tls="starttls")

    assert str(result.failure) == "tls_handshake", result.reason
    assert elapsed < TIMEOUT + GRACE


@pytest.mark.parametrize("protocol", [*TALKERS, "tcp"])
async def test_it_keeps_memory_bounded_under_a_flood(protocol):
    behaviour = hostile.endless_line if protocol == "tcp" else hostile.flood
    async with HostileServer(behaviour, protocol) as server:
        tracemalloc.start()
        try:
            result, _ = await probe(server, protocol)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert result.status is Status.DOWN
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while reading a flood"


async def test_it_says_what_it_was_waiting_for_when_the_server_stays_silent():
    async with HostileServer(hostile.silent, "smtp") as server:
        result, _ = await probe(server, "smtp")

    assert result.reason == "timed out waiting for the SMTP greeting"
