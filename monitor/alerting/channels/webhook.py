"""The webhook channel: POST a JSON payload, signed with HMAC-SHA256, within one deadline. Exposes `deliver`, `verify`.

The body is exactly the payload given, as compact UTF-8 JSON with sorted keys; `deliver` adds nothing to it
(the payload, including its `schema` version, SCHEMA_VERSION, is built elsewhere). Headers:
`Content-Type: application/json`, `User-Agent: Portwatch/<version>`, `X-Portwatch-Timestamp: <unix seconds>`
and, with a secret, `X-Portwatch-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. A URL's
user and password are sent as basic auth.

A receiver verifies a delivery by recomputing the signature over the timestamp header, a dot and the raw
body bytes, comparing in constant time, and refusing a timestamp more than five minutes off (a replay):

    import hashlib, hmac, time

    def verified(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
        expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 300
        return fresh and hmac.compare_digest(signature, "sha256=" + expected)

`verify()` below is that function. Redirects are not followed: a 3xx is a failure naming where it pointed.
Error sentences show URLs through `monitor.masking.masked` (scheme and host only), the Django-free home of
the masking rule, so this module stays importable without Django.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import string
import time
import urllib.parse
from collections.abc import Mapping
from importlib import metadata

import h11

from monitor.alerting.channels import Delivery, cut
from monitor.masking import masked

SCHEMA_VERSION = 2  # the payload's `schema`; a receiver branches on it, so a breaking change bumps it
MAX_RESPONSE_BODY = 64 * 1024  # bytes of a failed answer read, for its error sentence only
ERROR_EXCERPT = 200  # characters of the answer's body put in the error sentence
RECV_SIZE = 16 * 1024
SIGNATURE_TOLERANCE = 300  # seconds a receiver accepts between the timestamp and its clock
RETRYABLE_STATUSES = (408, 429)  # 4xx that mean "later", not "never"
DEFAULT_PORTS = {"http": 80, "https": 443}
PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")


def _user_agent() -> str:
    try:
        return f"Portwatch/{metadata.version('portwatch')}"
    except metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "Portwatch"


USER_AGENT = _user_agent()


class _Failed(Exception):
    """One delivery's failure: the sentence and whether to retry, turned into a Delivery in `deliver`."""

    def __init__(self, error: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(error)
        self.error, self.retryable, self.status = error, retryable, status


def body_of(payload: Mapping) -> bytes:
    """Return the exact bytes `deliver` sends for `payload`: compact JSON, sorted keys, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the X-Portwatch-Signature value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str, timestamp: str | int, body: bytes, signature: str, *, tolerance: float = 300, now: float | None = None
) -> bool:
    """Return True when `signature` is `body`'s at `timestamp` under `secret` and the timestamp is fresh."""
    timestamp = str(timestamp)
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature.encode("utf-8"), sign(secret, timestamp, body).encode("utf-8"))


def deliver(url: str, payload: Mapping, *, secret: str | None, timeout: float, ca_file: str | None = None) -> Delivery:
    """POST `payload` to `url` and return how it went; connect, send and answer share one `timeout` deadline.

    1. Check the URL (http or https, a host); a bad one fails at once, not retryable.
    2. Build the body and headers, signing when a secret is given.
    3. Connect (and handshake TLS against the system store, or `ca_file`), send, read the answer's head.
    4. A 2xx is success; otherwise read at most MAX_RESPONSE_BODY of the answer for the error sentence.
    """
    started = time.monotonic()
    deadline = started + timeout
    body = body_of(payload)  # a payload that is not JSON is a programming error: it raises
    try:
        parts, where = _checked(url)
        status = _exchange(parts, where, _request(parts, body, secret), body, deadline, timeout, ca_file)
    except _Failed as failed:
        error = _scrubbed(failed.error, secret, url)
        return Delivery(False, failed.status, error, failed.retryable, time.monotonic() - started)
    return Delivery(True, status, "", False, time.monotonic() - started)


def _checked(url: str) -> tuple[urllib.parse.SplitResult, str]:
    parts = urllib.parse.urlsplit(url.strip())
    where = masked(url.strip())
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise _Failed("the webhook URL must start with http:// or https://", retryable=False)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        raise _Failed(
            f"the webhook URL {where} has a port that is not a number from 1 to 65535", retryable=False
        ) from None
    if not parts.hostname:
        raise _Failed("the webhook URL has no host name", retryable=False)
    return parts, where


def _request(parts: urllib.parse.SplitResult, body: bytes, secret: str | None) -> h11.Request:
    timestamp = str(int(time.time()))
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    headers = [
        ("Host", host if parts.port is None else f"{host}:{parts.port}"),
        ("User-Agent", USER_AGENT),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("X-Portwatch-Timestamp", timestamp),
    ]
    if secret:
        headers.append(("X-Portwatch-Signature", sign(secret, timestamp, body)))
    if parts.username is not None:
        headers.append(("Authorization", _basic(parts)))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return h11.Request(method="POST", target=target, headers=headers)


