"""Name resolution without the thread pool: the hosts file, resolv.conf, a DNS server on 127.0.0.1, the cache.

Every test points the process-wide resolver at a hosts file and resolv.conf of its own and at a
nameserver on 127.0.0.1, so no test ever asks the machine's real resolvers; the fixture restores
the configuration afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.probes import OptionsError, Status, Target, resolver, run_probe
from monitor.probes.errors import ProbeTimeout, ResolutionError
from monitor.probes.protocols import tcp
from tests.peers.dns_server import DNSServer

TIMEOUT = 2.0
GRACE = 0.5  # the engine promises a result within the timeout plus this
SLOW = 5.0  # how late the slow name's answers come, well past TIMEOUT
SMALL_RESOLVE = 0.5  # a resolve phase this long would mean a probe waited behind the slow name
NOWHERE = "127.0.0.1:9"  # the discard port: nothing answers DNS there, and it is never the real resolver


@dataclass
class Files:
    hosts: Path
    resolv_conf: Path

    def use(self, server: DNSServer | None = None) -> None:
        """Make `server` the process-wide nameserver, with these files."""
        nameservers = [server.address] if server else [NOWHERE]
        resolver.configure(nameservers, hosts_file=str(self.hosts), resolv_conf=str(self.resolv_conf))


@pytest.fixture(autouse=True)
def files(tmp_path: Path):
    previous = resolver.configuration()
    files = Files(tmp_path / "hosts", tmp_path / "resolv.conf")
    files.hosts.write_text("")
    files.resolv_conf.write_text("nameserver 127.0.0.1\n")
    files.use()
    yield files
    resolver.configure(previous.nameservers, previous.hosts_file, previous.resolv_conf)


@contextlib.asynccontextmanager
async def accepting() -> AsyncIterator[int]:
    """Accept TCP connections on 127.0.0.1 and yield the port."""
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def lookup(host: str, family: str = "any", *, timeout: float = TIMEOUT, **kwargs):
    deadline = asyncio.get_running_loop().time() + timeout
    return await resolver.resolve(host, 80, family, deadline=deadline, **kwargs)


async def probe(host: str, port: int, *, timeout: float = TIMEOUT, **raw):
    return await run_probe("tcp", Target(host, port), tcp.Options.from_mapping(raw), timeout=timeout)


def rewrite(path: Path, text: str) -> None:
    """Replace the file's text and move its mtime on, as an editor saving it a second later would."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


async def test_a_name_in_the_hosts_file_resolves_from_it_without_a_query(files):
    files.hosts.write_text("# pinned\n::1 pinned.test\n127.0.0.5   pinned.test alias.test  # both\n")
    async with DNSServer({"pinned.test": {"A": ["127.0.0.9"]}}) as names:
        files.use(names)
        addresses = await lookup("Pinned.Test.")
        by_alias = await lookup("alias.test")

    assert addresses == [(socket.AF_INET, ("127.0.0.5", 80)), (socket.AF_INET6, ("::1", 80, 0, 0))]
    assert by_alias == [(socket.AF_INET, ("127.0.0.5", 80))]
    assert names.queries == []


async def test_the_hosts_file_is_read_again_when_it_changes(files):
    files.hosts.write_text("127.0.0.5 pinned.test\n")
    files.use()
    first = await lookup("pinned.test")
    rewrite(files.hosts, "127.0.0.6 pinned.test\n")
    second = await lookup("pinned.test")

    assert (first, second) == ([(socket.AF_INET, ("127.0.0.5", 80))], [(socket.AF_INET, ("127.0.0.6", 80))])


async def test_a_family_the_hosts_file_lacks_is_asked_of_dns_as_glibc_does(files):
    files.hosts.write_text("127.0.0.5 pinned.test\n")
    async with DNSServer({"pinned.test": {"AAAA": ["::1"]}}) as names:
        files.use(names)
        addresses = await lookup("pinned.test", "ipv6")

    assert addresses == [(socket.AF_INET6, ("::1", 80, 0, 0))]
    assert names.queries == [("udp", "pinned.test.", "AAAA")]


