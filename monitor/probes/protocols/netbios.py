"""NetBIOS name service probe (137/UDP): a node status query for "*" (RFC 1002 4.2.17), its names and MAC reported.

The answer (RFC 1002 4.2.18) lists every name the node has registered, each with its suffix (the 16th
byte: 0x00 workstation, 0x20 file server, 0x1D master browser, ...), whether it is a group or a unique
name, and its flags; then the node's MAC address. `expect_name` makes the probe down (`keyword_missing`)
unless the node holds that name. Parsing is bounded: at most `MAX_NAMES` names are read, and every
length is checked against what arrived.
"""

from __future__ import annotations

import dataclasses
import os
import struct

from monitor.probes.datagram import Channel, converse
from monitor.probes.errors import KeywordMissing, ProtocolError, ServerRejected
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Result
from monitor.probes.session import Exchange, Target
from monitor.probes.text import printable

NBSTAT = 0x0021  # QUESTION_TYPE and RR_TYPE of a node status request and response
CLASS_IN = 0x0001
MAX_REPLY = 1500  # bytes of a reply read; 255 names of 18 bytes and the statistics fit well within it
MAX_NAMES = 255  # NUM_NAMES is one byte, so this is every name; named to say the loop is bounded
MAX_LABELS = 64  # labels of an RR_NAME read before calling it malformed
NODE_TYPES = ("B", "P", "M", "H")  # NAME_FLAGS' ONT field
RCODES = {1: "format error", 2: "server failure", 3: "name not found", 4: "unsupported request", 5: "refused"}


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    expect_name: str | None = None  # a name the node must hold, e.g. "FILESERVER"; case does not matter

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expect_name is not None and not 1 <= len(self.expect_name) <= 15:
            raise OptionsError(
                "expect_name", f"must be 1 to 15 characters, as NetBIOS names are, not {self.expect_name!r}"
            )


def encode_name(name: bytes, suffix: int = 0) -> bytes:
    """Return `name` padded to 16 bytes in first-level encoding (RFC 1001 14.1), as a one-label domain name.

    "*" is padded with NULs, as the node status wildcard must be; other names with spaces.
    """
    padded = name.ljust(16, b"\0") if name == b"*" else name.upper().ljust(15, b" ") + bytes([suffix])
    encoded = bytes(char for byte in padded for char in (0x41 + (byte >> 4), 0x41 + (byte & 0x0F)))
    return bytes([32]) + encoded + b"\0"


def node_status_request(transaction_id: int) -> bytes:
    """Return a NODE STATUS REQUEST for "*": opcode query, no flags, one question."""
    header = struct.pack("!HHHHHH", transaction_id, 0x0000, 1, 0, 0, 0)
    return header + encode_name(b"*") + struct.pack("!HH", NBSTAT, CLASS_IN)


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(state: Exchange, channel: Channel) -> None:
        transaction_id = int.from_bytes(os.urandom(2), "big")
        await channel.send(node_status_request(transaction_id), what="the node status request")

        def answers_us(data: bytes, sender: tuple) -> bool:  # a response (R bit) to our transaction
            return len(data) >= 4 and int.from_bytes(data[:2], "big") == transaction_id and data[2] & 0x80 != 0

        reply, _ = await channel.receive_matching(answers_us, what="the node status response", limit=MAX_REPLY)
        names, mac = parse_response(reply)
        record(state, names, mac)
        if options.expect_name is not None and not any(
            entry["name"].upper() == options.expect_name.upper() for entry in names
        ):
            held = ", ".join(sorted({entry["name"] for entry in names})) or "no names"
            raise KeywordMissing(f"the node does not hold the name {options.expect_name!r}; it holds {held}")

    return await converse(target, options, dialogue, deadline=deadline)


