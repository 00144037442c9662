"""The MySQL prober against a real MariaDB (greeting, TLS upgrade, logins, refusals) and scripted MySQL peers."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import urllib.parse
from collections.abc import Iterator

import pytest

from monitor.probes import Status, Target, run_probe
from monitor.probes.options import OptionsError
from monitor.probes.protocols import REGISTRY, mysql
from tests.peers.hostile import HostileServer, silent
from tests.peers.mariadb import PASSWORD, USER, MariaDB, running_mariadb

TIMEOUT = 5.0
NONCE = b"0123456789abcdefghij"  # what scripted peers send as the 20-byte scramble nonce
FAKE_CAPABILITIES = mysql.PROTOCOL_41 | mysql.SECURE_CONNECTION | mysql.PLUGIN_AUTH  # no SSL
OK_PACKET = b"\x00\x00\x00\x02\x00\x00\x00"


@pytest.fixture(scope="module")
def mariadb(certs) -> Iterator[MariaDB]:
    with running_mariadb(certs.good) as server:
        yield server


@pytest.fixture
def ten_connections_at_most(mariadb) -> Iterator[MariaDB]:
    """Lower max_connections to MariaDB's minimum, 10, for one test; `holder` is an account without SUPER."""
    mariadb.sql("CREATE USER IF NOT EXISTS 'holder'@'localhost'; SET GLOBAL max_connections = 10")
    try:
        yield mariadb
    finally:
        mariadb.sql("SET GLOBAL max_connections = 151")


async def probe(port: int, tls: str = "none", **raw):
    return await run_probe("mysql", Target("127.0.0.1", port, tls), mysql.Options.from_mapping(raw), timeout=TIMEOUT)


def login(**extra) -> dict:
    return {"username": USER, "password": PASSWORD, **extra}


# Scripted peers: the refusals and plugins a MariaDB cannot be made to produce.


