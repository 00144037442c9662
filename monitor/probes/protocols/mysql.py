"""MySQL and MariaDB probe: the greeting, an optional TLS upgrade and login, COM_QUIT; exposes `probe`, `Options`.

The greeting (Initial Handshake Packet v10) gives `details`: protocol_version, server_version (MariaDB's
"5.5.5-" replication prefix removed), connection_id, capabilities (names of the main CLIENT_* flags),
charset (the collation id), status_flags, auth_plugin, and server_software (the version string as sent,
which the version-exposure audit reads; the banner is the same string). `plaintext_login_offered`: any
client may answer the greeting without TLS, and no capability says a login will then be refused, so in
mode none it is True unless MySQL refuses our plaintext login with error 3159 (require_secure_transport;
MariaDB answers that with a plain 1045); in mode starttls it is left out, as nothing is tried in plaintext.

TLS modes: MySQL has no implicit TLS port, so "starttls" means "require the upgrade": the server must
offer CLIENT_SSL, then the SSLRequest packet and the handshake follow. "none" never upgrades.

Login (optional): mysql_native_password and caching_sha2_password (its fast path; the full exchange only
over TLS, where the password goes in clear inside it, since the RSA exchange without TLS is not
implemented). Any other plugin the server switches to fails as `auth_unsupported` (status unknown: the
service may be fine, the probe cannot check it as configured). A password is never used without TLS
unless `allow_plaintext_login` says so, though these plugins send only a scramble: a sniffed scramble
and nonce still let an attacker test guesses offline. Without a username the probe hangs up after the
greeting (or the TLS handshake). The server counts that as a handshake error, and `max_connect_errors`
(100) of them in a row from one host get that host blocked (error 1129) where the host cache is on, so
frequent probes should log in, e.g. as an account without password or privileges, as HAProxy advises.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

from monitor.probes.errors import (
    AuthFailed,
    ConfigError,
    ProbeError,
    ProtocolError,
    ResponseTooLarge,
    ServerRejected,
    StartTLSUnavailable,
)
from monitor.probes.mailreply import PLAINTEXT_REFUSAL
from monitor.probes.net import Connection, preview
from monitor.probes.options import LoginOptions, TLSOptions
from monitor.probes.protocol import Protocol, Scheme, login_url_options
from monitor.probes.result import Phases, Result, Status
from monitor.probes.session import Session, Target, converse
from monitor.probes.text import printable

TLS_MODES = ("none", "starttls")
MAX_PACKET_SIZE = 64 * 1024  # a greeting is ~100 bytes and an error ~600; 16 MiB packets carry only query data
MAX_AUTH_ROUNDS = 5  # auth switches and "more data" steps of one login; caching_sha2_password needs three
MAX_TEXT_CHARS = 200  # of a version string or error message the server chose
CHARSET_UTF8 = 33  # utf8_general_ci, known to every server since 4.1
PROTOCOL_VERSION = 10  # the greeting of every server since MySQL 3.21
OK, MORE_DATA, AUTH_SWITCH, ERR = 0x00, 0x01, 0xFE, 0xFF  # first byte of a reply during login
FAST_AUTH_OK, FULL_AUTH = 3, 4  # caching_sha2_password's "more data" steps
NATIVE, CACHING_SHA2 = "mysql_native_password", "caching_sha2_password"
MARIADB_PREFIX = "5.5.5-"  # MariaDB 10+ announces "5.5.5-10.11.6-MariaDB" so old replicas accept it

CAPABILITIES = {  # the main CLIENT_* flags, reported by name
    "LONG_PASSWORD": 1 << 0,
    "CONNECT_WITH_DB": 1 << 3,
    "COMPRESS": 1 << 5,
    "LOCAL_FILES": 1 << 7,
    "PROTOCOL_41": 1 << 9,
    "SSL": 1 << 11,
    "TRANSACTIONS": 1 << 13,
    "SECURE_CONNECTION": 1 << 15,
    "MULTI_STATEMENTS": 1 << 16,
    "MULTI_RESULTS": 1 << 17,
    "PLUGIN_AUTH": 1 << 19,
    "CONNECT_ATTRS": 1 << 20,
    "SESSION_TRACK": 1 << 23,
    "DEPRECATE_EOF": 1 << 24,
}
PROTOCOL_41, SSL, SECURE_CONNECTION, PLUGIN_AUTH = 1 << 9, 1 << 11, 1 << 15, 1 << 19
ACCESS_DENIED = {1045, 1698}  # wrong password; 1698: an account that may log in only through its unix socket
HOST_NOT_ALLOWED, TOO_MANY_CONNECTIONS = 1130, 1040
# MySQL's refusal of a login without TLS under require_secure_transport; MariaDB answers 1045 instead.
SECURE_TRANSPORT_REQUIRED = 3159


class HostNotAllowed(ProbeError):
    failure = "host_not_allowed"


class TooManyConnections(ProbeError):
    failure = "too_many_connections"


class AuthUnsupported(ProbeError):
    failure = "auth_unsupported"
    status = Status.UNKNOWN


@dataclasses.dataclass(frozen=True)
class Options(TLSOptions, LoginOptions):
    """Connection, certificate and login options; MySQL needs nothing of its own."""


@dataclasses.dataclass(frozen=True)
class Greeting:
    """What the Initial Handshake Packet says; fields of 4.1 and later are None from older servers."""

    protocol_version: int
    server_version: str
    connection_id: int
    capabilities: int
    charset: int | None
    status_flags: int | None
    nonce: bytes  # the 20 bytes the password scramble mixes in
    auth_plugin: str | None


class Packets:
    """MySQL packets on a connection: a 3-byte length and a sequence id that both sides count up."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sequence = 0

    async def read(self, *, what: str) -> bytes:
        """Return the next packet's payload; refuse one over MAX_PACKET_SIZE or out of sequence before reading it."""
        header = await self.conn.read_exact(4, what=what)
        if self.sequence == 0 and header.isascii() and header.decode("ascii").isprintable():
            rest = await self.conn.read_some(what=what, limit=60)  # what is buffered: a text protocol's first line
            raise ProtocolError(f"{what} is not a MySQL packet: {preview(header + rest)}")
        size = int.from_bytes(header[:3], "little")
        if size > MAX_PACKET_SIZE:
            raise ResponseTooLarge(f"{what} announces {size} bytes, more than the {MAX_PACKET_SIZE} accepted")
        if header[3] != self.sequence:
            raise ProtocolError(f"{what} has sequence number {header[3]}, expected {self.sequence}")
        self.sequence = (self.sequence + 1) % 256
        return await self.conn.read_exact(size, what=what, limit=MAX_PACKET_SIZE)

    async def write(self, payload: bytes, *, what: str) -> None:
        header = len(payload).to_bytes(3, "little") + bytes([self.sequence])
        self.sequence = (self.sequence + 1) % 256
        await self.conn.write(header + payload, what=what)


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    if options.password and target.tls == "none" and not options.allow_plaintext_login:
        return Result(ConfigError.status, ConfigError.failure, PLAINTEXT_REFUSAL, Phases())

    async def dialogue(session: Session) -> None:
        packets = Packets(session.conn)
        payload = await packets.read(what="the server greeting")
        if payload[:1] == bytes([ERR]):
            raise server_error(payload, during="the connection")
        greeting = parse_greeting(payload)
        describe(session, greeting)
        if target.tls == "none":  # see the module docstring
            session.details["plaintext_login_offered"] = True
        capabilities = SECURE_CONNECTION | PROTOCOL_41 | CAPABILITIES["LONG_PASSWORD"]
        capabilities |= greeting.capabilities & PLUGIN_AUTH
        if target.tls == "starttls":
            if not greeting.capabilities & SSL:
                raise StartTLSUnavailable("server does not offer TLS (no CLIENT_SSL in its greeting)")
            capabilities |= SSL
            await packets.write(struct.pack("<IIB23x", capabilities, MAX_PACKET_SIZE, CHARSET_UTF8), what="SSLRequest")
            await session.start_tls()
        if options.logs_in:
            await log_in(session, packets, greeting, capabilities, options)
            packets.sequence = 0  # every command starts a new sequence
            await packets.write(b"\x01", what="COM_QUIT")

    return await converse(target, options, dialogue, deadline=deadline)


