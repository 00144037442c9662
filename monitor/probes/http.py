"""HTTP(S) probe: one request spoken with h11 over the engine's Connection, redirects followed, then checks.

The body is read to its end, up to MAX_BODY_BYTES, so `transfer` covers the whole response even
without a keyword. Past that limit reading stops; the probe still passes unless a keyword or regex
was not found in what was read, which is `response_too_large` (the rest was never looked at). More
than MAX_REDIRECTS redirects in a row is `http_status`: the server never gave a final answer.
`details["hops"]` has one entry per request (URL, status, address, TLS facts); `Result.tls` is the
first hop's certificate, and the expiry warning covers every hop's chain.
"""

from __future__ import annotations

import codecs
import dataclasses
import http
import re
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import h11

from monitor.probes.errors import (
    ConnectionClosed,
    HTTPStatusError,
    KeywordMissing,
    ProbeError,
    ProtocolError,
    ResponseTooLarge,
    TLSHandshakeError,
)
from monitor.probes.net import Connection, preview
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse

TLS_MODES = ("none", "implicit")
MAX_BODY_BYTES = 1024 * 1024  # body read at most; a keyword past it cannot be seen
MAX_HEADER_BYTES = 64 * 1024  # status line and headers (and any 1xx responses before them)
MAX_REDIRECTS = 10  # as Go's http.Client, and so blackbox_exporter
MAX_DETAIL_CHARS = 300  # URLs and header values kept in details and reasons
READ_CHUNK = 64 * 1024
HEAD_BYTES = 64  # first bytes of a response kept to show what a server that is not HTTP said
USER_AGENT = "Portwatch/0.1"
METHODS = ("GET", "HEAD", "POST", "OPTIONS")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"  # left alone when a Location is percent-encoded


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    path: str = "/"  # request target: path and query
    method: str = "GET"
    expect_status: str = "2xx"  # codes, classes like 2xx, ranges like 200-299, separated by commas
    keyword: str | None = None  # text the body must contain
    regex: str | None = None  # pattern that must match somewhere in the body
    follow_redirects: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path.startswith("/") or not self.path.isascii() or re.search(r"[\s\x00-\x1f\x7f]", self.path):
            message = f"must start with / and be ASCII without spaces (percent-encode), not {self.path!r}"
            raise OptionsError("path", message)
        if self.method not in METHODS:
            raise OptionsError("method", f"must be one of {', '.join(METHODS)}, not {self.method!r}")
        parse_statuses(self.expect_status)
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as error:
                raise OptionsError("regex", f"is not a valid regular expression: {error}") from None


def parse_statuses(text: str) -> tuple[tuple[int, int], ...]:
    """Return the (lowest, highest) status ranges `text` names, e.g. "2xx,304" or "200-299"."""
    ranges = []
    for item in text.split(","):
        item = item.strip().lower()
        low, high = 0, 0  # not a status: refused below
        if match := re.fullmatch(r"([1-5])xx", item):
            low, high = int(match[1]) * 100, int(match[1]) * 100 + 99
        elif match := re.fullmatch(r"(\d{3})(?:-(\d{3}))?", item):
            low, high = int(match[1]), int(match[2] or match[1])
        if not 100 <= low <= high <= 599:
            message = "must be status codes, classes like 2xx or ranges like 200-299, separated by commas"
            raise OptionsError("expect_status", f"{message}; {item!r} is not one of these")
        ranges.append((low, high))
    return tuple(ranges)


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    async def dialogue(session: Session) -> None:
        redirects: list[str] = []
        session.details["redirects"] = redirects
        codes: list[int] = []  # the status of each request, for details["hops"]
        url, method = _url(session, options.path), options.method
        first_url = _clip(url)
        try:
            reply = await ask(session, method, options.path, first=True)
            codes.append(reply.response.status_code)
            while (location := _location(reply.response)) and options.follow_redirects:
                if len(redirects) == MAX_REDIRECTS:
                    raise HTTPStatusError(
                        f"gave up after {MAX_REDIRECTS} redirects; the last pointed to {_clip(location)}"
                    )
                url = urljoin(url, location)
                redirects.append(_clip(url))
                path = await follow(session, options, url)
                method = _method_after(reply.response.status_code, method)
                reply = await ask(session, method, path, first=False)
                codes.append(reply.response.status_code)
        finally:  # what the hops before a failure showed is kept, and the failing hop's certificate too
            session.details["hops"] = hops([first_url, *redirects], codes, session.connections)
        if location:
            session.details["location"] = _clip(location)
        code = reply.response.status_code
        if not any(low <= code <= high for low, high in parse_statuses(options.expect_status)):
            raise HTTPStatusError(f"HTTP {code} {_reason(reply.response)}, expected {options.expect_status}")
        body, size, cut = await reply.body(keep=options.keyword is not None or options.regex is not None)
        session.details["body_bytes"] = size
        if cut:
            session.details["body_truncated"] = True
        check_body(body, cut, _charset(reply.response), options)

    return await converse(target, options, dialogue, deadline=deadline)


