"""TFTP probe (RFC 1350): a read request for one file in octet mode, read up to `max_bytes` and reported.

The server answers from a new port (its transfer ID), so the socket is not connected and every ACK
goes to the port the first answer came from; datagrams from other ports are skipped (bounded).

- A DATA block shorter than 512 bytes ends the file: `details["size"]` and `details["sha256"]`.
- At `max_bytes` (or the first block past it) the probe stops, tells the server with an ERROR packet
  so it does not retransmit for seconds, and is up with `details["complete"] = False`.
- ERROR 1 (file not found) is the failure kind `file_not_found`: the server is alive and answered,
  so the status is `warning` (counted as up, and shown), unless `require_file` is set (a boot server
  whose image went missing), then down.
- Any other ERROR is `server_rejected` with its code and message.
- One read request is sent, as the other datagram probes send one query: a lost datagram is a timeout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import urllib.parse
from typing import Any

from monitor.probes.datagram import Channel, converse
from monitor.probes.errors import ProbeError, ProtocolError, ServerRejected
from monitor.probes.net import preview
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Result, Status
from monitor.probes.session import Exchange, Target
from monitor.probes.text import printable

RRQ, DATA, ACK, ERROR = 1, 3, 4, 5
BLOCK_SIZE = 512  # RFC 1350's only block size; no blksize option is asked for
MAX_FILENAME_CHARS = 255
DEFAULT_MAX_BYTES = 64 * 1024
MAX_MAX_BYTES = 16 * 1024 * 1024  # 32768 blocks: block numbers never wrap around at 65535
MAX_REPEATS = 20  # DATA packets repeated or out of order in one transfer before giving up
MAX_MESSAGE_CHARS = 200  # of an ERROR packet's message, in reasons
ERROR_NAMES = {
    0: "not defined", 1: "file not found", 2: "access violation", 3: "disk full", 4: "illegal operation",
    5: "unknown transfer ID", 6: "file already exists", 7: "no such user", 8: "option refused",
}  # fmt: skip
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: refused in the file name we send


class FileNotFound(ProbeError):
    """The server answered ERROR 1: alive and answering (a warning), unless the file is required (down)."""

    failure = "file_not_found"

    def __init__(self, message: str, *, required: bool) -> None:
        super().__init__(message)
        self.status = Status.DOWN if required else Status.WARNING


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    filename: str | None = None  # the file to read; a tftp:// URL's path
    max_bytes: int = DEFAULT_MAX_BYTES  # bytes read before the transfer is stopped
    require_file: bool = False  # a missing file is down, not a warning (see the module docstring)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.filename:
            raise OptionsError("filename", "is required: the file to read, e.g. tftp://host/pxelinux.0")
        if len(self.filename) > MAX_FILENAME_CHARS or CONTROL.search(self.filename):
            message = f"must be at most {MAX_FILENAME_CHARS} characters without control characters"
            raise OptionsError("filename", message)
        if not 1 <= self.max_bytes <= MAX_MAX_BYTES:
            raise OptionsError("max_bytes", f"must be between 1 and {MAX_MAX_BYTES}, not {self.max_bytes}")


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(state: Exchange, channel: Channel) -> None:
        state.details["filename"] = options.filename
        request = RRQ.to_bytes(2, "big") + options.filename.encode() + b"\0octet\0"
        await channel.send(request, what="the read request")
        tid: int | None = None  # the server's port for this transfer, known from its first answer
        expected, received, repeats, digest = 1, 0, 0, hashlib.sha256()
        while True:
            packet, sender = await channel.receive_matching(
                lambda data, sender, tid=tid: tid is None or sender[1] == tid, what=f"DATA block {expected}"
            )
            tid = sender[1]
            opcode, number, body = parse(packet)
            if opcode == ERROR:
                raise server_error(number, body, options)
            if number != expected:
                repeats += 1
                if repeats > MAX_REPEATS:
                    raise ProtocolError(f"{repeats} DATA blocks came again or out of order (block {number})")
                if 0 < number == expected - 1:  # our ACK was lost and the server sent the block again
                    await channel.send(packet_of(ACK, number), what="an ACK", port=tid)
                continue
            if len(body) > BLOCK_SIZE:
                raise ProtocolError(f"DATA block {number} has {len(body)} bytes, more than {BLOCK_SIZE}")
            received += len(body)
            digest.update(body)
            state.details["bytes_read"] = received
            if len(body) < BLOCK_SIZE:
                await channel.send(packet_of(ACK, number), what="the last ACK", port=tid)
                state.details.update(complete=True, size=received, sha256=digest.hexdigest())
                return
            if received >= options.max_bytes:
                stop = packet_of(ERROR, 0, f"stopped after {received} bytes by a monitor".encode() + b"\0")
                await channel.send(stop, what="the ERROR that ends the transfer", port=tid)
                state.details["complete"] = False
                return
            await channel.send(packet_of(ACK, number), what="an ACK", port=tid)
            expected += 1

    return await converse(target, options, dialogue, deadline=deadline, connected=False)


def packet_of(opcode: int, number: int, body: bytes = b"") -> bytes:
    """Return a TFTP packet: opcode, block number or error code, then the body."""
    return opcode.to_bytes(2, "big") + number.to_bytes(2, "big") + body


def parse(packet: bytes) -> tuple[int, int, bytes]:
    """Return (opcode, block number or error code, body) of a DATA or ERROR packet; raise ProtocolError otherwise."""
    opcode = int.from_bytes(packet[:2], "big")
    if len(packet) < 4 or opcode not in (DATA, ERROR):
        raise ProtocolError(f"the answer is not a TFTP DATA or ERROR packet: {preview(packet)}")
    return opcode, int.from_bytes(packet[2:4], "big"), packet[4:]


def server_error(code: int, body: bytes, options: Options) -> ProbeError:
    """Return the error an ERROR packet stands for, with its code, name and the server's message."""
    message = printable(body.split(b"\0", 1)[0], limit=MAX_MESSAGE_CHARS)
    said = f"TFTP error {code} ({ERROR_NAMES.get(code, 'unknown code')}): {message or 'no message'}"
    if code == 1:
        return FileNotFound(f"{options.filename} is not on the server; {said}", required=options.require_file)
    return ServerRejected(f"the server refused to send {options.filename}; {said}")