def parse_greeting(payload: bytes) -> Greeting:
    """Return the Initial Handshake Packet's fields; raise `ProtocolError` for anything else."""
    data = Cursor(payload, "the server greeting")
    version = data.uint(1)
    if version != PROTOCOL_VERSION:
        wanted = f"not {PROTOCOL_VERSION}: {preview(payload)}"
        raise ProtocolError(f"the server greeting has protocol version {version}, {wanted}")
    server_version = readable(data.cstring())
    connection_id, nonce = data.uint(4), data.take(8)
    data.take(1)  # filler
    capabilities, charset, status_flags, plugin = data.uint(2), None, None, None
    if data.remaining:  # servers before 4.1 stop here
        charset, status_flags = data.uint(1), data.uint(2)
        capabilities |= data.uint(2) << 16
        nonce_length = data.uint(1)
        data.take(10)  # reserved; MariaDB keeps its extended capabilities in the last four
        if capabilities & SECURE_CONNECTION:
            nonce += data.take(max(13, nonce_length - 8))[:12]  # the 13th byte is a NUL
        if capabilities & PLUGIN_AUTH:
            plugin = readable(data.cstring(terminated=False))  # MySQL 5.5.7-5.5.9 left out the NUL
    return Greeting(version, server_version, connection_id, capabilities, charset, status_flags, nonce, plugin)