def parse_response(data: bytes) -> tuple[list[dict], str]:
    """Return the names and MAC address of a NODE STATUS RESPONSE; raise ProtocolError for anything malformed."""
    if len(data) < 12:
        raise ProtocolError(f"the response is {len(data)} bytes, shorter than a NetBIOS header")
    flags, _, answers = struct.unpack("!HHH", data[2:8])
    if flags & 0x000F:
        rcode = flags & 0x000F
        raise ServerRejected(f"the node answered with error {rcode} ({RCODES.get(rcode, 'unknown')})")
    if answers < 1:
        raise ProtocolError("the response carries no answer record")
    offset = skip_name(data, 12)
    if offset + 10 > len(data):
        raise ProtocolError("the response ends inside its answer record's header")
    rr_type, _, _, rdlength = struct.unpack("!HHIH", data[offset : offset + 10])
    if rr_type != NBSTAT:
        raise ProtocolError(f"the answer record has type 0x{rr_type:04x}, not NBSTAT (0x0021)")
    rdata = data[offset + 10 : offset + 10 + rdlength]
    if len(rdata) < rdlength or rdlength < 1:
        raise ProtocolError(f"the answer claims {rdlength} bytes of data but {len(rdata)} arrived")
    count = rdata[0]
    if 1 + 18 * count > len(rdata):
        raise ProtocolError(f"the answer claims {count} names, more than its {len(rdata)} bytes can hold")
    names = [parse_entry(rdata[1 + 18 * index : 19 + 18 * index]) for index in range(min(count, MAX_NAMES))]
    unit_id = rdata[1 + 18 * count : 7 + 18 * count]  # the statistics start with the MAC; some nodes send none
    return names, ":".join(f"{byte:02x}" for byte in unit_id) if len(unit_id) == 6 else ""


def skip_name(data: bytes, offset: int) -> int:
    """Return the offset after the domain name at `offset`: labels, or a compression pointer (RFC 883)."""
    for _ in range(MAX_LABELS):
        if offset >= len(data):
            break
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length
    raise ProtocolError("the answer record's name is malformed or runs past the end of the response")


def parse_entry(entry: bytes) -> dict:
    """Return one NODE_NAME entry: the name without padding, its suffix, group or unique, and its flags."""
    flags = int.from_bytes(entry[16:18], "big")
    states = [
        word for bit, word in ((0x1000, "deregistering"), (0x0800, "conflict"), (0x0400, "active")) if flags & bit
    ]
    if flags & 0x0200:
        states.append("permanent")
    return {
        # Names are OEM code page bytes, not UTF-8: as Latin-1 every byte stays one character, and its
        # padding (spaces; NULs from some stacks) goes before "?" could stand in for a NUL.
        "name": printable(entry[:15].rstrip(b" \0").decode("latin-1"), replacement="?"),
        "suffix": f"0x{entry[15]:02x}",
        "type": "group" if flags & 0x8000 else "unique",
        "node_type": NODE_TYPES[(flags >> 13) & 0x3],
        "flags": states,
    }


def record(state: Exchange, names: list[dict], mac: str) -> None:
    """Put the names and MAC into the details, and the node's own name and workgroup where it shows them."""
    state.details["names"] = names
    state.details["mac"] = mac
    for key, kind in (("computer_name", "unique"), ("workgroup", "group")):
        found = next((n["name"] for n in names if n["suffix"] == "0x00" and n["type"] == kind), None)
        if found is not None:
            state.details[key] = found


PROTOCOL = Protocol(
    key="netbios",
    label="NetBIOS name service",
    summary='a node status query for "*": the names the node holds and its MAC address',
    options=Options,
    probe=probe,
    schemes=(Scheme("netbios", "none", 137),),
    transport="datagram",
    flags=(Flag("--expect-name", "expect_name", "a NetBIOS name the node must hold", metavar="NAME"),),
    shown=(("computer_name", "Computer name"), ("workgroup", "Workgroup"), ("mac", "MAC"), ("names", "Names")),
)
