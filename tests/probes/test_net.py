"""Name resolution in net.py through the `resolver` option: address fallback, IP families, and failures.

A real DNS server on 127.0.0.1 answers for names under .test; the TCP prober connects to what they
resolve to. All of 127/8 routes to the loopback on Linux, so 127.0.0.2 is a second address where
nothing listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest

from monitor.probes import Status, Target, resolver, run_probe
from monitor.probes.net import resolve
from monitor.probes.protocols import tcp
from tests.peers.dns_server import DNSServer

TIMEOUT = 2.0
SHORT_TIMEOUT = 1.0
GRACE = 0.5


@pytest.fixture(autouse=True)
def fresh_caches():
    """Start each test with empty resolver caches: a later test's server may get an earlier one's port."""
    previous = resolver.configuration()
    resolver.configure(previous.nameservers, previous.hosts_file, previous.resolv_conf)
    yield
    resolver.configure(previous.nameservers, previous.hosts_file, previous.resolv_conf)


@contextlib.asynccontextmanager
async def listening(*hosts: str) -> AsyncIterator[int]:
    """Accept TCP connections on the same free port on each of `hosts`, and yield the port."""
    sockets: list[socket.socket] = []
    port = 0
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sockets.append(sock)
    servers = [await asyncio.start_server(lambda r, w: w.close(), sock=sock) for sock in sockets]
    try:
        yield port
    finally:
        for server in servers:
            server.close()


async def probe(host: str, port: int, dns_server: DNSServer, *, timeout: float = TIMEOUT, **raw):
    options = tcp.Options.from_mapping({"resolver": dns_server.address, **raw})
    return await run_probe("tcp", Target(host, port), options, timeout=timeout)


async def test_it_falls_back_to_the_next_address_when_the_first_refuses():
    async with DNSServer({"svc.test": {"A": ["127.0.0.2", "127.0.0.1"]}}) as names, listening("127.0.0.1") as port:
        result = await probe("svc.test", port, names)

    assert result.status is Status.UP, result.reason
    assert result.address == "127.0.0.1"
    assert result.details["failed_addresses"] == [f"127.0.0.2: connection refused by 127.0.0.2 port {port}"]


async def test_it_reports_every_address_refusing_with_the_last_reason():
    async with DNSServer({"svc.test": {"A": ["127.0.0.2", "127.0.0.3"]}}) as names, listening("127.0.0.1") as port:
        result = await probe("svc.test", port, names, ip_family="ipv4")

    assert (result.status, str(result.failure)) == (Status.DOWN, "refused")
    assert result.reason == f"all 2 addresses of svc.test failed; last: connection refused by 127.0.0.3 port {port}"


async def test_it_asks_the_configured_resolver_for_both_families():
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"]}}) as names, listening("127.0.0.1") as port:
        result = await probe("svc.test", port, names)

    assert result.status is Status.UP, result.reason
    assert sorted(names.queries) == [("udp", "svc.test.", "A"), ("udp", "svc.test.", "AAAA")]


async def test_ip_family_narrows_the_addresses_tried():
    records = {"dual.test": {"AAAA": ["::1"], "A": ["127.0.0.1"]}}
    async with DNSServer(records) as names, listening("127.0.0.1", "::1") as port:
        over_v4 = await probe("dual.test", port, names, ip_family="ipv4")
        asked_for_v4 = list(names.queries)
        over_v6 = await probe("dual.test", port, names, ip_family="ipv6")

    assert (over_v4.status, over_v4.address) == (Status.UP, "127.0.0.1"), over_v4.reason
    assert (over_v6.status, over_v6.address) == (Status.UP, "::1"), over_v6.reason
    assert asked_for_v4 == [("udp", "dual.test.", "A")]
    assert names.queries[1:] == [("udp", "dual.test.", "AAAA")]


async def test_any_family_falls_back_from_ipv4_to_ipv6():
    records = {"dual.test": {"AAAA": ["::1"], "A": ["127.0.0.2"]}}
    async with DNSServer(records) as names, listening("::1") as port:
        result = await probe("dual.test", port, names)

    assert (result.status, result.address) == (Status.UP, "::1"), result.reason
    assert result.details["failed_addresses"] == [f"127.0.0.2: connection refused by 127.0.0.2 port {port}"]


async def test_resolve_lists_ipv4_before_ipv6_with_socket_addresses():
    records = {"dual.test": {"AAAA": ["::1"], "A": ["127.0.0.1", "127.0.0.2"]}}
    async with DNSServer(records) as names:
        options = tcp.Options(resolver=names.address)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        addresses = await resolve("dual.test", 8080, options, deadline=deadline)

    assert addresses == [
        (socket.AF_INET, ("127.0.0.1", 8080)),
        (socket.AF_INET, ("127.0.0.2", 8080)),
        (socket.AF_INET6, ("::1", 8080, 0, 0)),
    ]


async def test_it_reports_a_missing_family_as_a_resolution_failure():
    async with DNSServer({"v4only.test": {"A": ["127.0.0.1"]}}) as names:
        result = await probe("v4only.test", 9, names, ip_family="ipv6")

    assert (result.status, str(result.failure)) == (Status.DOWN, "dns_resolution")
    assert result.reason == "cannot resolve v4only.test: no AAAA record"


async def test_it_reports_nxdomain_as_a_resolution_failure():
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"]}}) as names:
        result = await probe("nowhere.test", 9, names)

    assert (result.status, str(result.failure)) == (Status.DOWN, "dns_resolution")
    assert result.reason == f"cannot resolve nowhere.test: no such domain (NXDOMAIN from {names.address})"


async def test_it_rejects_an_ip_literal_of_the_other_family():
    async with DNSServer({}) as names, listening("127.0.0.1") as port:
        result = await probe("127.0.0.1", port, names, ip_family="ipv6")

    assert (result.status, str(result.failure)) == (Status.DOWN, "dns_resolution")
    assert result.reason == "127.0.0.1 is not an IPv6 address"
    assert names.queries == []  # a literal is never looked up


async def test_it_times_out_when_the_resolver_stays_silent():
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"]}}, silent=True) as names:
        started = time.monotonic()
        result = await probe("svc.test", 9, names, timeout=SHORT_TIMEOUT)
        elapsed = time.monotonic() - started

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")
    assert result.reason == f"timed out resolving svc.test through {names.address}"
    assert elapsed < SHORT_TIMEOUT + GRACE


async def test_a_deadline_spent_resolving_is_a_timeout_before_any_connect():
    # Found at 30,000 services: an overloaded loop woke a probe after its deadline, between
    # resolving and connecting, and the engine raised instead of saying it timed out.
    from monitor.probes.errors import ConnectTimeout
    from monitor.probes.net import open_connection
    from monitor.probes.timing import PhaseClock

    async with listening("127.0.0.1") as port:
        spent = asyncio.get_running_loop().time() - 0.1
        with pytest.raises(ConnectTimeout, match=f"timed out before connecting to 127.0.0.1 port {port}"):
            await open_connection("127.0.0.1", port, tcp.Options(), deadline=spent, clock=PhaseClock())
