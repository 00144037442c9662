"""The tftp prober against a real tftpd-hpa and hostile fakes that answer from a new port, as TFTP servers do."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import pytest

from monitor.probes import Status, Target, run_probe
from monitor.probes.options import OptionsError
from monitor.probes.protocols import tftp
from tests.peers.tftpd import Tftpd, running_tftpd

TIMEOUT = 5.0
SMALL = os.urandom(1000)
TWO_BLOCKS = os.urandom(1024)  # ends with an empty DATA block
LARGE = os.urandom(200 * 1024)
MAX_FAKE_PACKETS = 1000  # a fake stops by itself after this many


@pytest.fixture(scope="module")
def tftpd() -> Iterator[Tftpd]:
    with running_tftpd({"pxelinux.0": SMALL, "two-blocks.bin": TWO_BLOCKS, "large.img": LARGE}) as server:
        yield server


async def probe(port: int, timeout: float = TIMEOUT, **raw):
    return await run_probe("tftp", Target("127.0.0.1", port), tftp.Options.from_mapping(raw), timeout=timeout)


@pytest.mark.peers
async def test_it_reads_a_small_file_whole(tftpd):
    result = await probe(tftpd.port, filename="pxelinux.0")

    assert result.status is Status.UP, result.reason
    assert (result.details["complete"], result.details["size"]) == (True, 1000)
    assert result.details["sha256"] == hashlib.sha256(SMALL).hexdigest()


@pytest.mark.peers
async def test_a_file_of_whole_blocks_ends_with_an_empty_block(tftpd):
    result = await probe(tftpd.port, filename="two-blocks.bin")

    assert result.status is Status.UP, result.reason
    assert (result.details["complete"], result.details["size"]) == (True, 1024)


@pytest.mark.peers
async def test_it_stops_at_max_bytes(tftpd):
    result = await probe(tftpd.port, filename="large.img", max_bytes=4096)

    assert result.status is Status.UP, result.reason
    assert (result.details["complete"], result.details["bytes_read"]) == (False, 4096)
    assert "size" not in result.details


@pytest.mark.peers
async def test_a_missing_file_is_up_unless_it_is_required(tftpd):
    answered = await probe(tftpd.port, filename="missing.img")
    required = await probe(tftpd.port, filename="missing.img", require_file=True)

    assert (answered.status, str(answered.failure)) == (Status.WARNING, "file_not_found")
    assert (required.status, str(required.failure)) == (Status.DOWN, "file_not_found")
    assert required.reason == "missing.img is not on the server; TFTP error 1 (file not found): File not found"


@pytest.mark.peers
async def test_a_file_that_is_not_readable_by_all_is_server_rejected(tftpd):
    (tftpd.root / "private.img").write_bytes(b"secret")
    (tftpd.root / "private.img").chmod(0o600)  # tftpd-hpa serves only world-readable files

    result = await probe(tftpd.port, filename="private.img")

    assert str(result.failure) == "server_rejected"
    assert result.reason.startswith("the server refused to send private.img; TFTP error 2 (access violation): ")


class FakeTransfer(asyncio.DatagramProtocol):
    """One transfer of a hostile server, on a port of its own, towards the client that asked."""

    def __init__(self, behaviour: str, heard: list[bytes]) -> None:
        self.behaviour, self.heard, self.sent = behaviour, heard, 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.behaviour == "garbage":
            self.send(b"HTTP/1.1 400 Bad Request\r\n")
        elif self.behaviour == "same_block":
            for _ in range(MAX_FAKE_PACKETS):
                self.send(tftp.packet_of(tftp.DATA, 1, b"x" * 512))
        elif self.behaviour == "endless":
            self.send(tftp.packet_of(tftp.DATA, 1, b"x" * 512))

    def datagram_received(self, data: bytes, addr) -> None:
        self.heard.append(data)
        opcode, block = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
        if self.behaviour == "endless" and opcode == tftp.ACK:  # a file that never ends
            self.send(tftp.packet_of(tftp.DATA, block + 1, b"x" * 512))

    def send(self, data: bytes) -> None:
        if self.sent < MAX_FAKE_PACKETS:
            self.sent += 1
            self.transport.sendto(data)


class FakeListener(asyncio.DatagramProtocol):
    """Port 69's part: each read request starts a FakeTransfer from a new port."""

    def __init__(self, behaviour: str, heard: list[bytes], transfers: list) -> None:
        self.behaviour, self.heard, self.transfers = behaviour, heard, transfers

    def datagram_received(self, data: bytes, addr) -> None:
        self.heard.append(data)
        if self.behaviour != "silent":
            loop = asyncio.get_running_loop()
            self.transfers.append(
                loop.create_task(
                    loop.create_datagram_endpoint(
                        lambda: FakeTransfer(self.behaviour, self.heard), local_addr=("127.0.0.1", 0), remote_addr=addr
                    )
                )
            )