def packet(sequence: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


def greeting(*, plugin: bytes = b"mysql_native_password", capabilities: int = FAKE_CAPABILITIES) -> bytes:
    """Return a MySQL 8-style Initial Handshake Packet, as a whole packet."""
    return packet(
        0,
        b"\x0a8.0.36\0"
        + struct.pack("<I", 42)
        + NONCE[:8]
        + b"\0"
        + struct.pack("<HBHHB", capabilities & 0xFFFF, 255, 2, capabilities >> 16, 21)
        + bytes(10)
        + NONCE[8:]
        + b"\0"
        + plugin
        + b"\0",
    )


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readexactly(4)
    return header[3], await reader.readexactly(int.from_bytes(header[:3], "little"))


def scramble_of(handshake_response: bytes) -> bytes:
    """Return the auth response of a HandshakeResponse41: after 32 fixed bytes and the user name."""
    user_end = handshake_response.index(b"\0", 32)
    size = handshake_response[user_end + 1]
    return handshake_response[user_end + 2 : user_end + 2 + size]


def sha2_server_accepts(scramble: bytes, password: bytes) -> bool:
    """Check a caching_sha2_password scramble the way the server does, knowing only SHA256(SHA256(password))."""
    stored = hashlib.sha256(hashlib.sha256(password).digest()).digest()
    mask = hashlib.sha256(stored + NONCE).digest()
    candidate = bytes(a ^ b for a, b in zip(scramble, mask, strict=True))
    return hashlib.sha256(candidate).digest() == stored


def sends(*chunks: bytes):
    """Return a peer behaviour that sends `chunks`, then waits for the client to hang up."""

    async def behaviour(reader, writer, script):
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        await reader.read()

    return behaviour


# Against MariaDB.


@pytest.mark.peers
async def test_it_parses_the_greeting(mariadb):
    result = await probe(mariadb.port)

    assert result.status is Status.UP, result.reason
    assert "MariaDB" in result.banner
    details = result.details
    assert details["server_software"] == result.banner  # as sent: "5.5.5-10.11.6-MariaDB-0+deb12u1"
    assert details["server_version"] == result.banner.removeprefix("5.5.5-")
    assert (details["protocol_version"], details["auth_plugin"]) == (10, "mysql_native_password")
    assert {"PROTOCOL_41", "SSL", "PLUGIN_AUTH"} <= set(details["capabilities"])
    assert details["connection_id"] > 0
    assert details["plaintext_login_offered"] is True
    assert result.tls is None


@pytest.mark.peers
async def test_it_upgrades_to_tls_with_the_certificate_facts(mariadb, certs):
    result = await probe(mariadb.port, "starttls", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert "localhost" in result.tls.sans
    assert "MariaDB" in result.details["server_software"]
    assert "plaintext_login_offered" not in result.details  # nothing was tried without TLS


@pytest.mark.peers
async def test_it_reports_an_untrusted_certificate(mariadb):
    result = await probe(mariadb.port, "starttls")

    assert str(result.failure) == "tls_untrusted"
    assert result.tls is not None and not result.tls.verified


@pytest.mark.peers
async def test_it_logs_in_over_tls_and_quits(mariadb, certs):
    aborted = mariadb.status("Aborted_clients")  # a logged-in client gone without COM_QUIT counts here

    result = await probe(mariadb.port, "starttls", tls_ca_file=certs.ca_file, **login())

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert mariadb.status("Aborted_clients") == aborted


@pytest.mark.peers
async def test_it_logs_in_without_tls_when_allowed(mariadb):
    result = await probe(mariadb.port, **login(allow_plaintext_login=True))

    assert result.status is Status.UP, result.reason


@pytest.mark.peers
async def test_it_refuses_to_send_a_password_without_tls_before_connecting(mariadb):
    result = await probe(mariadb.port, **login())

    assert (result.status, str(result.failure)) == (Status.UNKNOWN, "config_error")
    assert result.reason == "refusing to send the password without TLS; set allow_plaintext_login to allow it"
    assert result.address is None


@pytest.mark.peers
async def test_it_reports_a_wrong_password_as_auth_failed(mariadb, certs):
    result = await probe(mariadb.port, "starttls", tls_ca_file=certs.ca_file, **login(password="wrong"))

    assert (result.status, str(result.failure)) == (Status.DOWN, "auth_failed")
    assert result.reason == (
        f"login refused: error 1045 (28000): Access denied for user '{USER}'@'127.0.0.1' (using password: YES)"
    )
    assert "MariaDB" in result.banner  # what the greeting showed is kept


@pytest.mark.peers
async def test_an_account_for_another_host_gets_access_denied(mariadb, certs):
    # 127.0.0.1 has an account (USER's), so MariaDB greets and refuses the login, not the host.
    mariadb.sql("CREATE USER IF NOT EXISTS 'far'@'10.9.9.9' IDENTIFIED BY 'far-secret'")

    result = await probe(mariadb.port, "starttls", tls_ca_file=certs.ca_file, username="far", password="far-secret")

    assert str(result.failure) == "auth_failed"
    assert "Access denied for user 'far'@'127.0.0.1'" in result.reason


@pytest.mark.peers
async def test_a_host_without_any_account_gets_host_not_allowed(mariadb):
    # MariaDB rebuilds its list of known hosts on FLUSH PRIVILEGES, not on RENAME USER.
    mariadb.sql(f"RENAME USER '{USER}'@'127.0.0.1' TO '{USER}'@'10.9.9.8'; FLUSH PRIVILEGES")
    try:
        result = await probe(mariadb.port)
    finally:
        mariadb.sql(f"RENAME USER '{USER}'@'10.9.9.8' TO '{USER}'@'127.0.0.1'; FLUSH PRIVILEGES")

    assert (result.status, str(result.failure)) == (Status.DOWN, "host_not_allowed")
    assert result.reason == (
        "the server does not let this host connect: error 1130: Host '127.0.0.1' is not allowed to connect"
        " to this MariaDB server"
    )
    assert result.banner == ""  # the error came instead of the greeting


@pytest.mark.peers
async def test_full_ordinary_connections_refuse_a_login_after_the_greeting(ten_connections_at_most, certs):
    # MariaDB keeps one connection beyond max_connections for an account with SUPER; until that one is
    # taken too, it still greets, and refuses an ordinary account only once it has logged in.
    with ten_connections_at_most.holding(10, "holder"):
        greeted = await probe(ten_connections_at_most.port)
        # The greeted probe's connection takes the extra slot until MariaDB has noticed it closed, a moment
        # later; a login in that moment is refused before the greeting instead. Wait for the slot.
        for _ in range(50):
            logged_in = await probe(ten_connections_at_most.port, "starttls", tls_ca_file=certs.ca_file, **login())
            if logged_in.banner:
                break
            await asyncio.sleep(0.1)

    assert greeted.status is Status.UP, greeted.reason
    assert (logged_in.status, str(logged_in.failure)) == (Status.DOWN, "too_many_connections")
    assert logged_in.reason == "the server has too many connections: error 1040 (08004): Too many connections"


@pytest.mark.peers
async def test_the_extra_super_connection_taken_too_the_error_replaces_the_greeting(ten_connections_at_most):
    with ten_connections_at_most.holding(10, "holder"), ten_connections_at_most.holding(1, "root"):
        result = await probe(ten_connections_at_most.port)

    assert (result.status, str(result.failure)) == (Status.DOWN, "too_many_connections")
    assert result.reason == "the server has too many connections: error 1040: Too many connections"
    assert result.banner == ""


@pytest.mark.peers
async def test_an_unsupported_plugin_is_reported_as_such(mariadb, certs):
    if mariadb.sql("SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'") == "0":
        mariadb.sql("INSTALL SONAME 'auth_ed25519'")  # shipped with mariadb-server, not loaded by default
    mariadb.sql("CREATE USER IF NOT EXISTS 'edwards'@'127.0.0.1' IDENTIFIED VIA ed25519 USING PASSWORD('secret')")

    result = await probe(mariadb.port, "starttls", tls_ca_file=certs.ca_file, username="edwards", password="secret")

    assert (result.status, str(result.failure)) == (Status.UNKNOWN, "auth_unsupported")
    assert result.reason == (
        "the server asks for the client_ed25519 authentication plugin;"
        " the probe speaks mysql_native_password, caching_sha2_password"
    )


# Against scripted peers.


async def test_error_1130_instead_of_a_greeting_is_host_not_allowed():
    refusal = b"\xff\x6a\x04Host '192.0.2.7' is not allowed to connect to this MySQL server"
    async with HostileServer(sends(packet(0, refusal)), "tcp") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "host_not_allowed",
        "the server does not let this host connect: error 1130: Host '192.0.2.7' is not allowed to connect"
        " to this MySQL server",
    )


async def test_other_errors_are_server_rejected_with_code_and_message():
    refusal = b"\xff\x69\x04Host 'x' is blocked because of many connection errors\x07"
    async with HostileServer(sends(packet(0, refusal)), "tcp") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "server refused the connection: error 1129: Host 'x' is blocked because of many connection errors?",
    )


