"""HTTP(S) probe: one request spoken with h11 over the engine's Connection, redirects followed, then checks.

The body is read to its end, up to MAX_BODY_BYTES, so `transfer` covers the whole response even
without a keyword. Past that limit reading stops; the probe still passes unless a keyword or regex
was not found in what was read, which is `response_too_large` (the rest was never looked at). More
than MAX_REDIRECTS redirects in a row is `http_status`: the server never gave a final answer.
`details["hops"]` has one entry per request (URL, status, address, TLS facts); `Result.tls` is the
first hop's certificate, and the expiry warning covers every hop's chain.

Method semantics (RFC 9110): `expect_allow` names methods the final answer's Allow header must list,
and `method_semantics` then asks the same URL with HEAD, an unknown method and OPTIONS, each on a
connection and clock of its own (the latency phases stay the main request's), reading headers only.
What they break is the `method_semantics` failure; what they answered is `details["method_semantics"]`.
"""

from __future__ import annotations

import codecs
import dataclasses
import http
import re
import urllib.parse
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
from monitor.probes.net import Connection, open_connection, preview
from monitor.probes.options import OptionsError, TLSOptions, check_pattern
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Result
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable
from monitor.probes.timing import PhaseClock

TLS_MODES = ("none", "implicit")
MAX_BODY_BYTES = 1024 * 1024  # body read at most; a keyword past it cannot be seen
MAX_HEADER_BYTES = 64 * 1024  # status line and headers (and any 1xx responses before them)
MAX_REDIRECTS = 10  # as Go's http.Client, and so blackbox_exporter
MAX_DETAIL_CHARS = 300  # URLs and header values kept in details and reasons
READ_CHUNK = 64 * 1024
HEAD_BYTES = 64  # first bytes of a response kept to show what a server that is not HTTP said
USER_AGENT = "Portwatch/0.1"
# RFC 9110's methods and PATCH (RFC 5789): a lower-case one is a typo, since methods are case-sensitive.
STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
METHODS_WITH_CONTENT = frozenset({"POST", "PUT", "PATCH"})  # sent with Content-Length, 0 without a body
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2: what a method (and an Allow entry) is
MAX_METHOD_CHARS = 32
MAX_REQUEST_BODY_BYTES = 64 * 1024  # the `body` option, UTF-8 encoded; a probe is not an upload
MAX_ALLOWED = 50  # methods kept from Allow headers
UNKNOWN_METHOD = "PORTWATCHPROBE"  # letters only: nginx answers 400 to a method with other characters
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # refused in the Content-Type we send
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"  # left alone when a Location is percent-encoded


@dataclasses.dataclass(frozen=True)
class Options(TLSOptions):
    path: str = "/"  # request target: path and query
    method: str = "GET"  # any RFC 9110 method token: PUT, DELETE, PROPFIND, ...
    body: str | None = None  # request body, sent as UTF-8 with its Content-Length
    content_type: str | None = None  # the body's Content-Type header
    expect_status: str = "2xx"  # codes, classes like 2xx, ranges like 200-299, separated by commas
    keyword: str | None = None  # text the body must contain
    regex: str | None = None  # pattern that must match somewhere in the body
    follow_redirects: bool = True
    expect_allow: str | None = None  # methods the final answer's Allow header must list (OPTIONS, or a 405)
    method_semantics: bool = False  # also check HEAD against GET, an unknown method (501/405) and OPTIONS (Allow)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path.startswith("/") or not self.path.isascii() or re.search(r"[\s\x00-\x1f\x7f]", self.path):
            message = f"must start with / and be ASCII without spaces (percent-encode), not {self.path!r}"
            raise OptionsError("path", message)
        check_method(self.method)
        if self.body is not None and len(self.body.encode()) > MAX_REQUEST_BODY_BYTES:
            size = len(self.body.encode())
            raise OptionsError("body", f"must be at most {MAX_REQUEST_BODY_BYTES // 1024} KiB, not {size} bytes")
        if self.content_type is not None and (self.body is None or _CONTROL.search(self.content_type)):
            raise OptionsError("content_type", "needs a body, and must not contain control characters")
        if self.expect_allow is not None:
            parse_methods(self.expect_allow)
        parse_statuses(self.expect_status)
        check_pattern("regex", self.regex)