@contextlib.asynccontextmanager
async def fake_tftpd(behaviour: str) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Yield the port of a hostile TFTP server and the list of datagrams it heard."""
    loop = asyncio.get_running_loop()
    heard: list[bytes] = []
    transfers: list[asyncio.Task] = []
    listener, _ = await loop.create_datagram_endpoint(
        lambda: FakeListener(behaviour, heard, transfers), local_addr=("127.0.0.1", 0)
    )
    try:
        yield listener.get_extra_info("sockname")[1], heard
    finally:
        listener.close()
        for transport, _ in await asyncio.gather(*transfers):
            transport.close()


async def test_an_endless_file_is_cut_at_max_bytes_and_the_server_told():
    async with fake_tftpd("endless") as (port, heard):
        result = await probe(port, filename="endless", max_bytes=10240)
        await asyncio.sleep(0.05)  # let the fake take in the closing ERROR

    assert result.status is Status.UP, result.reason
    assert (result.details["complete"], result.details["bytes_read"]) == (False, 10240)
    assert heard[-1].startswith(b"\x00\x05\x00\x00stopped after 10240 bytes")


async def test_a_block_sent_over_and_over_is_a_protocol_error():
    async with fake_tftpd("same_block") as (port, _):
        result = await probe(port, filename="boot.img")

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        f"{tftp.MAX_REPEATS + 1} DATA blocks came again or out of order (block 1)",
    )


async def test_garbage_from_the_server_is_a_protocol_error():
    async with fake_tftpd("garbage") as (port, _):
        result = await probe(port, filename="boot.img")

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        r"the answer is not a TFTP DATA or ERROR packet: HTTP/1.1 400 Bad Request\r\n",
    )


async def test_a_silent_server_times_out():
    async with fake_tftpd("silent") as (port, heard):
        result = await probe(port, timeout=1.0, filename="boot.img")

    assert str(result.failure) == "timeout"
    assert heard == [b"\x00\x01boot.img\x00octet\x00"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tftp://boot.example/pxelinux.0", {"filename": "pxelinux.0"}),
        ("tftp://boot.example/efi/grub%20x64.efi;mode=octet", {"filename": "efi/grub x64.efi"}),
        ("tftp://boot.example/", {}),
    ],
)
def test_the_url_path_is_the_file_name(url, expected):
    assert tftp.url_options(urllib.parse.urlsplit(url)) == expected


def test_it_refuses_a_url_in_netascii_mode():
    with pytest.raises(OptionsError) as raised:
        tftp.url_options(urllib.parse.urlsplit("tftp://boot.example/motd;mode=netascii"))

    assert raised.value.message == "only mode=octet is supported, not mode=netascii"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({}, "filename", "is required: the file to read, e.g. tftp://host/pxelinux.0"),
        ({"filename": "a\0b"}, "filename", "must be at most 255 characters without control characters"),
        ({"filename": "a", "max_bytes": 0}, "max_bytes", "must be between 1 and 16777216, not 0"),
    ],
)
def test_it_refuses_options_it_cannot_use(raw, field, message):
    with pytest.raises(OptionsError) as raised:
        tftp.Options.from_mapping(raw)

    assert (raised.value.field, raised.value.message) == (field, message)