def url_options(parts: urllib.parse.SplitResult) -> dict[str, Any]:
    """Return the file a tftp URL names: tftp://host/pxelinux.0, or RFC 3617's tftp://host/file;mode=octet."""
    if parts.query:
        raise OptionsError("url", "tftp URLs take no query; the path is the file name")
    path, _, mode = parts.path.partition(";mode=")
    if mode and mode.lower() != "octet":
        raise OptionsError("url", f"only mode=octet is supported, not mode={mode}")
    name = urllib.parse.unquote(path.removeprefix("/"))
    return {"filename": name} if name else {}


PROTOCOL = Protocol(
    key="tftp",
    label="TFTP",
    summary="read one file in octet mode, up to a byte limit; a missing file is a warning unless it is required",
    options=Options,
    probe=probe,
    transport="datagram",
    schemes=(Scheme("tftp", "none", 69),),
    url_options=url_options,
    flags=(
        Flag("--max-bytes", "max_bytes", "bytes of the file to read before stopping (default 65536)", metavar="N"),
        Flag("--require-file", "require_file", "a missing file is down, not a warning", value=True),
    ),
    failures={"file_not_found": "the server answered that the file is not there (a warning; down with require_file)"},
    shown=(
        ("filename", "File"),
        ("complete", "Read to the end"),
        ("size", "Size (bytes)"),
        ("bytes_read", "Bytes read"),
        ("sha256", "SHA-256"),
    ),
)
