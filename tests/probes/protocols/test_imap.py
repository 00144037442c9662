"""The IMAP prober against a real Dovecot (plain, STARTTLS, implicit TLS) and scripted servers for refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.probes import Status, Target, run_probe
from monitor.probes.protocols import imap
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
    return await run_probe("imap", Target("127.0.0.1", port, tls), imap.Options.from_mapping(raw), timeout=TIMEOUT)


def scripted(replies: dict[bytes, bytes]):
    """Return an answer function replying by command, echoing the tag; LOGOUT always gets BYE and OK."""
    replies = {b"LOGOUT": b"* BYE logging out\r\n{tag} OK LOGOUT completed\r\n", **replies}

    def answer(line: bytes) -> bytes:
        tag, _, command = line.partition(b" ")
        reply = replies.get(command.upper(), b"{tag} BAD unknown command\r\n")
        return reply.replace(b"{tag}", tag)

    return answer


@pytest.mark.peers
async def test_it_records_the_greeting_and_capabilities(dovecot):
    result = await probe(dovecot.imap)

    assert result.status is Status.UP, result.reason
    assert result.banner.startswith("* OK ")
    assert {"IMAP4rev1", "STARTTLS"} <= set(result.details["capabilities"])
    assert result.tls is None


@pytest.mark.peers
async def test_it_upgrades_with_starttls_and_asks_capability_again(dovecot, certs):
    result = await probe(dovecot.imap, "starttls", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert "localhost" in result.tls.sans
    assert "IMAP4rev1" in result.details["capabilities_after_tls"]
    assert "STARTTLS" not in result.details["capabilities_after_tls"]  # Dovecot offers it only before TLS


@pytest.mark.peers
async def test_it_speaks_imap_inside_implicit_tls(dovecot, certs):
    result = await probe(dovecot.imaps, "implicit", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert "IMAP4rev1" in result.details["capabilities"]


@pytest.mark.peers
async def test_it_reports_missing_starttls(dovecot_without_tls):
    result = await probe(dovecot_without_tls.imap, "starttls")

    assert (str(result.failure), result.reason) == ("starttls_unavailable", "STARTTLS not offered in CAPABILITY reply")
    assert "IMAP4rev1" in result.details["capabilities"]


async def test_it_reports_a_bye_greeting_as_server_rejected():
    async with LineServer(b"* BYE too many connections from your address\r\n") as server:
        result = await probe(server.port)

    assert str(result.failure) == "server_rejected"
    assert result.reason == "server refused the IMAP session: * BYE too many connections from your address"


async def test_it_accepts_a_preauth_greeting():
    capability = b"* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n"
    async with LineServer(b"* PREAUTH welcome back\r\n", scripted({b"CAPABILITY": capability})) as server:
        result = await probe(server.port)

    assert result.status is Status.UP, result.reason
    assert result.details["capabilities"] == ["IMAP4rev1", "IDLE"]
    assert [line.split(b" ")[1] for line in server.received] == [b"CAPABILITY", b"LOGOUT"]


async def test_it_reports_a_tagged_bad_as_server_rejected():
    async with LineServer(b"* OK ready\r\n", scripted({})) as server:
        result = await probe(server.port)

    assert str(result.failure) == "server_rejected"
    assert result.reason == "server rejected CAPABILITY: BAD unknown command"


async def test_it_reports_a_refused_starttls():
    replies = {b"CAPABILITY": b"* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK\r\n", b"STARTTLS": b"{tag} NO not now\r\n"}
    async with LineServer(b"* OK ready\r\n", scripted(replies)) as server:
        result = await probe(server.port, "starttls")

    assert (str(result.failure), result.reason) == ("server_rejected", "server rejected STARTTLS: NO not now")


async def test_it_reports_a_response_under_another_tag_as_a_protocol_error():
    async with LineServer(b"* OK ready\r\n", lambda line: b"Z9 OK not yours\r\n") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        "the response to CAPABILITY is not an IMAP response: Z9 OK not yours",
    )