def hops(urls: list[str], codes: list[int], connections: list[Connection]) -> list[dict[str, Any]]:
    """Return one entry per hop: its URL, and as far as it got, address, TLS facts and status code.

    Every hop opens one connection (requests say `Connection: close`), so the lists line up by index;
    a hop that failed before connecting, or before its answer, has fewer keys.
    """
    entries: list[dict[str, Any]] = []
    for index, url in enumerate(urls):
        entry: dict[str, Any] = {"url": url}
        if index < len(codes):
            entry["status"] = codes[index]
        if index < len(connections):
            entry["address"] = connections[index].address
            if connections[index].tls is not None:
                entry["tls"] = connections[index].tls.to_dict()
        entries.append(entry)
    return entries


async def ask(session: Session, method: str, path: str, *, first: bool) -> Reply:
    """Send one request on the session's connection and return the reply once its headers arrived."""
    reply = Reply(session.conn)
    await reply.send(h11.Request(method=method, target=path, headers=_request_headers(session, method)))
    clock = session.conn.clock
    if first:
        clock.await_first_byte()  # processing: request sent until the first byte of the answer
        await reply.first_bytes()
    else:
        with clock.phase("processing"):  # the clock times one first byte itself; a redirect's wait adds up here
            await reply.first_bytes()
    response = await reply.headers()
    version = response.http_version.decode("ascii", "replace")
    session.set_banner(f"HTTP/{version} {response.status_code} {_reason(response)}")
    session.details.update(status=response.status_code, http_version=version)
    content_type = _header(response, b"content-type")
    if content_type:
        session.details["content_type"] = _clip(content_type)
    declared = _header(response, b"content-length")
    if declared and declared.strip().isdigit():  # what the server declared, as blackbox reports it
        session.details["content_length"] = int(declared.strip()[:20])
    return reply


