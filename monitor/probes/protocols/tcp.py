"""Plain TCP (optionally TLS) probe: connect, then optionally read a banner, send a line and expect a reply."""

from __future__ import annotations

import dataclasses
import re

from monitor.probes.errors import KeywordMissing
from monitor.probes.options import TLSOptions, check_pattern, payload
from monitor.probes.protocol import Protocol, Scheme
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable

TLS_MODES = ("none", "implicit")
MAX_EXPECT_LINES = 100  # lines read while looking for `expect` before giving up
MAX_MATCHED_CHARS = 200  # of the matching line kept in details


@dataclasses.dataclass(frozen=True)
class Options(TLSOptions):
    read_banner: bool = False  # wait for the server's first line and record it
    send: str | None = None  # text to send after connecting; backslash escapes such as \r\n are honoured
    expect: str | None = None  # regular expression a line of the reply must match

    def __post_init__(self) -> None:
        super().__post_init__()
        check_pattern("expect", self.expect)
        if self.send is not None:
            payload(self.send)


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(session: Session) -> None:
        conn = session.conn
        if options.read_banner:
            session.set_banner(await conn.read_line(what="the banner"))
        if options.send is not None:
            await conn.write(payload(options.send), what="the request")
        if options.expect is not None:
            pattern = re.compile(options.expect)
            for _ in range(MAX_EXPECT_LINES):
                line = (await conn.read_line(what=f"a line matching /{options.expect}/")).decode("utf-8", "replace")
                if pattern.search(line):
                    session.details["matched"] = printable(line, limit=MAX_MATCHED_CHARS)
                    return
            raise KeywordMissing(f"no line matching /{options.expect}/ in the first {MAX_EXPECT_LINES} lines")

    return await converse(target, options, dialogue, deadline=deadline)


PROTOCOL = Protocol(
    key="tcp",
    label="TCP",
    summary="connect (optionally with TLS), then optionally read a banner, send a line and expect a reply",
    options=Options,
    probe=probe,
    blackbox_prober="tcp",
    tls_modes=TLS_MODES,
    schemes=(
        Scheme("tcp", "none"),  # no standard port: a TCP URL must name one
        Scheme("tls", "implicit"),  # TLS from the start, like blackbox's tcp prober with tls: true
    ),
    shown=(("matched", "Matched"),),
)
