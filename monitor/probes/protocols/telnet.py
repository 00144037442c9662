"""Telnet probe: connect, refuse every option the server negotiates, and read its greeting up to a prompt.

The greeting ends at the first of: a login prompt ("login:", "Username:", "Password:"), a pause of
`SETTLE_SECONDS` after text (servers that show a menu or a shell prompt and wait), or the server
hanging up (`connection_closed`, since a service that shows text and leaves serves nobody).
`MAX_GREETING_BYTES` without a pause or prompt is `response_too_large`, and the deadline before
any of them is `timeout`, so set the timeout above `SETTLE_SECONDS` for servers without a prompt.

The banner is the greeting's text without telnet commands, ANSI escapes or control characters,
its lines joined by " | ". Telnet is always plaintext, so `details["plaintext_login_offered"]`
says whether a login or password prompt was shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass, field

from monitor.probes.errors import ConnectionClosed, KeywordMissing, ProbeTimeout, ProtocolError, ResponseTooLarge
from monitor.probes.net import Connection, preview
from monitor.probes.options import ConnectionOptions, check_pattern
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable

MAX_GREETING_BYTES = 16 * 1024  # bytes read (text and commands); a MOTD of a few KiB is long already
READ_CHUNK = 4096
SETTLE_SECONDS = 1.5  # quiet after text that ends a greeting without a prompt; login takes ~0.1 s to start
PROMPT_TAIL = 200  # bytes at the end of the text looked at for a prompt
MAX_NEGOTIATIONS_RECORDED = 32  # option requests listed in details
# A greeting is binary noise, not telnet, past either share (see Greeting.garbled).
MAX_CONTROL_SHARE = 0.05  # of bytes no terminal shows (NUL and C0 controls but BEL, BS, TAB, LF, VT, FF, CR, ESC)
MAX_UNDECODABLE_SHARE = 0.3  # of characters that are not UTF-8, when no ANSI escape says it is terminal art

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
VERBS = {DO: "DO", DONT: "DONT", WILL: "WILL", WONT: "WONT"}
OPTION_NAMES = {
    0: "BINARY", 1: "ECHO", 3: "SGA", 5: "STATUS", 6: "TIMING-MARK", 24: "TTYPE", 31: "NAWS", 32: "TSPEED",
    33: "LFLOW", 34: "LINEMODE", 35: "XDISPLOC", 36: "ENVIRON", 37: "AUTHENTICATION", 38: "ENCRYPT", 39: "NEW-ENVIRON",
}  # fmt: skip
PROMPT = re.compile(r"(?:login|user ?name|user|password|passcode)\s*:\s*\Z", re.IGNORECASE)
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
BINARY_CONTROL = re.compile(rb"[\x00-\x06\x0e-\x1a\x1c-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    expect: str | None = None  # regular expression the greeting text must match (lines joined by newlines)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_pattern("expect", self.expect)


@dataclass
class Negotiator:
    """Split what a telnet server sends into text and commands, and refuse each option once.

    IAC DO x is answered IAC WONT x and IAC WILL x is answered IAC DONT x (RFC 854: a party may
    always refuse); DONT and WONT need no answer, since every option stays off. Answering each
    request once keeps a server that repeats itself from making a loop. Subnegotiations
    (IAC SB ... IAC SE) are skipped. The state survives between chunks: a command split across
    two reads is still one command.
    """

    state: str = "data"
    verb: int = 0
    answered: set[tuple[int, int]] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Return (text, answers to send) for the next bytes from the server."""
        text, answers = bytearray(), bytearray()
        for byte in data:
            if self.state == "data":
                if byte == IAC:
                    self.state = "iac"
                else:
                    text.append(byte)
            elif self.state == "iac":
                self.state = "data"
                if byte == IAC:
                    text.append(IAC)  # an escaped 255 is data
                elif byte in VERBS:
                    self.verb, self.state = byte, "option"
                elif byte == SB:
                    self.state = "sub"
                # else NOP, GA, AYT and the like: a two-byte command with nothing to show or answer
            elif self.state == "option":
                answers += self.answer(self.verb, byte)
                self.state = "data"
            elif self.state == "sub":
                self.state = "sub-iac" if byte == IAC else "sub"
            else:  # "sub-iac": IAC SE ends the subnegotiation; IAC IAC inside it is an escaped 255
                self.state = "data" if byte == SE else "sub"
        return bytes(text), bytes(answers)

    def answer(self, verb: int, option: int) -> bytes:
        if len(self.requests) < MAX_NEGOTIATIONS_RECORDED:
            self.requests.append(f"{VERBS[verb]} {OPTION_NAMES.get(option, option)}")
        if verb not in (DO, WILL) or (verb, option) in self.answered:
            return b""
        self.answered.add((verb, option))
        return bytes([IAC, WONT if verb == DO else DONT, option])