async def test_it_reports_missing_tls_when_the_upgrade_is_required():
    async with HostileServer(sends(greeting()), "tcp") as server:
        result = await probe(server.port, "starttls")

    assert (str(result.failure), result.reason) == (
        "starttls_unavailable",
        "server does not offer TLS (no CLIENT_SSL in its greeting)",
    )
    assert result.details["server_software"] == "8.0.36"


async def test_it_logs_in_with_the_caching_sha2_fast_path():
    after_login: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def caching_sha2_server(reader, writer, script):
        writer.write(greeting(plugin=b"caching_sha2_password"))
        sequence, response = await read_packet(reader)
        if sha2_server_accepts(scramble_of(response), PASSWORD.encode()):
            writer.write(packet(sequence + 1, b"\x01\x03") + packet(sequence + 2, OK_PACKET))
            after_login.set_result(await read_packet(reader))
        else:
            writer.write(packet(sequence + 1, b"\xff\x15\x04#28000Access denied"))
        await writer.drain()

    async with HostileServer(caching_sha2_server, "tcp") as server:
        result = await probe(server.port, **login(allow_plaintext_login=True))
        assert result.status is Status.UP, result.reason
        assert await asyncio.wait_for(after_login, TIMEOUT) == (0, b"\x01")  # COM_QUIT, in a sequence of its own


async def test_caching_sha2_full_authentication_without_tls_is_unsupported():
    async def full_authentication(reader, writer, script):
        writer.write(greeting(plugin=b"caching_sha2_password"))
        sequence, _ = await read_packet(reader)
        writer.write(packet(sequence + 1, b"\x01\x04"))
        await writer.drain()
        await reader.read()

    async with HostileServer(full_authentication, "tcp") as server:
        result = await probe(server.port, **login(allow_plaintext_login=True))

    assert (result.status, str(result.failure)) == (Status.UNKNOWN, "auth_unsupported")
    assert "over TLS only" in result.reason


async def test_a_16_mib_length_field_is_refused_before_reading_it():
    async with HostileServer(sends(b"\xff\xff\xff\x00" + b"\x0a" * 1000), "tcp") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "response_too_large",
        "the server greeting announces 16777215 bytes, more than the 65536 accepted",
    )


async def test_a_text_protocol_is_not_a_mysql_greeting():
    async with HostileServer(sends(b"220 mail.test ESMTP ready\r\n"), "tcp") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        "the server greeting is not a MySQL packet: 220 mail.test ESMTP ready\\r\\n",
    )


async def test_garbage_in_a_packet_is_a_protocol_error():
    async with HostileServer(sends(packet(0, b"\x07\x9c\x00garbage")), "tcp") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        "the server greeting has protocol version 7, not 10: \\x07\\x9c\\x00garbage",
    )


async def test_a_greeting_cut_short_is_a_protocol_error():
    async with HostileServer(sends(packet(0, b"\x0a5.7.44\0\x01\x00")), "tcp") as server:
        result = await probe(server.port)

    assert str(result.failure) == "protocol_error"
    assert result.reason.startswith("the server greeting is cut short")


async def test_a_packet_out_of_sequence_is_a_protocol_error():
    async with HostileServer(sends(packet(3, greeting()[4:])), "tcp") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        "the server greeting has sequence number 3, expected 0",
    )


async def test_a_silent_server_times_out():
    async with HostileServer(silent, "tcp") as server:
        result = await run_probe("mysql", Target("127.0.0.1", server.port), mysql.Options(), timeout=0.5)

    assert (str(result.failure), result.reason) == ("timeout", "timed out waiting for the server greeting")


# What the module declares.


def test_a_url_names_the_user_but_never_the_password():
    assert mysql.PROTOCOL.url_options(urllib.parse.urlsplit("mysql://monitor@db.test:3307")) == {"username": "monitor"}
    with pytest.raises(OptionsError) as error:
        mysql.PROTOCOL.url_options(urllib.parse.urlsplit("mysql://monitor:secret@db.test"))
    assert error.value.message == "a password in a URL ends up in shell history and logs; give it apart from the URL"


def test_starttls_runs_on_the_standard_port():
    protocol = REGISTRY["mysql"]
    assert (protocol.standard_port("none"), protocol.standard_port("starttls")) == (3306, 3306)
    assert "implicit" not in protocol.tls_modes
