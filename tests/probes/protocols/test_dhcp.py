"""The DHCP prober against a DHCP server written from RFC 2131/2132, on free 127.0.0.1 ports.

The server answers clients and relays on free ports too, so the probe's `client_port` is set to
the one the server answers on (68 and 67 in the field; binding those needs root and a free port).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import dhcp
from tests.peers.dhcp_server import DHCPServer

TIMEOUT = 2.0


def free_udp_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@contextlib.asynccontextmanager
async def dhcp_server(**settings):
    client_port, relay_port = free_udp_ports(2)
    async with DHCPServer(client_port=client_port, relay_port=relay_port, **settings) as server:
        yield server


async def probe(server: DHCPServer, *, message: str = "inform", timeout: float = TIMEOUT, **raw):
    port = server.client_port if message == "inform" else server.relay_port
    options = dhcp.Options.from_mapping({"message": message, "client_port": port, **raw})
    return await run_probe("dhcp", Target("127.0.0.1", server.port), options, timeout=timeout)


async def test_it_reports_the_configuration_a_server_acks_to_an_inform():
    async with dhcp_server() as server:
        result = await probe(server)

    assert result.status is Status.UP, result.reason
    assert server.received == ["DHCPINFORM"]
    details = result.details
    assert (details["message"], details["reply"], details["server_id"]) == ("DHCPINFORM", "DHCPACK", "127.0.0.1")
    assert (details["subnet_mask"], details["routers"], details["domain"]) == ("255.0.0.0", ["127.0.0.1"], "lab.test")
    assert details["dns_servers"] == ["127.0.0.53", "127.0.0.54"]
    assert "lease_time" not in details  # RFC 2131: no lease time in an ACK to an INFORM
    assert "offered_address" not in details


async def test_it_reports_an_offer_and_never_requests_the_address():
    async with dhcp_server() as server:
        result = await probe(server, message="discover")

    assert result.status is Status.UP, result.reason
    assert (result.details["reply"], result.details["offered_address"]) == ("DHCPOFFER", "127.0.0.100")
    assert (result.details["lease_time"], result.details["network"]) == (3600, "127.0.0.0/8")
    assert server.received == ["DHCPDISCOVER"]  # no DHCPREQUEST: nothing was leased


async def test_a_discover_from_a_network_the_server_does_not_serve_times_out():
    async with dhcp_server(network="10.0.0.0/8") as server:
        result = await probe(server, message="discover", timeout=0.5)

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")
    assert result.reason == f"no answer from 127.0.0.1 port {server.port} while waiting for the DHCPOFFER"


async def test_it_reports_a_nak():
    async with dhcp_server(behaviour="nak") as server:
        result = await probe(server)

    assert (result.status, str(result.failure)) == (Status.DOWN, "server_rejected")
    assert result.reason == "the server answered DHCPNAK (requested address not available)"


async def test_it_reports_a_reply_of_the_wrong_type():
    async with dhcp_server(behaviour="wrong_type") as server:
        result = await probe(server, message="discover")

    assert (result.status, str(result.failure)) == (Status.DOWN, "protocol_error")
    assert result.reason == "the server answered DHCPACK, not DHCPOFFER"


async def test_it_times_out_on_a_silent_server():
    async with dhcp_server(behaviour="silent") as server:
        result = await probe(server, timeout=0.5)

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")
    assert server.received == ["DHCPINFORM"]


async def test_it_reports_nothing_listening_as_refused():
    closed_port, client_port = free_udp_ports(2)
    result = await run_probe(
        "dhcp", Target("127.0.0.1", closed_port), dhcp.Options(client_port=client_port), timeout=TIMEOUT
    )

    assert (result.status, str(result.failure)) == (Status.DOWN, "refused")


async def test_it_ignores_a_reply_to_another_transaction():
    async with dhcp_server(behaviour="wrong_xid") as server:
        result = await probe(server)

    assert result.status is Status.UP, result.reason


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("garbage", "the reply (290 bytes) is not a DHCP message: no magic cookie"),
        ("overrun", "option 15 runs past the end of the reply"),
    ],
)
async def test_it_reports_malformed_replies(behaviour, reason):
    async with dhcp_server(behaviour=behaviour) as server:
        result = await probe(server)

    assert (result.status, str(result.failure)) == (Status.DOWN, "protocol_error")
    assert result.reason == reason


async def test_probes_running_at_once_take_turns_on_the_reply_port():
    # Every DHCP probe of a host is answered on one port: at once, they must wait for it, not fail.
    async with dhcp_server() as server:
        results = await asyncio.gather(*(probe(server) for _ in range(20)))

    assert [(result.status, result.failure) for result in results] == [(Status.UP, None)] * 20
    assert server.received == ["DHCPINFORM"] * 20


async def test_a_reply_port_held_until_the_deadline_is_unknown_not_down():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        async with dhcp_server() as server:
            result = await probe(server, client_port=port, timeout=0.5)

    assert (result.status, str(result.failure)) == (Status.UNKNOWN, "reply_port_busy")
    assert result.reason == f"127.0.0.1 port {port} stayed busy with other DHCP probes until the deadline"
    assert server.received == []  # nothing was sent without a port to hear the answer on


def test_the_inform_carries_our_address_and_asks_for_the_usual_options():
    options = dhcp.Options()
    request = dhcp.build_request(options, 0xDEADBEEF, "192.0.2.7")

    assert request[:8] == bytes.fromhex("01010600deadbeef")
    assert (request[12:16], request[24:28]) == (bytes([192, 0, 2, 7]), bytes(4))  # ciaddr set, giaddr empty
    assert request[236:240] == dhcp.MAGIC_COOKIE
    assert request[240:243] == bytes([53, 1, 8])
    assert options.reply_port == 68 and dhcp.Options(message="discover").reply_port == 67


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"message": "request"}, "message: must be inform or discover, not 'request'"),
        ({"client_port": 0}, "client_port: must be between 1 and 65535, not 0"),
        ({"ip_family": "ipv6"}, "ip_family: DHCP is IPv4 (DHCPv6 is another protocol); use any or ipv4"),
        ({"client_mac": "zz"}, "client_mac: must be a MAC address such as 02:70:77:00:00:01, not 'zz'"),
    ],
)
def test_it_refuses_bad_options(raw, message):
    with pytest.raises(OptionsError) as caught:
        dhcp.Options.from_mapping(raw)

    assert str(caught.value) == message