@dataclass
class Greeting:
    raw: bytes  # the text bytes, without telnet commands
    ended: str  # "prompt", "quiet", "closed", "limit" or "deadline"
    received: int  # bytes read, commands included
    requests: list[str]

    @property
    def lines(self) -> list[str]:
        """Return the greeting's non-empty lines, without ANSI escapes or control characters.

        A terminal shows a bell or a backspace as nothing, so `printable()` drops them instead of leaving a space.
        """
        text = ANSI_ESCAPE.sub("", self.raw.decode("utf-8", "replace"))
        return printable(text, replacement="", keep_newlines=True).splitlines()

    @property
    def garbled(self) -> bool:
        """Return whether the text is binary noise (another protocol on the port), not a greeting.

        Text greetings have no control bytes beyond line and terminal controls (CR NUL is telnet's
        bare CR). Undecodable bytes alone are allowed in a greeting with ANSI escapes, since BBS art
        is drawn in CP437, not UTF-8; a few Latin-1 letters stay well under the share.
        """
        raw = self.raw.replace(b"\r\0", b"\r")
        if len(raw) < 8:
            return False
        text = raw.decode("utf-8", "replace")
        undecodable = text.count("\ufffd") > MAX_UNDECODABLE_SHARE * len(text) and "\x1b[" not in text
        return len(BINARY_CONTROL.findall(raw)) > MAX_CONTROL_SHARE * len(raw) or undecodable


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(session: Session) -> None:
        greeting = await read_greeting(session.conn)
        lines = greeting.lines
        session.set_banner(" | ".join(lines))
        session.details["greeting_bytes"] = greeting.received
        session.details["negotiation"] = greeting.requests
        if greeting.ended == "deadline":
            raise ProbeTimeout(
                f"the telnet greeting had no prompt and no pause before the deadline ({greeting.received} bytes)"
                if greeting.received
                else "no greeting from the telnet server"
            )
        if greeting.garbled:
            raise ProtocolError(f"the greeting is not telnet text: {preview(greeting.raw)}")
        session.details["plaintext_login_offered"] = greeting.ended == "prompt"
        if greeting.ended == "limit":
            raise ResponseTooLarge(f"the telnet greeting passed {MAX_GREETING_BYTES} bytes without a pause or prompt")
        if greeting.ended == "closed":
            said = f" after saying: {lines[-1][:80]}" if lines else " before any greeting"
            raise ConnectionClosed(f"the telnet server closed the connection{said}")
        if options.expect is not None and not re.search(options.expect, "\n".join(lines)):
            raise KeywordMissing(f"the telnet greeting does not match /{options.expect}/")

    return await converse(target, options, dialogue, deadline=deadline)


async def read_greeting(conn: Connection) -> Greeting:
    """Return the greeting, answering option negotiation as it comes; see the module docstring for its end."""
    loop = asyncio.get_running_loop()
    negotiator = Negotiator()
    raw, received, quiet_until = bytearray(), 0, None

    def ended(how: str) -> Greeting:
        return Greeting(bytes(raw), how, received, negotiator.requests)

    while True:
        try:
            if quiet_until is not None and quiet_until < conn.deadline:
                async with asyncio.timeout_at(quiet_until):
                    chunk = await conn.read_some(what="the telnet greeting", limit=READ_CHUNK)
            else:
                chunk = await conn.read_some(what="the telnet greeting", limit=READ_CHUNK)
        except TimeoutError:  # the quiet period passed; ProbeTimeout (the deadline) is not a TimeoutError
            return ended("quiet")
        except ProbeTimeout:
            return ended("deadline")
        if not chunk:
            return ended("closed")
        received += len(chunk)
        text, answers = negotiator.feed(chunk)
        if answers:
            await conn.write(answers, what="the answers to option negotiation")
        if text:
            raw += text
            quiet_until = loop.time() + SETTLE_SECONDS
            tail = ANSI_ESCAPE.sub("", raw[-PROMPT_TAIL:].decode("utf-8", "replace"))
            if PROMPT.search(printable(tail, replacement="")):
                return ended("prompt")
        if received >= MAX_GREETING_BYTES:
            return ended("limit")


PROTOCOL = Protocol(
    key="telnet",
    label="Telnet",
    summary="connect, refuse option negotiation, and read the greeting up to a login prompt or a pause",
    options=Options,
    probe=probe,
    blackbox_prober="tcp",  # blackbox would probe it with its tcp prober: connection and TLS families
    schemes=(Scheme("telnet", "none", 23),),
    flags=(Flag("--expect", "expect", "a regular expression the greeting must match", metavar="REGEX"),),
    shown=(
        ("negotiation", "Options the server negotiated"),
        ("greeting_bytes", "Greeting bytes"),
        ("plaintext_login_offered", "Login prompt (plaintext)"),
    ),
)