def check_method(method: str) -> None:
    """Raise OptionsError unless `method` is an RFC 9110 token; a lower-case standard method is a typo."""
    if method.upper() in STANDARD_METHODS and method != method.upper():
        raise OptionsError("method", f"is case-sensitive: write {method.upper()}, not {method!r}")
    if len(method) > MAX_METHOD_CHARS or not TOKEN.fullmatch(method):
        message = f"must be a method name (letters, digits and !#$%&'*+-.^_`|~), at most {MAX_METHOD_CHARS} long"
        raise OptionsError("method", f"{message}, not {method[:40]!r}")
    if method == "CONNECT":  # h11 hands a 2xx to CONNECT over as a tunnel, whose body would never end
        raise OptionsError("method", "CONNECT opens a tunnel, which an HTTP probe does not speak")


def parse_methods(text: str) -> tuple[str, ...]:
    """Return the methods of `expect_allow`, e.g. "GET, HEAD"; raise OptionsError naming it otherwise."""
    methods = tuple(item.strip() for item in text.split(",") if item.strip())
    if not methods or not all(TOKEN.fullmatch(method) for method in methods):
        raise OptionsError("expect_allow", f"must be method names separated by commas, e.g. GET, HEAD; not {text!r}")
    return methods


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
        url, method, path = _url(session, options.path), options.method, options.path
        first_url = _clip(url)
        try:
            reply = await ask(session, method, path, first=True, options=options)
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
                reply = await ask(session, method, path, first=False, options=options)
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
        findings = await check_methods(session, options, method, path, reply.response)
        if findings:
            raise MethodSemanticsError(_clip("; ".join(findings)))

    return await converse(target, options, dialogue, deadline=deadline)


class MethodSemanticsError(ProbeError):
    """The server's answers break RFC 9110's method semantics, or its Allow header lacks `expect_allow`."""

    failure = "method_semantics"


async def check_methods(
    session: Session, options: Options, method: str, path: str, response: h11.Response
) -> list[str]:
    """Return what the final answer and, with `method_semantics`, the extra requests break; [] if nothing is checked.

    `expect_allow` is about a 405 or an OPTIONS answer: with the method checks on, a 200 to GET leaves it to
    their OPTIONS request; without them, the final answer is the only one there is.
    """
    expected = parse_methods(options.expect_allow) if options.expect_allow else ()
    code = response.status_code
    own = expected if code == 405 or method == "OPTIONS" or not options.method_semantics else ()
    required = options.method_semantics and code == 405  # RFC 9110 15.5.6: a 405 MUST carry Allow
    findings = check_allow(f"the answer to {method} (HTTP {code})", _allow(response), own, required)
    if options.method_semantics:
        findings += await check_semantics(session, expected, path, response if method == "GET" else None)
    return findings


def check_allow(what: str, allow: list[str] | None, expected: tuple[str, ...], required: bool) -> list[str]:
    """Return findings about an answer's Allow header: none though `required` or methods are `expected`, or
    `expected` methods it lacks (Allow is case-sensitive, as methods are).
    """
    if allow is None:
        return [f"{what} has no Allow header"] if expected or required else []
    missing = [method for method in expected if method not in allow]
    if missing:
        return [f"the Allow header of {what} lacks {', '.join(missing)} (it lists {', '.join(allow) or 'nothing'})"]
    return []