def _exchange(
    parts: urllib.parse.SplitResult,
    where: str,
    request: h11.Request,
    body: bytes,
    deadline: float,
    timeout: float,
    ca_file: str | None,
) -> int:
    """Return the 2xx status of the answer, or raise _Failed saying what went wrong."""
    scheme = parts.scheme.lower()
    try:
        sock = _connect(parts.hostname, parts.port or DEFAULT_PORTS[scheme], deadline)
        try:
            if scheme == "https":
                sock = _handshake(sock, parts.hostname, deadline, ca_file)
            return _converse(sock, where, request, body, deadline)
        finally:
            sock.close()
    except TimeoutError:
        raise _Failed(f"no answer from {where} within {timeout:g} s", retryable=True) from None
    except ssl.SSLCertVerificationError as error:
        raise _Failed(f"the certificate of {where} is not trusted: {error.verify_message}", retryable=False) from None
    except ssl.SSLError as error:
        raise _Failed(f"the TLS handshake with {where} failed: {error.reason or error}", retryable=True) from None
    except ConnectionRefusedError:
        raise _Failed(f"the connection to {where} was refused", retryable=True) from None
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        raise _Failed(f"{where} closed the connection before answering", retryable=True) from None
    except socket.gaierror:
        raise _Failed(f"the host name of {where} does not resolve", retryable=True) from None
    except OSError as error:
        raise _Failed(f"cannot reach {where}: {error.strerror or error}", retryable=True) from None


def _scrubbed(error: str, secret: str | None, url: str) -> str:
    """Return `error` with the secret and the URL's credentials and query masked, should the answer echo them.

    Echo endpoints (httpbin and the like) quote the request back, Authorization header included.
    """
    parts = urllib.parse.urlsplit(url.strip())
    hidden = [secret, parts.query, parts.password, parts.username]
    hidden += [value for _, value in urllib.parse.parse_qsl(parts.query)]
    if parts.username is not None:
        hidden.append(_basic(parts).partition(" ")[2])
    for value in sorted((value for value in hidden if value and len(value) >= 3), key=len, reverse=True):
        error = error.replace(value, "***").replace(urllib.parse.unquote(value), "***")
    return error


def _basic(parts: urllib.parse.SplitResult) -> str:
    credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    # getaddrinfo itself cannot be bounded from here; a name in /etc/hosts or an IP costs nothing.
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError("no address")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_remaining(deadline))
            sock.connect(address)
            return sock
        except TimeoutError:
            sock.close()
            raise
        except OSError as error:
            sock.close()
            last = error
    raise last


def _handshake(sock: socket.socket, host: str, deadline: float, ca_file: str | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca_file)
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    tls.settimeout(_remaining(deadline))
    tls.do_handshake()
    return tls


def _converse(sock: socket.socket, where: str, request: h11.Request, body: bytes, deadline: float) -> int:
    connection = h11.Connection(h11.CLIENT)
    data = connection.send(request) + connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
    sock.settimeout(_remaining(deadline))
    sock.sendall(data)  # since Python 3.5 the timeout bounds the whole sendall
    try:
        response = _head(connection, sock, deadline)
    except h11.RemoteProtocolError:
        raise _Failed(f"{where} did not answer with valid HTTP", retryable=True) from None
    status = response.status_code
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        location = dict(response.headers).get(b"location", b"").decode("latin-1")
        pointed = masked(urllib.parse.urljoin(where, location)) if location else "nowhere"
        raise _Failed(
            f"{where} answered {status}, a redirect to {pointed}; redirects are not followed, "
            "so set the webhook URL to the final address",
            retryable=False,
            status=status,
        )
    excerpt = _excerpt(_body(connection, sock, deadline))
    reason = response.reason.decode("latin-1", "replace")
    said = f"{status} {reason}".strip() + (f": {excerpt}" if excerpt else "")
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    raise _Failed(f"{where} answered {said}", retryable=retryable, status=status)


def _head(connection: h11.Connection, sock: socket.socket, deadline: float) -> h11.Response:
    """Return the answer's final head, skipping 1xx, reading within the deadline."""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            sock.settimeout(_remaining(deadline))
            connection.receive_data(sock.recv(RECV_SIZE))
        elif isinstance(event, h11.Response):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError


def _body(connection: h11.Connection, sock: socket.socket, deadline: float) -> bytes:
    """Return up to MAX_RESPONSE_BODY bytes of the answer's body: what arrives before the deadline or the end."""
    chunks, size = [], 0
    try:
        while size < MAX_RESPONSE_BODY:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                sock.settimeout(_remaining(deadline))
                connection.receive_data(sock.recv(RECV_SIZE))
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
                size += len(event.data)
            else:
                break
    except (TimeoutError, OSError, h11.RemoteProtocolError):
        pass  # the status already says what failed; the body only adds detail
    return b"".join(chunks)[:MAX_RESPONSE_BODY]


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    shown = "".join(char if char in PRINTABLE or (char.isprintable() and char != "\ufffd") else " " for char in text)
    shown = " ".join(shown.split())
    return cut(shown, ERROR_EXCERPT)