def describe(session: Session, greeting: Greeting) -> None:
    """Record the greeting in the banner and details."""
    session.set_banner(greeting.server_version)
    version = greeting.server_version
    if version.startswith(MARIADB_PREFIX) and "mariadb" in version.lower():
        version = version.removeprefix(MARIADB_PREFIX)
    session.details.update(
        protocol_version=greeting.protocol_version,
        server_version=version,
        server_software=greeting.server_version,
        connection_id=greeting.connection_id,
        capabilities=[name for name, bit in CAPABILITIES.items() if greeting.capabilities & bit],
        charset=greeting.charset,
        status_flags=greeting.status_flags,
        auth_plugin=greeting.auth_plugin,
    )


async def log_in(session: Session, packets: Packets, greeting: Greeting, capabilities: int, options: Options) -> None:
    """Send the HandshakeResponse, then follow auth switches and "more data" steps until OK or an error.

    The first answer uses the plugin the greeting names when we speak it, else mysql_native_password,
    and the server switches us to the one the account needs, as every MySQL client does.
    """
    if not greeting.capabilities & PROTOCOL_41 or not greeting.capabilities & SECURE_CONNECTION:
        raise AuthUnsupported(f"server {greeting.server_version} predates the MySQL 4.1 login, which the probe needs")
    password = (options.password or "").encode("utf-8")
    plugin = greeting.auth_plugin if greeting.auth_plugin in SCRAMBLERS else NATIVE
    response = SCRAMBLERS[plugin](password, greeting.nonce)
    head = struct.pack("<IIB23x", capabilities, MAX_PACKET_SIZE, CHARSET_UTF8)
    body = options.username.encode("utf-8") + b"\0" + bytes([len(response)]) + response
    if capabilities & PLUGIN_AUTH:
        body += plugin.encode("ascii") + b"\0"
    await packets.write(head + body, what="the login")
    for _ in range(MAX_AUTH_ROUNDS):
        reply = await packets.read(what="the reply to the login")
        kind = reply[0] if reply else None
        if kind == OK:
            return
        if kind == ERR:
            if session.conn.tls is None and int.from_bytes(reply[1:3], "little") == SECURE_TRANSPORT_REQUIRED:
                session.details["plaintext_login_offered"] = False
            raise server_error(reply, during="the login")
        if kind == AUTH_SWITCH:
            plugin, nonce = parse_switch(reply)
            await packets.write(SCRAMBLERS[plugin](password, nonce), what=f"the {plugin} response")
        elif kind == MORE_DATA and plugin == CACHING_SHA2 and reply[1:2] == bytes([FAST_AUTH_OK]):
            continue  # the server's cache knew the scramble; the OK follows
        elif kind == MORE_DATA and plugin == CACHING_SHA2 and reply[1:2] == bytes([FULL_AUTH]):
            if session.conn.tls is None:
                raise AuthUnsupported(
                    "the server asks for caching_sha2_password's full exchange, which the probe does over TLS only"
                    " (set the TLS mode to starttls)"
                )
            await packets.write(password + b"\0", what="the password")
        else:
            raise ProtocolError(f"the reply to the login is not OK, an error or an auth switch: {preview(reply)}")
    raise ProtocolError(f"the login took more than {MAX_AUTH_ROUNDS} rounds")