async def check_semantics(
    session: Session, expected: tuple[str, ...], path: str, get: h11.Response | None
) -> list[str]:
    """Return what the server breaks of RFC 9110 for `path`, recording its answers in details.

    1. HEAD answers with GET's status, Content-Type and (when both send it) Content-Length; `get` is
       the main request's answer when that was a GET, else a GET is sent.
    2. A method it does not know gets 501, or 405 with an Allow header.
    3. OPTIONS lists the methods in Allow, and those `expected` (a 501 says OPTIONS is not implemented,
       which RFC 9110 permits when nothing is expected).
    A server that hangs up or does not speak HTTP to one of these requests is a finding too.
    """
    findings: list[str] = []
    facts: dict[str, Any] = {"findings": findings}
    session.details["method_semantics"] = facts

    async def answer(method: str, response: h11.Response | None = None) -> h11.Response | None:
        try:
            response = response or await side_request(session, method, path)
        except (ConnectionClosed, ProtocolError) as error:
            findings.append(f"{method}: {error}")
            return None
        facts[method] = {"status": response.status_code, **_described(response)}
        return response

    get = await answer("GET", get)
    head = await answer("HEAD")
    if get is not None and head is not None:
        findings += compare_head(get, head)
    if (unknown := await answer(UNKNOWN_METHOD)) is not None:
        code = unknown.status_code
        if code not in (405, 501):
            findings.append(f"unknown method {UNKNOWN_METHOD} answered HTTP {code}, expected 501 or 405")
        findings += check_allow(f"the answer to {UNKNOWN_METHOD} (HTTP {code})", _allow(unknown), (), code == 405)
    if (allowed := await answer("OPTIONS")) is not None:
        what = f"the OPTIONS answer (HTTP {allowed.status_code})"
        findings += check_allow(what, _allow(allowed), expected, allowed.status_code != 501)
    return findings


def compare_head(get: h11.Response, head: h11.Response) -> list[str]:
    """Return how HEAD's answer differs from GET's in status, Content-Type and Content-Length (RFC 9110 9.3.2)."""
    if head.status_code != get.status_code:
        return [f"HEAD answered HTTP {head.status_code}, GET HTTP {get.status_code}"]
    findings = []
    for name in (b"content-type", b"content-length"):
        got, headed = _header(get, name), _header(head, name)
        if got != headed and (name == b"content-type" or (got and headed)):
            label = name.decode().title()
            findings.append(f"HEAD's {label} {_clip(headed or '(none)')} differs from GET's {_clip(got or '(none)')}")
    return findings


async def side_request(session: Session, method: str, path: str) -> h11.Response:
    """Ask `path` with `method` on a connection of its own and return the answer's head; the body is never read.

    Its clock is its own, so the checks do not count in the probe's latency phases; the deadline is the probe's.
    """
    target = session.target
    conn = await open_connection(
        target.host, target.port, session.options, deadline=session.conn.deadline, clock=PhaseClock()
    )
    try:
        if target.tls == "implicit":
            await conn.start_tls(session.options, server_name=session.server_name)
        reply = Reply(conn)
        await reply.send(h11.Request(method=method, target=path, headers=_request_headers(session, method, None)))
        await reply.first_bytes()
        return await reply.headers()
    finally:
        conn.close()


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


async def ask(session: Session, method: str, path: str, *, first: bool, options: Options) -> Reply:
    """Send one request on the session's connection and return the reply once its headers arrived.

    The body goes with the method it was set for: a 307 or 308 repeats it, a 303 turns the request into a bare GET.
    """
    reply = Reply(session.conn)
    body = options.body.encode() if options.body is not None and method == options.method else None
    headers = _request_headers(session, method, body, options.content_type)
    await reply.send(h11.Request(method=method, target=path, headers=headers), body)
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
    for key, name in (("server_header", b"server"), ("powered_by", b"x-powered-by")):  # for the version audit
        if value := _header(response, name):
            session.details[key] = _clip(value)
    if (allow := _allow(response)) is not None:
        session.details["allow"] = allow
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

    async def send(self, request: h11.Request, body: bytes | None = None) -> None:
        data = self.parser.send(request) + (self.parser.send(h11.Data(data=body)) if body else b"")
        await self.conn.write(data + self.parser.send(h11.EndOfMessage()), what="the HTTP request")

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


