"""Plain UDP probe: send one datagram and expect a reply, optionally matching a pattern or bytes.

For services with no prober of their own that answer a datagram (QQ on 8000 and 4000, game
servers, echo). A UDP port has no handshake, so the reply is the only proof of life: ICMP port
unreachable is `refused`, silence is `timeout` (a dropped datagram and a dead server look alike).
"""

from __future__ import annotations

import dataclasses
import re

from monitor.probes.datagram import MAX_DATAGRAM, Channel, converse
from monitor.probes.errors import KeywordMissing
from monitor.probes.net import preview
from monitor.probes.options import ConnectionOptions, OptionsError, check_pattern, payload
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Result
from monitor.probes.session import Exchange, Target

MAX_PREVIEW_BYTES = 200  # of the reply, escaped, in details and reasons


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    send: str | None = None  # text to send; backslash escapes such as \x00 or \r\n are honoured (options.payload)
    send_hex: str | None = None  # or the datagram as hex, e.g. "02 00 01"
    expect: str | None = None  # regular expression the reply, read as UTF-8 text, must match
    # Bytes the reply must contain, as hex; a leading ^ means it must start with them ("^0200").
    expect_hex: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.send is None) == (self.send_hex is None):
            raise OptionsError("send", "give exactly one of send or send_hex: a UDP service answers what it is sent")
        if self.send is not None:
            payload(self.send)
        else:
            hex_bytes(self.send_hex, field="send_hex")
        check_pattern("expect", self.expect)
        if self.expect_hex is not None:
            hex_bytes(self.expect_hex.removeprefix("^"), field="expect_hex")

    @property
    def datagram(self) -> bytes:
        return payload(self.send) if self.send is not None else hex_bytes(self.send_hex, field="send_hex")


def hex_bytes(text: str, *, field: str) -> bytes:
    """Return the bytes hex text stands for; spaces and colons between bytes are allowed ("de:ad be ef")."""
    digits = re.sub(r"[\s:]", "", text)
    if not digits or not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", digits):
        raise OptionsError(field, f"must be hexadecimal bytes such as 0a1b2c, not {text!r}")
    return bytes.fromhex(digits)


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(state: Exchange, channel: Channel) -> None:
        request = options.datagram
        await channel.send(request, what="the request")
        state.details["sent_bytes"] = len(request)
        reply, _ = await channel.receive(what="a reply", limit=MAX_DATAGRAM)
        state.details["reply_bytes"] = len(reply)
        state.details["reply"] = preview(reply, MAX_PREVIEW_BYTES)
        check(reply, options)

    return await converse(target, options, dialogue, deadline=deadline)


def check(reply: bytes, options: Options) -> None:
    """Raise KeywordMissing unless the reply matches `expect` and holds `expect_hex` (at its start with ^)."""
    if options.expect is not None and not re.search(options.expect, reply.decode("utf-8", "replace")):
        raise KeywordMissing(f"the reply does not match /{options.expect}/: {preview(reply, MAX_PREVIEW_BYTES)}")
    if options.expect_hex is not None:
        wanted = hex_bytes(options.expect_hex.removeprefix("^"), field="expect_hex")
        anchored = options.expect_hex.startswith("^")
        if not (reply.startswith(wanted) if anchored else wanted in reply):
            where = "start with" if anchored else "contain"
            raise KeywordMissing(f"the reply does not {where} {wanted.hex()}: {preview(reply, MAX_PREVIEW_BYTES)}")


PROTOCOL = Protocol(
    key="udp",
    label="UDP",
    summary="send one datagram and expect a reply, optionally matching a pattern or bytes",
    options=Options,
    probe=probe,
    transport="datagram",
    schemes=(Scheme("udp", "none"),),  # no standard port: a UDP URL must name one
    flags=(
        Flag("--send", "send", "text to send (backslash escapes such as \\r\\n honoured)", metavar="TEXT"),
        Flag("--send-hex", "send_hex", "the datagram to send, as hex", metavar="HEX"),
        Flag("--expect", "expect", "a regular expression the reply must match (as UTF-8 text)", metavar="REGEX"),
        Flag("--expect-hex", "expect_hex", "bytes the reply must contain, as hex (^ to anchor at the start)"),
    ),
    shown=(("sent_bytes", "Sent bytes"), ("reply_bytes", "Reply bytes"), ("reply", "Reply")),
)
