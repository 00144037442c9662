"""The POP3 prober against a real Dovecot (plain, STLS, implicit TLS) and scripted servers for refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.probes import Status, Target, run_probe
from monitor.probes.protocols import pop3
from tests.peers.dovecot import Dovecot, running_dovecot
from tests.peers.smtp_server import LineServer

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def dovecot(certs) -> Iterator[Dovecot]:
    with running_dovecot(certs.good) as server:
        yield server


@pytest.fixture(scope="module")
def dovecot_without_tls() -> Iterator[Dovecot]:
    with running_dovecot(None) as server:
        yield server


async def probe(port: int, tls: str = "none", **raw):
    return await run_probe("pop3", Target("127.0.0.1", port, tls), pop3.Options.from_mapping(raw), timeout=TIMEOUT)


def scripted(replies: dict[bytes, bytes]):
    """Return an answer function replying by command word; QUIT always gets +OK."""
    replies = {b"QUIT": b"+OK bye\r\n", **replies}
    return lambda line: replies.get(line.split(b" ")[0].upper(), b"-ERR unknown command\r\n")


@pytest.mark.peers
async def test_it_records_the_greeting_and_capabilities(dovecot):
    result = await probe(dovecot.pop3)

    assert result.status is Status.UP, result.reason
    assert result.banner.startswith("+OK Dovecot")
    assert {"USER", "UIDL", "STLS"} <= set(result.details["capabilities"])
    assert result.tls is None


@pytest.mark.peers
async def test_it_upgrades_with_stls_and_asks_capa_again(dovecot, certs):
    result = await probe(dovecot.pop3, "starttls", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert "localhost" in result.tls.sans
    assert "USER" in result.details["capabilities_after_tls"]
    assert "STLS" not in result.details["capabilities_after_tls"]  # Dovecot offers it only before TLS


@pytest.mark.peers
async def test_it_speaks_pop3_inside_implicit_tls(dovecot, certs):
    result = await probe(dovecot.pop3s, "implicit", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert "USER" in result.details["capabilities"]


@pytest.mark.peers
async def test_it_reports_missing_stls(dovecot_without_tls):
    result = await probe(dovecot_without_tls.pop3, "starttls")

    assert (str(result.failure), result.reason) == ("starttls_unavailable", "STLS not offered in CAPA reply")
    assert "USER" in result.details["capabilities"]


async def test_it_reports_an_err_greeting_as_server_rejected():
    async with LineServer(b"-ERR [SYS/TEMP] too many connections\r\n", scripted({})) as server:
        result = await probe(server.port)

    assert str(result.failure) == "server_rejected"
    assert result.reason == "server refused the POP3 session: -ERR [SYS/TEMP] too many connections"


async def test_it_accepts_a_server_that_predates_capa():
    async with LineServer(b"+OK old pop3 server\r\n", scripted({})) as server:
        result = await probe(server.port)

    assert result.status is Status.UP, result.reason
    assert result.details["capabilities"] == []
    assert server.received == [b"CAPA", b"QUIT"]


async def test_it_undoes_dot_stuffing_in_the_capa_list():
    capa = b"+OK\r\nUSER\r\n..DOTTED\r\n.\r\n"
    async with LineServer(b"+OK ready\r\n", scripted({b"CAPA": capa})) as server:
        result = await probe(server.port)

    assert result.details["capabilities"] == ["USER", ".DOTTED"]


async def test_it_reports_a_refused_stls():
    replies = {b"CAPA": b"+OK\r\nSTLS\r\n.\r\n", b"STLS": b"-ERR TLS is broken today\r\n"}
    async with LineServer(b"+OK ready\r\n", scripted(replies)) as server:
        result = await probe(server.port, "starttls")

    assert (str(result.failure), result.reason) == ("server_rejected", "server rejected STLS: -ERR TLS is broken today")


async def test_it_reports_a_greeting_that_is_not_pop3():
    async with LineServer(b"* OK this is IMAP\r\n") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        "the POP3 greeting is not a POP3 reply: * OK this is IMAP",
    )
