"""HTTP method semantics (RFC 9110): any method with a body, Allow checks, and `method_semantics` against
small servers that follow or break the rules, and a real nginx (whose 405s carry no Allow header).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import pytest

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import http
from tests.conftest import need
from tests.peers.dovecot import free_ports

TIMEOUT = 5.0
ALLOW = "GET, HEAD, OPTIONS"
PAGE = b"<p>read only</p>"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


@dataclass
class MethodServer:
    """An HTTP/1.1 server on 127.0.0.1 answering every method through `handler`; None hangs up without a word."""

    handler: Callable[[Request], Answer | None]
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ")
            headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            self.requests.append(Request(method, path, headers, body))
            answer = self.handler(self.requests[-1])
            if answer is not None:
                status, extra, content = answer
                extra = {"Content-Length": str(len(content)), **extra, "Connection": "close"}
                lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in extra.items())]
                writer.write("\r\n".join([*lines, "", ""]).encode() + (b"" if method == "HEAD" else content))
                await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MethodServer]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


def read_only(request: Request) -> Answer:
    """Follow RFC 9110 for a read-only resource: GET and HEAD alike, 405 with Allow, 501 for unknown methods."""
    if request.method in ("GET", "HEAD"):
        return 200, {"Content-Type": "text/html"}, PAGE
    if request.method == "OPTIONS":
        return 204, {"Allow": ALLOW}, b""
    if request.method in ("POST", "PUT", "DELETE", "PATCH"):
        return 405, {"Allow": ALLOW}, b"not here"
    return 501, {}, b"unknown method"


def anything_goes(request: Request) -> Answer:
    """Answer every method as if it were GET, as many application servers do."""
    return 200, {"Content-Type": "text/html"}, PAGE


async def probe(port: int, **raw):
    return await run_probe("http", Target("127.0.0.1", port), http.Options.from_mapping(raw), timeout=TIMEOUT)


async def test_it_sends_any_method_token_with_its_body_and_content_type():
    async with MethodServer(lambda request: (201, {}, b"")).running() as server:
        result = await probe(server.port, method="PROPPATCH", body='{"name": "é"}', content_type="application/json")

    assert result.status is Status.UP, result.reason
    request = server.requests[0]
    assert (request.method, request.body) == ("PROPPATCH", '{"name": "é"}'.encode())
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len('{"name": "é"}'.encode()))


async def test_it_sends_a_put_without_a_body_with_content_length_zero():
    async with MethodServer(lambda request: (204, {}, b"")).running() as server:
        result = await probe(server.port, method="PUT")

    assert result.status is Status.UP, result.reason
    assert server.requests[0].headers["content-length"] == "0"


@pytest.mark.parametrize(("status", "second"), [(307, ("PUT", b"payload")), (303, ("GET", b""))])
async def test_a_307_repeats_the_body_and_a_303_drops_it(status, second):
    def moved(request: Request) -> Answer:
        return (status, {"Location": "/done"}, b"") if request.path == "/" else (200, {}, b"ok")

    async with MethodServer(moved).running() as server:
        result = await probe(server.port, method="PUT", body="payload")

    assert result.status is Status.UP, result.reason
    assert [(request.method, request.body) for request in server.requests] == [("PUT", b"payload"), second]


async def test_a_post_refused_with_405_listing_get_and_head_is_up():
    async with MethodServer(read_only).running() as server:
        result = await probe(server.port, method="POST", expect_status="405", expect_allow="GET, HEAD")

    assert result.status is Status.UP, result.reason
    assert result.details["allow"] == ["GET", "HEAD", "OPTIONS"]


async def test_it_reports_an_allow_header_that_lacks_an_expected_method():
    async with MethodServer(read_only).running() as server:
        result = await probe(server.port, method="DELETE", expect_status="405", expect_allow="GET, PUT")

    assert (result.status, str(result.failure)) == (Status.DOWN, "method_semantics")
    assert (
        result.reason == "the Allow header of the answer to DELETE (HTTP 405) lacks PUT (it lists GET, HEAD, OPTIONS)"
    )


async def test_it_reports_a_405_without_allow_when_methods_are_expected():
    async with MethodServer(lambda request: (405, {}, b"no")).running() as server:
        result = await probe(server.port, method="POST", expect_status="405", expect_allow="GET")

    assert (str(result.failure), result.reason) == (
        "method_semantics",
        "the answer to POST (HTTP 405) has no Allow header",
    )


async def test_a_server_that_follows_rfc_9110_passes_the_method_checks():
    async with MethodServer(read_only).running() as server:
        result = await probe(server.port, method_semantics="true", expect_allow="GET, HEAD")

    assert result.status is Status.UP, result.reason
    semantics = result.details["method_semantics"]
    assert semantics["findings"] == []
    assert semantics[http.UNKNOWN_METHOD]["status"] == 501
    assert semantics["OPTIONS"]["allow"] == ["GET", "HEAD", "OPTIONS"]
    assert semantics["HEAD"] == semantics["GET"] == {"status": 200, "content_type": "text/html", "content_length": "16"}
    # the main GET is the one HEAD is compared with: no second GET
    assert [request.method for request in server.requests] == ["GET", "HEAD", http.UNKNOWN_METHOD, "OPTIONS"]


async def test_it_checks_the_methods_after_a_refused_post():
    async with MethodServer(read_only).running() as server:
        result = await probe(server.port, method="POST", expect_status="405", method_semantics="true")

    assert result.status is Status.UP, result.reason
    assert [request.method for request in server.requests] == ["POST", "GET", "HEAD", http.UNKNOWN_METHOD, "OPTIONS"]


async def test_it_reports_a_server_that_answers_every_method_like_get():
    async with MethodServer(anything_goes).running() as server:
        result = await probe(server.port, method_semantics="true")

    assert (result.status, str(result.failure)) == (Status.DOWN, "method_semantics")
    assert result.reason == (
        f"unknown method {http.UNKNOWN_METHOD} answered HTTP 200, expected 501 or 405;"
        " the OPTIONS answer (HTTP 200) has no Allow header"
    )
    assert result.details["method_semantics"]["findings"] == result.reason.split("; ")


async def test_it_reports_head_headers_unlike_gets():
    def sloppy_head(request: Request) -> Answer:
        if request.method == "HEAD":
            return 200, {"Content-Type": "text/plain", "Content-Length": "3"}, b""
        return read_only(request)

    async with MethodServer(sloppy_head).running() as server:
        result = await probe(server.port, method_semantics="true")

    assert str(result.failure) == "method_semantics"
    assert result.reason == (
        "HEAD's Content-Type text/plain differs from GET's text/html; HEAD's Content-Length 3 differs from GET's 16"
    )


async def test_it_reports_a_server_that_hangs_up_on_an_unknown_method():
    def hangs_up(request: Request) -> Answer | None:
        return None if request.method == http.UNKNOWN_METHOD else read_only(request)

    async with MethodServer(hangs_up).running() as server:
        result = await probe(server.port, method_semantics="true")

    assert str(result.failure) == "method_semantics"
    assert result.reason == (f"{http.UNKNOWN_METHOD}: server closed the connection before sending the HTTP response")


async def test_a_405_to_an_unknown_method_needs_allow():
    def no_allow(request: Request) -> Answer:
        return (405, {}, b"") if request.method == http.UNKNOWN_METHOD else read_only(request)

    async with MethodServer(no_allow).running() as server:
        result = await probe(server.port, method_semantics="true")

    assert result.reason == f"the answer to {http.UNKNOWN_METHOD} (HTTP 405) has no Allow header"


async def test_it_records_server_and_powered_by_without_control_characters():
    headers = {"Server": "Apache/2.4.57 \x1b[31m(Debian)", "X-Powered-By": "PHP/8.2.7\x7f"}
    async with MethodServer(lambda request: (200, headers, b"ok")).running() as server:
        result = await probe(server.port)

    assert result.details["server_header"] == "Apache/2.4.57 ?[31m(Debian)"
    assert result.details["powered_by"] == "PHP/8.2.7?"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"method": "delete"}, "method", "is case-sensitive: write DELETE, not 'delete'"),
        (
            {"method": "GET /admin HTTP/1.1\r\nX-Injected: 1"},
            "method",
            "must be a method name (letters, digits and !#$%&'*+-.^_`|~), at most 32 long,"
            " not 'GET /admin HTTP/1.1\\r\\nX-Injected: 1'",
        ),
        (
            {"method": "M" * 33},
            "method",
            f"must be a method name (letters, digits and !#$%&'*+-.^_`|~), at most 32 long, not {'M' * 33!r}",
        ),
        ({"method": "CONNECT"}, "method", "CONNECT opens a tunnel, which an HTTP probe does not speak"),
        ({"body": "x" * (64 * 1024 + 1)}, "body", "must be at most 64 KiB, not 65537 bytes"),
        ({"content_type": "text/plain"}, "content_type", "needs a body, and must not contain control characters"),
        (
            {"body": "x", "content_type": "text/plain\r\nX-Injected: 1"},
            "content_type",
            "needs a body, and must not contain control characters",
        ),
        (
            {"expect_allow": "GET; HEAD"},
            "expect_allow",
            "must be method names separated by commas, e.g. GET, HEAD; not 'GET; HEAD'",
        ),
    ],
)
def test_it_rejects_bad_method_options_naming_the_field(raw, field, message):
    with pytest.raises(OptionsError) as caught:
        http.Options.from_mapping(raw)

    assert (caught.value.field, caught.value.message) == (field, message)


# A real nginx ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Nginx:
    port: int


@pytest.fixture(scope="module")
def nginx() -> Iterator[Nginx]:
    """Run nginx with a static site at / (its stock 405s, without Allow) and one at /strict/ that sends Allow."""
    binary = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    need(binary is not None, "nginx is not installed (Debian's nginx package)")
    with tempfile.TemporaryDirectory(prefix="nginx-") as temp:
        root = Path(temp)
        (root / "www" / "strict").mkdir(parents=True)
        (root / "www" / "index.html").write_bytes(PAGE)
        (root / "www" / "strict" / "index.html").write_bytes(PAGE)
        port = free_ports(1)[0]
        temps = " ".join(f"{kind}_temp_path {root};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (root / "nginx.conf").write_text(
            f"daemon off; master_process off; pid {root}/nginx.pid; error_log {root}/error.log;\n"
            "events { worker_connections 64; }\n"
            f"http {{ access_log off; {temps} types {{ text/html html; }}\n"
            f"  server {{ listen 127.0.0.1:{port}; root {root}/www;\n"
            "    location /strict/ { if ($request_method !~ ^(GET|HEAD)$) {\n"
            '      add_header Allow "GET, HEAD" always; return 405; } } } }\n'
        )
        command = [binary, "-e", f"{root}/error.log", "-p", str(root), "-c", f"{root}/nginx.conf"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(process, port, root / "error.log")
            yield Nginx(port)
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_port(process: subprocess.Popen, port: int, log: Path) -> None:
    """Return once nginx accepts connections on `port`; raise with its error log if it exits or takes 10 s."""
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not start on {port}: {log.read_text() if log.exists() else '(no log)'}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)


@pytest.mark.peers
async def test_nginx_refuses_post_on_a_static_file_with_405(nginx):
    result = await probe(nginx.port, method="POST", expect_status="405")

    assert result.status is Status.UP, result.reason
    assert result.details["server_header"].startswith("nginx/")


@pytest.mark.peers
async def test_nginx_static_405s_lack_the_allow_header(nginx):
    result = await probe(nginx.port, method_semantics="true")

    assert (result.status, str(result.failure)) == (Status.DOWN, "method_semantics")
    assert result.reason == (
        f"the answer to {http.UNKNOWN_METHOD} (HTTP 405) has no Allow header;"
        " the OPTIONS answer (HTTP 405) has no Allow header"
    )
    assert result.details["method_semantics"]["HEAD"] == result.details["method_semantics"]["GET"]


@pytest.mark.peers
async def test_nginx_configured_to_send_allow_passes_the_method_checks(nginx):
    result = await probe(nginx.port, path="/strict/", method_semantics="true", expect_allow="GET, HEAD")

    assert result.status is Status.UP, result.reason
    assert result.details["method_semantics"]["OPTIONS"]["allow"] == ["GET", "HEAD"]