def parse_switch(reply: bytes) -> tuple[str, bytes]:
    """Return the plugin and nonce of an AuthSwitchRequest; raise `AuthUnsupported` for a plugin we do not speak."""
    data = Cursor(reply[1:], "the auth switch request")
    if not data.remaining:  # the pre-4.1 "use the old password hash" request
        raise AuthUnsupported("the server asks for the pre-4.1 mysql_old_password login; the probe does not speak it")
    plugin = readable(data.cstring())
    if plugin not in SCRAMBLERS:
        raise AuthUnsupported(
            f"the server asks for the {plugin} authentication plugin; the probe speaks {', '.join(SCRAMBLERS)}"
        )
    return plugin, data.rest().removesuffix(b"\0")[:20]


def native_scramble(password: bytes, nonce: bytes) -> bytes:
    """Return mysql_native_password's answer: SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    mask = hashlib.sha1(nonce + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """Return caching_sha2_password's answer: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)."""
    if not password:
        return b""
    stage1 = hashlib.sha256(password).digest()
    mask = hashlib.sha256(hashlib.sha256(stage1).digest() + nonce).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


SCRAMBLERS = {NATIVE: native_scramble, CACHING_SHA2: sha2_scramble}


def server_error(payload: bytes, *, during: str) -> ProbeError:
    """Return the typed error for an ERR packet: its code decides the failure kind, its message is the reason."""
    code = int.from_bytes(payload[1:3], "little")
    message = payload[3:]
    state = ""
    if message[:1] == b"#":  # "#28000": the SQL state, sent once the client said it speaks 4.1
        state, message = f" ({readable(message[1:6])})", message[6:]
    text = f"error {code}{state}: {readable(message)}"
    if code == HOST_NOT_ALLOWED:
        return HostNotAllowed(f"the server does not let this host connect: {text}")
    if code == TOO_MANY_CONNECTIONS:
        return TooManyConnections(f"the server has too many connections: {text}")
    if code in ACCESS_DENIED:
        return AuthFailed(f"login refused: {text}")
    return ServerRejected(f"server refused {during}: {text}")


class Cursor:
    """Read fields from one packet's payload, failing with a `ProtocolError` instead of an IndexError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.what, self.position = data, what, 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.position

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise ProtocolError(f"{self.what} is cut short: {preview(self.data)}")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def cstring(self, *, terminated: bool = True) -> bytes:
        """Return the bytes up to the next NUL; without one, the rest, unless a NUL is required."""
        end = self.data.find(b"\0", self.position)
        if end < 0:
            if terminated:
                raise ProtocolError(f"{self.what} has a string without its end: {preview(self.data)}")
            end = len(self.data)
        chunk = self.data[self.position : end]
        self.position = min(end + 1, len(self.data))
        return chunk

    def rest(self) -> bytes:
        return self.take(self.remaining)


def readable(raw: bytes) -> str:
    """Return text a server sent through `printable()` within MAX_TEXT_CHARS, "?" marking what was replaced.

    A version string or plugin name with a space where the server put a control would read as another one.
    """
    return printable(raw, limit=MAX_TEXT_CHARS, replacement="?")


PROTOCOL = Protocol(
    key="mysql",
    label="MySQL / MariaDB",
    summary="greeting, optional TLS upgrade and login (native or caching_sha2 password), COM_QUIT",
    options=Options,
    probe=probe,
    blackbox_prober="tcp",  # blackbox would probe it with its tcp prober: connection and TLS families
    tls_modes=TLS_MODES,
    schemes=(Scheme("mysql", "none", 3306),),
    url_options=login_url_options,
    failures={
        "host_not_allowed": "the server refuses connections from the probe's host (MySQL error 1130)",
        "too_many_connections": "the server has no connection left for the probe (MySQL error 1040)",
        "auth_unsupported": "the server asks for a login method the probe does not speak (status unknown)",
    },
    shown=(
        ("server_version", "Server version"),
        ("protocol_version", "Protocol version"),
        ("auth_plugin", "Auth plugin"),
        ("capabilities", "Capabilities"),
        ("charset", "Collation id"),
        ("plaintext_login_offered", "Login offered without TLS"),
    ),
)