async def follow(session: Session, options: Options, url: str) -> str:
    """Connect to where a redirect points, on the same deadline; return the request target there.

    A redirect to the host we are on (by address or by its Host name) keeps the address and
    `tls_server_name`; another host is resolved afresh and verified under its own name.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    if scheme not in DEFAULT_PORTS or not parts.hostname or not port:
        raise ProtocolError(f"redirected to {_clip(url)}, which is not an http or https URL we can follow")
    here = {session.server_name.strip("[]").lower(), session.target.host.strip("[]").lower()}
    host = session.target.host if parts.hostname in here else parts.hostname
    if parts.hostname not in here:
        session.options = dataclasses.replace(options, tls_server_name=None)
    try:
        await session.reconnect(Target(host, port, "implicit" if scheme == "https" else "none"))
    except TLSHandshakeError as error:  # Result.tls is the first hop's certificate: say which one failed
        raise type(error)(f"{error} (redirected to {_clip(url)})") from None
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def check_body(body: bytes, cut: bool, charset: str, options: Options) -> None:
    """Raise unless the keyword and the regex, when set, are found in the body."""
    text = body.decode(charset, "replace")
    where = f"the first {MAX_BODY_BYTES // (1024 * 1024)} MiB of the body" if cut else f"the body ({len(body)} bytes)"
    missing = None
    if options.keyword is not None and options.keyword not in text:
        missing = f"keyword {options.keyword!r} not found in {where}"
    elif options.regex is not None and not re.search(options.regex, text):
        missing = f"no match for /{options.regex}/ in {where}"
    if missing and cut:
        raise ResponseTooLarge(f"response body exceeds {MAX_BODY_BYTES // (1024 * 1024)} MiB and {missing}")
    if missing:
        raise KeywordMissing(missing)


class Reply:
    """One request on a connection and its response, parsed by h11 within the header and body bounds."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.response: h11.Response | None = None
        self.received = 0
        self.head = bytearray()  # the first bytes of the answer, to say what a server that is not HTTP sent
        self.ended = False  # the server closed its side

    async def send(self, request: h11.Request) -> None:
        await self.conn.write(self.parser.send(request) + self.parser.send(h11.EndOfMessage()), what="the HTTP request")

    async def first_bytes(self) -> None:
        """Wait for the answer to begin and hand what came to the parser."""
        self._feed(await self.conn.read_some(what="the HTTP response", limit=READ_CHUNK))

    async def headers(self) -> h11.Response:
        """Return the final response's head, skipping 1xx responses, within MAX_HEADER_BYTES."""
        while self.response is None:
            if self.received > MAX_HEADER_BYTES:
                raise ResponseTooLarge(f"response headers exceed {MAX_HEADER_BYTES // 1024} KiB")
            event = await self._next("the HTTP response")
            if isinstance(event, h11.Response):
                self.response = event
        return self.response

    async def body(self, *, keep: bool) -> tuple[bytes, int, bool]:
        """Read the body up to MAX_BODY_BYTES; return (the bytes kept, its size, whether it was cut).

        The bytes are kept only when `keep`, so a large body costs no memory when no check needs it.
        """
        kept, size = bytearray(), 0
        while True:
            event = await self._next("the response body")
            if isinstance(event, h11.EndOfMessage):
                return bytes(kept), size, False
            if isinstance(event, h11.Data):
                size += len(event.data)
                if keep:
                    kept += event.data[: MAX_BODY_BYTES - len(kept)]
                if size > MAX_BODY_BYTES:
                    return bytes(kept), MAX_BODY_BYTES, True

    async def _next(self, what: str) -> h11.Event:
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as error:
                raise self._failure(error, what) from None
            if isinstance(event, h11.ConnectionClosed):  # only after a complete message; never wait on it
                raise ConnectionClosed(f"server closed the connection before the end of {what}")
            if event is not h11.NEED_DATA:
                return event
            self._feed(await self.conn.read_some(what=what, limit=READ_CHUNK))

    def _feed(self, data: bytes) -> None:
        self.ended = not data
        self.received += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        # h11 waits for a blank line, which a server of another protocol (an SMTP banner) never sends;
        # a first line that does not start like a status line is enough to tell.
        if not self.head.startswith(b"HTTP/") and b"\n" in data:
            raise ProtocolError(f"server did not answer with HTTP: {preview(self.head)}")
        self.parser.receive_data(data)

    def _failure(self, error: h11.RemoteProtocolError, what: str) -> ProbeError:
        if self.ended:
            when = "before sending" if self.received == 0 else "before the end of"
            return ConnectionClosed(f"server closed the connection {when} {what}")
        if error.error_status_hint == 431:
            return ResponseTooLarge(f"response headers exceed {MAX_HEADER_BYTES // 1024} KiB")
        if not b"HTTP/".startswith(bytes(self.head[:5])):
            return ProtocolError(f"server did not answer with HTTP: {preview(self.head)}")
        return ProtocolError(f"malformed HTTP response: {error}")


def _request_headers(session: Session, method: str) -> list[tuple[str, str]]:
    headers = [("Host", _authority(session)), ("User-Agent", USER_AGENT), ("Accept", "*/*"), ("Connection", "close")]
    if method == "POST":
        headers.append(("Content-Length", "0"))
    return headers


def _authority(session: Session) -> str:
    """Return the Host header: the server name, with the port when it is not the scheme's default."""
    name = session.server_name.strip("[]")
    name = f"[{name}]" if ":" in name else name
    scheme = "https" if session.target.tls == "implicit" else "http"
    return name if session.target.port == DEFAULT_PORTS[scheme] else f"{name}:{session.target.port}"


def _url(session: Session, path: str) -> str:
    scheme = "https" if session.target.tls == "implicit" else "http"
    return f"{scheme}://{_authority(session)}{path}"


def _location(response: h11.Response) -> str | None:
    if response.status_code not in REDIRECT_STATUSES:
        return None
    location = _header(response, b"location")
    return quote(location, safe=_URL_SAFE) if location else None


def _method_after(status: int, method: str) -> str:
    """Return the method for the next hop: 303, and 301/302 after a POST, turn into GET, as browsers do."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        return "GET"
    return method


def _header(response: h11.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _charset(response: h11.Response) -> str:
    """Return the body's declared charset if Python knows it, else UTF-8."""
    match = re.search(r"charset=\"?([\w.:-]+)", _header(response, b"content-type") or "", re.IGNORECASE)
    try:
        return codecs.lookup(match[1]).name if match else "utf-8"
    except LookupError:
        return "utf-8"


def _reason(response: h11.Response) -> str:
    reason = response.reason.decode("latin-1").strip()
    if reason:
        return _clip(reason)
    try:
        return http.HTTPStatus(response.status_code).phrase
    except ValueError:
        return ""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."
