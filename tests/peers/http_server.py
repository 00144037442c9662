"""A real HTTP(S) server for tests: the standard library's ThreadingHTTPServer on 127.0.0.1, in a thread.

    async with HTTPServer({"/": Reply(200, b"healthy"), "/moved": Reply.redirect("/")}, tls=certs.good) as server:
        server.port, server.url("/"), server.requests

A route is a `Reply` or a function of the `Request` returning one; unknown paths get `fallback`, or 404.
Each request is kept with its body. `with` (or `start()` and `close()`) serves it from synchronous tests.
TLS, when asked for, is handshaken in each connection's own thread, so a client that fails
verification cannot stall the others.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trustme

POLL_INTERVAL = 0.05  # seconds; how quickly the server notices it should stop


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Reply:
        return cls(status, b"", {"Location": location})


Route = Reply | Callable[[Request], Reply]


class HTTPServer:
    """Serve `routes` ({path: Reply or function}) over HTTP, or HTTPS with the `tls` certificate.

    `tls` may also be a server SSLContext, for a chain trustme cannot make (extra certificates sent). `port`
    picks the port (0, the default: any free one).
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        tls: trustme.LeafCert | ssl.SSLContext | None = None,
        fallback: Route | None = None,
        port: int = 0,
    ) -> None:
        self.routes = dict(routes)
        self.fallback = fallback
        self._bind_port = port  # 0: any free port; a fixed one lets a test take a peer down and bring it back
        self.requests: list[Request] = []
        self.scheme = "https" if tls else "http"
        self._context = tls if isinstance(tls, ssl.SSLContext) else _server_context(tls) if tls else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> HTTPServer:
        self._server = _Server(("127.0.0.1", self._bind_port), _Handler)
        self._server.app = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL_INTERVAL,), daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> HTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> HTTPServer:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def reply_to(self, request: Request) -> Reply:
        self.requests.append(request)
        route = self.routes.get(request.path.split("?")[0], self.fallback)
        if route is None:
            return Reply(404, b"not found")
        return route(request) if callable(route) else route


class _Server(http.server.ThreadingHTTPServer):
    app: HTTPServer
    daemon_threads = True

    def finish_request(self, request: socket.socket, client_address) -> None:
        context = self.app._context
        if context is not None:
            try:
                request = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):  # the client refused our certificate: that is the test
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        """Stay quiet: clients that hang up early are what many tests do on purpose."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_POST(self) -> None:
        self._answer(send_body=True)

    def do_OPTIONS(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""

    def _answer(self, *, send_body: bool) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.app.reply_to(Request(self.command, self.path, headers, body))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(ConnectionError):
            if send_body:
                self.wfile.write(reply.body)
        self.close_connection = True


def _server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context
