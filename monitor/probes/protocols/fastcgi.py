"""FastCGI (PHP-FPM) probe: one responder request, to the ping path or a script, with its status and body checked.

The request is FCGI_BEGIN_REQUEST, FCGI_PARAMS and an empty FCGI_STDIN; the answer is records of
8-byte headers until FCGI_END_REQUEST. FCGI_STDOUT is a CGI response: headers (a "Status:" header, 200
without one), a blank line, the body. Without `script_filename` the request goes to PHP-FPM's
`ping.path` and expects its "pong"; with one, PHP-FPM runs that script. `details` has the status, the
body size, FCGI_STDERR (bounded), the app and protocol status, and `server_software` (X-Powered-By).
"""

from __future__ import annotations

import dataclasses
import http
import re
import struct
from typing import Any
from urllib.parse import SplitResult

from monitor.probes.errors import HTTPStatusError, KeywordMissing, ProtocolError, ResponseTooLarge, ServerRejected
from monitor.probes.net import Connection, preview
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.protocols.http import parse_statuses
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable

VERSION = 1
HEADER = struct.Struct("!BBHHBx")  # version, type, request id, content length, padding length, reserved
BEGIN_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, UNKNOWN_TYPE = 1, 3, 4, 5, 6, 7, 11
RESPONDER = 1
REQUEST_ID = 1  # one request per connection, no FCGI_KEEP_CONN: the server closes after answering
PROTOCOL_STATUSES = {1: "cannot multiplex connections", 2: "overloaded", 3: "does not know the responder role"}
MAX_CONTENT = 0xFFFF  # a record's content, as its 16-bit length field allows
MAX_RECORD_BYTES = MAX_CONTENT + 0xFF  # content and padding
MAX_STDOUT_BYTES = 1024 * 1024  # response read at most, as HTTP's body; an `expect` past it cannot be seen
MAX_HEADER_BYTES = 64 * 1024  # the CGI headers at the start of stdout
MAX_STDERR_BYTES = 64 * 1024  # stderr read at most; more is a flood
MAX_STDERR_CHARS = 500  # of it kept in details
MAX_RECORDS = 4096  # records in one answer; PHP-FPM sends 8 KiB ones, so 1 MiB is ~128
MAX_DETAIL_CHARS = 200  # header values kept in details and reasons
MAX_PATH_CHARS = 2048
PING_ANSWER = "pong"  # PHP-FPM's default ping.response
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: refused in the paths we send


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    path: str = "/ping"  # SCRIPT_NAME and REQUEST_URI; a query goes to QUERY_STRING (/status?json)
    script_filename: str | None = None  # the script PHP-FPM runs; unset: the path, for ping.path and pm.status_path
    expect: str | None = None  # text the body must contain; unset: "pong" when no script is named
    expect_status: str = "200"  # as http's: codes, classes like 2xx, ranges like 200-299

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, value in (("path", self.path), ("script_filename", self.script_filename)):
            if value is not None and (
                not value.startswith("/") or len(value) > MAX_PATH_CHARS or _CONTROL.search(value)
            ):
                message = f"must start with / and be at most {MAX_PATH_CHARS} characters without control characters"
                raise OptionsError(name, f"{message}, not {value[:100]!r}")
        parse_statuses(self.expect_status)

    @property
    def expected_text(self) -> str | None:
        """Return the text the body must contain: `expect`, else PHP-FPM's pong when no script is named."""
        return self.expect if self.expect is not None or self.script_filename else PING_ANSWER


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(session: Session) -> None:
        conn = session.conn
        await conn.write(request(session, options), what="the FastCGI request")
        stdout = await read_answer(session)
        code, reason, body = parse_response(stdout, session)
        if not any(low <= code <= high for low, high in parse_statuses(options.expect_status)):
            raise HTTPStatusError(f"FastCGI status {code} {reason}, expected {options.expect_status}")
        expected = options.expected_text
        if expected is not None and expected not in body.decode("utf-8", "replace"):
            missing = f"{expected!r} not found in the response body ({len(body)} bytes)"
            if session.details.get("body_truncated"):  # the rest was never looked at
                raise ResponseTooLarge(f"FastCGI response exceeds {MAX_STDOUT_BYTES // 1024} KiB and {missing}")
            raise KeywordMissing(missing)

    return await converse(target, options, dialogue, deadline=deadline)


