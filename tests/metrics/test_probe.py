"""One /probe run without Django: blackbox's timeout rules, and the guard's own name lookup."""

from __future__ import annotations

import pytest

from monitor.metrics import guard
from monitor.metrics.modules import map_module
from monitor.metrics.probe import MAX_TIMEOUT, Policy, Refused, probe_timeout, run
from monitor.probes import Failure, Status
from tests.peers.dns_server import DNSServer


def test_timeouts_follow_blackbox_capped_for_gunicorn():
    assert probe_timeout(5.0, "10") == 5.0  # the module's, within the scrape's
    assert probe_timeout(15.0, "10") == 9.5  # the scrape's less blackbox's 0.5 s offset
    assert probe_timeout(None, None) == MAX_TIMEOUT  # blackbox would allow 119.5 s
    with pytest.raises(ValueError, match=r"^X-Prometheus-Scrape-Timeout-Seconds 0.4 leaves no time"):
        probe_timeout(None, "0.4")


async def test_a_name_the_guard_cannot_resolve_is_that_failure_and_no_connection():
    module = map_module("m", {"prober": "tcp"})
    async with DNSServer({}) as server:  # NXDOMAIN for every name
        target, options = module.request("nowhere.test:25")
        options = options.__class__.from_mapping({"resolver": server.address})
        result = await run(module, target, options, timeout=2, policy=Policy(guard.parse_allow_list(["10.0.0.0/8"])))

    assert (result.status, result.failure) == (Status.DOWN, Failure.DNS_RESOLUTION)
    assert result.phases.resolve > 0


async def test_a_name_resolving_to_a_refused_address_is_refused():
    module = map_module("m", {"prober": "tcp"})
    async with DNSServer({"db.test.": {"A": ["127.0.0.1"]}}) as server:
        target, options = module.request("db.test:5432")
        options = options.__class__.from_mapping({"resolver": server.address})
        own = guard.Service("database", "DATABASE_URL", "127.0.0.1", 5432)
        with pytest.raises(Refused, match=r"^db.test port 5432 is Portwatch's own database \(DATABASE_URL\)"):
            await run(module, target, options, timeout=2, policy=Policy(own=(own,)))