def _request_headers(
    session: Session, method: str, body: bytes | None, content_type: str | None = None
) -> list[tuple[str, str]]:
    headers = [("Host", _authority(session)), ("User-Agent", USER_AGENT), ("Accept", "*/*"), ("Connection", "close")]
    if body is not None or method in METHODS_WITH_CONTENT:  # RFC 9110 8.6: their length, even when 0
        headers.append(("Content-Length", str(len(body or b""))))
    if body is not None and content_type:
        headers.append(("Content-Type", content_type))
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


def _allow(response: h11.Response) -> list[str] | None:
    """Return the methods of every Allow header, in order (at most MAX_ALLOWED); None when there is none."""
    values = [value.decode("latin-1") for key, value in response.headers if key == b"allow"]
    if not values:
        return None
    methods = [_clip(item.strip()) for value in values for item in value.split(",") if item.strip()]
    return methods[:MAX_ALLOWED]


def _described(response: h11.Response) -> dict[str, Any]:
    """Return the headers the method checks compare and report, as they are in details."""
    facts = {"content_type": _header(response, b"content-type"), "content_length": _header(response, b"content-length")}
    facts = {key: _clip(value) for key, value in facts.items() if value is not None}
    if (allow := _allow(response)) is not None:
        facts["allow"] = allow
    return facts


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
    """Return server text fit for details and reasons, at most MAX_DETAIL_CHARS.

    h11 lets ESC and DEL through in reasons and header values; "?" marks what `printable()` replaced,
    since a header value or URL with a space where the server put a control would read as another value.
    """
    return printable(text, limit=MAX_DETAIL_CHARS, replacement="?")


def url_options(parts: urllib.parse.SplitResult) -> dict[str, Any]:
    """Return the request path (with its query) an http(s) URL names."""
    return {"path": (parts.path or "/") + (f"?{parts.query}" if parts.query else "")}


PROTOCOL = Protocol(
    key="http",
    label="HTTP",
    summary="one request (following redirects), with the status, keyword and every hop's certificate checked",
    options=Options,
    probe=probe,
    blackbox_prober="http",
    tls_modes=TLS_MODES,
    schemes=(Scheme("http", "none", 80), Scheme("https", "implicit", 443)),
    url_options=url_options,
    flags=(
        Flag("--expect-status", "expect_status", "statuses that count as up, e.g. 200,301 or 2xx", metavar="CODES"),
        Flag("--keyword", "keyword", "text the body must contain"),
        Flag("--method", "method", "the request method (default GET)"),
        Flag("--no-follow", "follow_redirects", "do not follow redirects", value=False),
        Flag("--body", "body", "the request body (UTF-8, at most 64 KiB)", metavar="TEXT"),
        Flag("--content-type", "content_type", "the request body's Content-Type", metavar="TYPE"),
        Flag("--expect-allow", "expect_allow", "methods the answer's Allow header must list", metavar="METHODS"),
        Flag(
            "--method-semantics",
            "method_semantics",
            "also check HEAD against GET, an unknown method (501 or 405) and OPTIONS (Allow)",
            value=True,
        ),
    ),
    failures={
        "method_semantics": "HTTP answers break RFC 9110 method semantics (HEAD unlike GET, an unknown method not"
        " answered 501 or 405, a 405 or OPTIONS answer without Allow) or Allow lacks a method of expect_allow",
    },
    shown=(
        ("content_type", "Content-Type"),
        ("content_length", "Content-Length"),
        ("body_bytes", "Body bytes read"),
        ("body_truncated", "Body cut at the read limit"),
        ("redirects", "Redirects"),
        ("location", "Location"),
        ("allow", "Allow"),
        ("server_header", "Server"),
        ("powered_by", "X-Powered-By"),
        ("method_semantics", "Method semantics"),
    ),
)
