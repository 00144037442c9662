"""A NetBIOS name service node for tests, written from RFC 1001/1002: `NetBIOSServer(names, mac)` on a free UDP port.

    async with NetBIOSServer([("FILESERVER", 0x20, False), ("WORKGROUP", 0x00, True)], "52:54:00:12:34:56") as node:
        node.port, node.requests

It answers a NODE STATUS REQUEST (RFC 1002 4.2.17) for "*" or for one of its names with a NODE
STATUS RESPONSE (4.2.18): its names, each active, B-node, group or unique as configured, then the
statistics block whose first six bytes are the MAC. Requests it does not understand (a malformed
name, another question type) get no answer, as Windows and Samba keep silent. `behaviour` makes it
hostile: "silent", "truncated" (the response cut in the middle of the names), "wrong_id" (answers
with another transaction id first, then correctly), "huge_count" (claims 255 names, sends 2),
"garbage", "negative" (a response with RCODE 5, refused).
"""

from __future__ import annotations

import asyncio
import struct

NBSTAT = 0x0021
CLASS_IN = 0x0001
ACTIVE = 0x0400  # NAME_FLAGS: the name is active (RFC 1002 4.2.18); B-node type is 0
GROUP = 0x8000
STATISTICS_SIZE = 46  # UNIT_ID (6) and the counters that follow it, zero here

Name = tuple[str, int, bool]  # (name, suffix, is a group name)


def decode_name(data: bytes, offset: int) -> tuple[bytes, int] | None:
    """Return the 16-byte NetBIOS name at `offset` (first-level encoded, RFC 1001 14.1) and the offset after it."""
    if offset + 34 > len(data) or data[offset] != 32 or data[offset + 33] != 0:
        return None  # only the empty scope is supported, as in most networks
    encoded = data[offset + 1 : offset + 33]
    if any(not 0x41 <= char <= 0x50 for char in encoded):
        return None
    name = bytes(((encoded[i] - 0x41) << 4) | (encoded[i + 1] - 0x41) for i in range(0, 32, 2))
    return name, offset + 34


class NetBIOSServer(asyncio.DatagramProtocol):
    """Answer node status requests on a UDP port of `host` with `names` and `mac`."""

    def __init__(self, names: list[Name], mac: str, *, host: str = "127.0.0.1", behaviour: str = "normal") -> None:
        self.names = names
        self.mac = bytes.fromhex(mac.replace(":", ""))
        self.host = host
        self.behaviour = behaviour
        self.port = 0
        self.requests: list[bytes] = []  # the names asked about
        self.transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> NetBIOSServer:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.transport.close()

    def datagram_received(self, data: bytes, sender: tuple) -> None:
        if len(data) < 12:
            return
        transaction_id, flags, questions = struct.unpack("!HHH", data[:6])
        if flags & 0x8000 or (flags >> 11) & 0xF != 0 or questions != 1:
            return  # a response, or not a query: a node never answers those
        decoded = decode_name(data, 12)
        if decoded is None or len(data) < decoded[1] + 4:
            return
        name, end = decoded
        if struct.unpack("!HH", data[end : end + 4]) != (NBSTAT, CLASS_IN):
            return
        self.requests.append(name)
        if name != b"*" + b"\0" * 15 and not any(self._padded(entry) == name for entry in self.names):
            return  # not one of ours
        for reply in self.replies(transaction_id, data[12:end]):
            self.transport.sendto(reply, sender)

    def replies(self, transaction_id: int, question_name: bytes) -> list[bytes]:
        """Return the datagrams to send for one request, as `behaviour` says."""
        if self.behaviour == "silent":
            return []
        if self.behaviour == "garbage":
            return [struct.pack("!H", transaction_id) + b"\x84\x00 definitely not NetBIOS"]
        response = self.response(transaction_id, question_name)
        if self.behaviour == "truncated":
            return [response[: len(response) - STATISTICS_SIZE - 10]]
        if self.behaviour == "wrong_id":
            return [self.response(transaction_id ^ 0xFFFF, question_name), response]
        if self.behaviour == "huge_count":
            rdata_at = 12 + len(question_name) + 10
            return [response[:rdata_at] + b"\xff" + response[rdata_at + 1 :]]
        if self.behaviour == "negative":
            return [struct.pack("!HHHHHH", transaction_id, 0x8405, 0, 0, 0, 0)]
        return [response]

    def response(self, transaction_id: int, question_name: bytes) -> bytes:
        """Return a NODE STATUS RESPONSE: R and AA set, one answer whose RR_NAME repeats the question's."""
        entries = b"".join(
            self._padded(entry) + struct.pack("!H", ACTIVE | (GROUP if entry[2] else 0)) for entry in self.names
        )
        statistics = self.mac + b"\0" * (STATISTICS_SIZE - 6)
        rdata = bytes([len(self.names)]) + entries + statistics
        header = struct.pack("!HHHHHH", transaction_id, 0x8400, 0, 1, 0, 0)
        return header + question_name + struct.pack("!HHIH", NBSTAT, CLASS_IN, 0, len(rdata)) + rdata

    @staticmethod
    def _padded(entry: Name) -> bytes:
        name, suffix, _ = entry
        return name.upper().encode("ascii").ljust(15, b" ") + bytes([suffix])
