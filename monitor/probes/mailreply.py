"""Bounded multi-line replies for the mail protocols: `read_reply()` reads until a reply's last line.

SMTP replies, POP3's CAPA list and IMAP's untagged lines before a tagged status all share one
risk: a server that never sends the last line. Each protocol passes its own named bounds.
"""

from __future__ import annotations

from collections.abc import Callable

from monitor.probes.errors import ResponseTooLarge
from monitor.probes.net import Connection


async def read_reply(
    conn: Connection, is_last: Callable[[bytes], bool], *, what: str, max_lines: int, max_bytes: int
) -> list[bytes]:
    """Return the lines of one reply, through the first line `is_last` accepts.

    Raise `ResponseTooLarge` once the reply passes `max_lines` lines or `max_bytes` bytes, so a
    server flooding continuation lines costs at most that much memory and never the deadline.
    """
    lines: list[bytes] = []
    size = 0
    while True:
        line = await conn.read_line(what=what)
        lines.append(line)
        size += len(line) + 2
        if is_last(line):
            return lines
        if len(lines) >= max_lines:
            raise ResponseTooLarge(f"{what} is longer than {max_lines} lines")
        if size > max_bytes:
            raise ResponseTooLarge(f"{what} is longer than {max_bytes} bytes")