async def test_localhost_resolves_from_the_system_hosts_file():
    async with DNSServer({}) as names:
        resolver.configure([names.address])  # the real /etc/hosts and resolv.conf, our nameserver
        addresses = await lookup("localhost", "ipv4")

    assert addresses == [(socket.AF_INET, ("127.0.0.1", 80))]
    assert names.queries == []


async def test_a_name_resolves_through_the_configured_nameserver_ipv4_first(files):
    records = {"svc.test": {"AAAA": ["::1"], "A": ["127.0.0.1", "127.0.0.2"]}}
    async with DNSServer(records) as names:
        files.use(names)
        addresses = await lookup("svc.test")

    assert addresses == [
        (socket.AF_INET, ("127.0.0.1", 80)),
        (socket.AF_INET, ("127.0.0.2", 80)),
        (socket.AF_INET6, ("::1", 80, 0, 0)),
    ]
    assert sorted(names.queries) == [("udp", "svc.test.", "A"), ("udp", "svc.test.", "AAAA")]


async def test_a_server_refusing_aaaa_still_gives_the_a_addresses(files):
    records = {"svc.test": {"AAAA": ["::1"], "A": ["127.0.0.1"]}}
    async with DNSServer(records, rcodes={"svc.test AAAA": "REFUSED"}) as names:
        files.use(names)
        addresses = await lookup("svc.test")
    assert addresses == [(socket.AF_INET, ("127.0.0.1", 80))]


async def test_a_lost_aaaa_answer_holds_up_the_a_addresses_only_briefly(files):
    records = {"svc.test": {"AAAA": ["::1"], "A": ["127.0.0.1"]}}
    async with DNSServer(records, delays={"svc.test AAAA": SLOW}) as names:
        files.use(names)
        started = time.monotonic()
        addresses = await lookup("svc.test")
        took = time.monotonic() - started
    assert addresses == [(socket.AF_INET, ("127.0.0.1", 80))]
    assert took < resolver.OTHER_FAMILY_WAIT + 0.3


async def test_both_families_refused_is_a_resolution_failure(files):
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"]}}, rcodes={"svc.test": "REFUSED"}) as names:
        files.use(names)
        with pytest.raises(ResolutionError, match=r"cannot resolve svc\.test"):
            await lookup("svc.test")


async def test_search_domains_come_from_resolv_conf_and_follow_its_changes(files):
    records = {"svc.one.test": {"A": ["127.0.0.1"]}, "svc.two.test": {"A": ["127.0.0.2"]}}
    files.resolv_conf.write_text("nameserver 127.0.0.1\nsearch one.test\n")
    async with DNSServer(records) as names:
        files.use(names)
        first = await lookup("svc", "ipv4")
        rewrite(files.resolv_conf, "nameserver 127.0.0.1\nsearch two.test\n")
        second = await lookup("svc", "ipv4")

    assert (first, second) == ([(socket.AF_INET, ("127.0.0.1", 80))], [(socket.AF_INET, ("127.0.0.2", 80))])


async def test_a_slow_name_does_not_time_out_probes_of_other_names(files):
    records = {"slow.test": {"A": ["127.0.0.1"]}, "fast.test": {"A": ["127.0.0.1"]}}
    async with DNSServer(records, delays={"slow.test": SLOW}) as names, accepting() as port:
        files.use(names)
        hosts = ["slow.test"] * 40 + ["fast.test"] * 20 + ["127.0.0.1"] * 20
        started = time.monotonic()
        results = await asyncio.gather(*(probe(host, port) for host in hosts))
        elapsed = time.monotonic() - started

    slow, healthy = results[:40], results[40:]
    assert {(r.status, str(r.failure), r.reason) for r in slow} == {
        (Status.DOWN, "timeout", "timed out resolving slow.test")
    }
    assert [r.reason for r in healthy if r.status is not Status.UP] == []
    assert max(r.phases.resolve for r in healthy) < SMALL_RESOLVE
    assert elapsed < TIMEOUT + GRACE


