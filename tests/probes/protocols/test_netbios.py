"""The NetBIOS prober against a node status responder written from RFC 1002, on free 127.0.0.1 and ::1 ports."""

from __future__ import annotations

import socket

import pytest

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import netbios
from tests.peers.netbios_server import NetBIOSServer, decode_name

TIMEOUT = 2.0
NAMES = [("FILESERVER", 0x00, False), ("FILESERVER", 0x20, False), ("WORKGROUP", 0x00, True), ("WORKGROUP", 0x1E, True)]
MAC = "52:54:00:12:34:56"


async def probe(port: int, *, host: str = "127.0.0.1", timeout: float = TIMEOUT, **raw):
    return await run_probe("netbios", Target(host, port), netbios.Options.from_mapping(raw), timeout=timeout)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_it_reports_the_names_and_mac_of_the_node():
    async with NetBIOSServer(NAMES, MAC) as node:
        result = await probe(node.port)

    assert result.status is Status.UP, result.reason
    assert node.requests == [b"*" + b"\0" * 15]
    assert result.details["mac"] == MAC
    assert result.details["names"][1] == {
        "name": "FILESERVER",
        "suffix": "0x20",
        "type": "unique",
        "node_type": "B",
        "flags": ["active"],
    }
    assert [(n["name"], n["suffix"], n["type"]) for n in result.details["names"]] == [
        ("FILESERVER", "0x00", "unique"),
        ("FILESERVER", "0x20", "unique"),
        ("WORKGROUP", "0x00", "group"),
        ("WORKGROUP", "0x1e", "group"),
    ]
    assert (result.details["computer_name"], result.details["workgroup"]) == ("FILESERVER", "WORKGROUP")


async def test_it_reaches_a_node_on_ipv6_loopback():
    async with NetBIOSServer(NAMES, MAC, host="::1") as node:
        result = await probe(node.port, host="::1")

    assert result.status is Status.UP, result.reason
    assert result.address == "::1"


async def test_it_finds_an_expected_name_whatever_its_case():
    async with NetBIOSServer(NAMES, MAC) as node:
        result = await probe(node.port, expect_name="fileserver")

    assert result.status is Status.UP, result.reason


async def test_it_is_down_when_the_expected_name_is_missing():
    async with NetBIOSServer(NAMES, MAC) as node:
        result = await probe(node.port, expect_name="PRINTSERVER")

    assert (result.status, str(result.failure)) == (Status.DOWN, "keyword_missing")
    assert result.reason == "the node does not hold the name 'PRINTSERVER'; it holds FILESERVER, WORKGROUP"


async def test_it_reports_a_node_that_refuses():
    async with NetBIOSServer(NAMES, MAC, behaviour="negative") as node:
        result = await probe(node.port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "server_rejected")
    assert result.reason == "the node answered with error 5 (refused)"


async def test_it_reports_nothing_listening_as_refused():
    result = await probe(free_udp_port())

    assert (result.status, str(result.failure)) == (Status.DOWN, "refused")


async def test_it_times_out_on_a_silent_node():
    async with NetBIOSServer(NAMES, MAC, behaviour="silent") as node:
        result = await probe(node.port, timeout=0.5)

    assert (result.status, str(result.failure)) == (Status.DOWN, "timeout")


async def test_it_ignores_a_reply_to_another_transaction():
    async with NetBIOSServer(NAMES, MAC, behaviour="wrong_id") as node:
        result = await probe(node.port)

    assert result.status is Status.UP, result.reason
    assert len(result.details["names"]) == 4


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("truncated", "the answer claims 119 bytes of data but 63 arrived"),
        ("huge_count", "the answer claims 255 names, more than its 119 bytes can hold"),
        ("garbage", "the answer record's name is malformed or runs past the end of the response"),
    ],
)
async def test_it_reports_malformed_responses(behaviour, reason):
    async with NetBIOSServer(NAMES, MAC, behaviour=behaviour) as node:
        result = await probe(node.port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "protocol_error")
    assert result.reason == reason


async def test_it_strips_control_characters_from_names():
    async with NetBIOSServer([("EVIL\x1b[2J", 0x00, False)], MAC) as node:
        result = await probe(node.port)

    assert result.details["names"][0]["name"] == "EVIL?[2J"


def test_the_request_encodes_the_wildcard_as_rfc_1002_says():
    request = netbios.node_status_request(0x1234)

    assert request[:12] == bytes.fromhex("123400000001000000000000")
    assert request[12:46] == b"\x20CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00"  # RFC 1002 4.2.17's "*" encoding
    assert decode_name(request, 12) == (b"*" + b"\0" * 15, 46)
    assert request[46:] == b"\x00\x21\x00\x01"


def test_it_refuses_a_name_longer_than_netbios_allows():
    with pytest.raises(OptionsError) as caught:
        netbios.Options.from_mapping({"expect_name": "A" * 16})

    assert str(caught.value) == f"expect_name: must be 1 to 15 characters, as NetBIOS names are, not {'A' * 16!r}"