def request(session: Session, options: Options) -> bytes:
    """Return the whole request: FCGI_BEGIN_REQUEST (responder), the params, and empty PARAMS and STDIN."""
    script_name, _, query = options.path.partition("?")
    local = session.conn.sock.getsockname()
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": script_name,
        "SCRIPT_FILENAME": options.script_filename or script_name,
        "DOCUMENT_URI": script_name,
        "REQUEST_URI": options.path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "Portwatch",
        "SERVER_NAME": session.target.host,
        "SERVER_PORT": str(session.target.port),
        "REMOTE_ADDR": local[0],
        "REMOTE_PORT": str(local[1]),
    }
    encoded = b"".join(
        _length(len(k.encode())) + _length(len(v.encode())) + k.encode() + v.encode() for k, v in params.items()
    )
    chunks = [encoded[start : start + MAX_CONTENT] for start in range(0, len(encoded), MAX_CONTENT)]
    begin = record(BEGIN_REQUEST, struct.pack("!HB5x", RESPONDER, 0))
    return begin + b"".join(record(PARAMS, chunk) for chunk in chunks) + record(PARAMS, b"") + record(STDIN, b"")


def record(kind: int, content: bytes) -> bytes:
    return HEADER.pack(VERSION, kind, REQUEST_ID, len(content), 0) + content


def _length(size: int) -> bytes:
    """Return a name-value pair length: one byte below 128, else four with the high bit set."""
    return bytes([size]) if size < 128 else struct.pack("!I", size | 0x80000000)


async def read_answer(session: Session) -> bytes:
    """Read records until FCGI_END_REQUEST (or MAX_STDOUT_BYTES of stdout); return stdout.

    Stderr is kept (bounded) in details; an END_REQUEST refusal (overloaded, ...) is `server_rejected`.
    """
    conn, details = session.conn, session.details
    stdout, stderr = bytearray(), bytearray()
    for _ in range(MAX_RECORDS):
        kind, content = await read_record(conn)
        if kind == STDOUT:
            stdout += content
            if len(stdout) > MAX_STDOUT_BYTES:
                details["body_truncated"] = True
                return bytes(stdout[:MAX_STDOUT_BYTES])
        elif kind == STDERR:
            stderr += content
            details["stderr"] = printable(stderr, limit=MAX_STDERR_CHARS)
            if len(stderr) > MAX_STDERR_BYTES:
                raise ResponseTooLarge(f"FastCGI stderr exceeds {MAX_STDERR_BYTES} bytes")
        elif kind == END_REQUEST:
            if len(content) < 5:
                raise ProtocolError(f"FastCGI END_REQUEST record is {len(content)} bytes, too short")
            app_status, protocol_status = struct.unpack_from("!IB", content)
            details.update(app_status=app_status, protocol_status=protocol_status)
            if protocol_status in PROTOCOL_STATUSES:
                raise ServerRejected(f"FastCGI server refused the request: {PROTOCOL_STATUSES[protocol_status]}")
            if protocol_status != 0:
                raise ProtocolError(f"FastCGI END_REQUEST has an unknown protocol status {protocol_status}")
            return bytes(stdout)
        elif kind == UNKNOWN_TYPE:
            raise ProtocolError("FastCGI server did not know a record type of our request")
        else:
            raise ProtocolError(f"unexpected FastCGI record of type {kind} ({len(content)} bytes)")
    raise ResponseTooLarge(f"FastCGI answer has more than {MAX_RECORDS} records")