async def test_nxdomain_is_a_resolution_failure(files):
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"]}}) as names:
        files.use(names)
        result = await probe("nowhere.test", 9)

    assert (result.status, str(result.failure)) == (Status.DOWN, "dns_resolution")
    assert result.reason == "cannot resolve nowhere.test: no such domain (NXDOMAIN)"


async def test_a_name_without_address_records_is_a_resolution_failure(files):
    async with DNSServer({"mail.test": {"MX": ["10 mx.mail.test."]}}) as names:
        files.use(names)
        with pytest.raises(ResolutionError) as raised:
            await lookup("mail.test")

    assert str(raised.value) == "cannot resolve mail.test: no A record and no AAAA record"


async def test_the_deadline_bounds_a_slow_answer(files):
    async with DNSServer({"slow.test": {"A": ["127.0.0.1"]}}, delays={"slow.test": SLOW}) as names:
        files.use(names)
        started = time.monotonic()
        with pytest.raises(ProbeTimeout) as raised:
            await lookup("slow.test", timeout=0.5)
        elapsed = time.monotonic() - started

    assert str(raised.value) == "timed out resolving slow.test"
    assert 0.4 < elapsed < 0.5 + 0.2


async def test_no_query_is_sent_once_the_deadline_has_passed(files):
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"]}}) as names:
        files.use(names)
        with pytest.raises(ProbeTimeout):
            await lookup("svc.test", timeout=-1.0)

    assert names.queries == []


async def test_the_cache_answers_a_second_lookup_without_a_query(files):
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"]}}) as names:
        files.use(names)
        first = await lookup("svc.test")
        asked = len(names.queries)
        second = await lookup("svc.test")

    assert first == second == [(socket.AF_INET, ("127.0.0.1", 80))]
    assert (asked, len(names.queries)) == (2, 2)  # A and AAAA, once


async def test_a_missing_name_is_not_asked_again_while_the_negative_answer_lasts(files):
    async with DNSServer({}) as names:
        files.use(names)
        with pytest.raises(ResolutionError):
            await lookup("nowhere.test")
        asked = len(names.queries)
        with pytest.raises(ResolutionError):
            await lookup("nowhere.test")

    assert asked > 0
    assert len(names.queries) == asked


async def test_an_expired_ttl_means_a_real_query(files):
    async with DNSServer({"svc.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]}}, ttl=0) as names:
        files.use(names)
        await lookup("svc.test")
        await lookup("svc.test")

    assert len(names.queries) == 4


async def test_a_per_service_server_skips_the_hosts_file(files):
    files.hosts.write_text("127.0.0.5 svc.test\n")
    async with DNSServer({"svc.test": {"A": ["127.0.0.7"]}}) as own:
        files.use()
        addresses = await lookup("svc.test", "ipv4", server=own.address)

    assert addresses == [(socket.AF_INET, ("127.0.0.7", 80))]


async def test_each_server_answers_from_a_cache_of_its_own(files):
    async with (
        DNSServer({"svc.test": {"A": ["127.0.0.6"]}}) as system,
        DNSServer({"svc.test": {"A": ["127.0.0.7"]}}) as own,
    ):
        files.use(system)
        answers = [
            await lookup("svc.test", "ipv4", server=own.address),
            await lookup("svc.test", "ipv4"),
            await lookup("svc.test", "ipv4", server=own.address),
        ]

    assert [address for [(_, (address, _))] in answers] == ["127.0.0.7", "127.0.0.6", "127.0.0.7"]
    assert (len(own.queries), len(system.queries)) == (1, 1)


def test_configure_rejects_a_nameserver_that_is_not_an_ip_address():
    with pytest.raises(OptionsError) as raised:
        resolver.configure(["dns.example"])

    assert str(raised.value) == "nameservers: must be an IP address with an optional port, not 'dns.example'"