async def read_record(conn: Connection) -> tuple[int, bytes]:
    """Return (type, content) of the next record of our request; its length is bounded by the 16-bit field."""
    header = await conn.read_exact(HEADER.size, what="a FastCGI record")
    version, kind, request_id, length, padding = HEADER.unpack(header)
    if version != VERSION:
        raise ProtocolError(f"server did not answer with FastCGI: {preview(header)}")
    if request_id != REQUEST_ID:
        raise ProtocolError(f"FastCGI record for request {request_id}; we sent request {REQUEST_ID}")
    content = await conn.read_exact(length + padding, what="a FastCGI record", limit=MAX_RECORD_BYTES)
    return kind, content[:length]


def parse_response(stdout: bytes, session: Session) -> tuple[int, str, bytes]:
    """Return (status, reason, body) of the CGI response in stdout, recording its headers in details."""
    match = re.search(rb"\r?\n\r?\n", stdout[: MAX_HEADER_BYTES + 4])
    if match is None:
        if len(stdout) > MAX_HEADER_BYTES:
            raise ResponseTooLarge(f"FastCGI response headers exceed {MAX_HEADER_BYTES // 1024} KiB")
        raise ProtocolError(f"FastCGI response has no end of headers: {preview(stdout)}")
    headers: dict[str, str] = {}
    for line in re.split(rb"\r?\n", stdout[: match.start()]):
        name, colon, raw = line.partition(b":")
        if not colon:
            raise ProtocolError(f"FastCGI response has a malformed header line: {preview(line)}")
        value = printable(raw.decode("latin-1"), limit=MAX_DETAIL_CHARS)  # Latin-1, as HTTP header values are
        headers.setdefault(name.strip().lower().decode("latin-1"), value)
    code, reason = _status(headers.get("status"))
    body = stdout[match.end() :]
    session.set_banner(f"Status: {code} {reason}")
    details: dict[str, Any] = {"status": code, "body_bytes": len(body)}
    if "content-type" in headers:
        details["content_type"] = headers["content-type"]
    if "x-powered-by" in headers:  # PHP/8.2.36: the version the audit looks for; FastCGI has no greeting
        details["server_software"] = headers["x-powered-by"]
    session.details.update(details)
    return code, reason, body


def _status(value: str | None) -> tuple[int, str]:
    """Return (code, reason) of a CGI Status header ("503 Service Unavailable"); 200 without one (RFC 3875)."""
    if value is None:
        return 200, "OK"
    match = re.fullmatch(r"([1-5]\d\d)(?:\s+(.*))?", value)
    if match is None:
        raise ProtocolError(f"FastCGI response has a malformed Status header: {value!r}")
    code = int(match[1])
    try:
        return code, match[2] or http.HTTPStatus(code).phrase
    except ValueError:
        return code, ""


def url_options(parts: SplitResult) -> dict[str, Any]:
    """Return the path a fastcgi:// URL names (fastcgi://host:9000/status?json); none leaves /ping."""
    if parts.path in ("", "/") and not parts.query:
        return {}
    return {"path": (parts.path or "/") + (f"?{parts.query}" if parts.query else "")}


PROTOCOL = Protocol(
    key="fastcgi",
    label="PHP-FPM (FastCGI)",
    summary="one FastCGI responder request to PHP-FPM's ping path or a script, with its status and body checked",
    options=Options,
    probe=probe,
    blackbox_prober="tcp",  # blackbox would probe it with its tcp prober: connection and TLS families
    schemes=(Scheme("fastcgi", "none", 9000),),
    url_options=url_options,
    flags=(
        Flag("--script-filename", "script_filename", "the script PHP-FPM runs (SCRIPT_FILENAME)", metavar="PATH"),
        Flag("--expect", "expect", "text the response body must contain (default pong for the ping path)"),
        Flag("--expect-status", "expect_status", "statuses that count as up, e.g. 200 or 2xx", metavar="CODES"),
    ),
    shown=(
        ("status", "Status"),
        ("content_type", "Content-Type"),
        ("body_bytes", "Body bytes"),
        ("body_truncated", "Body cut at the read limit"),
        ("server_software", "X-Powered-By"),
        ("app_status", "App status"),
        ("stderr", "Stderr"),
    ),
)
