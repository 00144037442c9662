"""The FTP prober against a real vsftpd (plain, AUTH TLS, implicit FTPS) and scripted or hostile servers."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import ftp
from tests.peers.hostile import HostileServer, silent
from tests.peers.smtp_server import LineServer
from tests.peers.vsftpd import ANONYMOUS_PASSWORD, Vsftpd, running_vsftpd

TIMEOUT = 5.0
ANONYMOUS = {"username": "anonymous", "password": ANONYMOUS_PASSWORD}
FEATURES = b"211-Features:\r\n EPSV\r\n UTF8\r\n211 End\r\n"


@pytest.fixture(scope="module")
def vsftpd_without_tls() -> Iterator[Vsftpd]:
    with running_vsftpd(None) as server:
        yield server


@pytest.fixture(scope="module")
def vsftpd(certs) -> Iterator[Vsftpd]:
    with running_vsftpd(certs.good) as server:
        yield server


@pytest.fixture(scope="module")
def vsftpd_implicit(certs) -> Iterator[Vsftpd]:
    with running_vsftpd(certs.good, implicit=True) as server:
        yield server


async def probe(port: int, tls: str = "none", *, timeout: float = TIMEOUT, **raw):
    return await run_probe("ftp", Target("127.0.0.1", port, tls), ftp.Options.from_mapping(raw), timeout=timeout)


def scripted(replies: dict[bytes, bytes]):
    """Return an answer function replying by command word; QUIT always gets 221."""
    replies = {b"QUIT": b"221 Goodbye.\r\n", **replies}
    return lambda line: replies.get(line.split(b" ")[0].upper(), b"500 Unknown command.\r\n")


@pytest.mark.peers
async def test_it_records_the_greeting_and_features(vsftpd_without_tls):
    result = await probe(vsftpd_without_tls.port)

    assert result.status is Status.UP, result.reason
    assert result.banner == "220 (vsFTPd 3.0.3)"
    assert {"EPSV", "REST STREAM"} <= set(result.details["features"])
    assert result.details["plaintext_login_offered"] is True
    assert result.tls is None


@pytest.mark.peers
async def test_it_upgrades_with_auth_tls_and_asks_feat_again(vsftpd, certs):
    result = await probe(vsftpd.port, "starttls", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert "localhost" in result.tls.sans
    assert "AUTH TLS" in result.details["features"]
    assert "PROT" in result.details["features_after_tls"]
    assert "plaintext_login_offered" not in result.details  # no USER went over plaintext: not measured


@pytest.mark.peers
async def test_it_reports_an_untrusted_certificate_after_auth_tls(vsftpd):
    result = await probe(vsftpd.port, "starttls")  # the system's CAs do not know the test CA

    assert str(result.failure) == "tls_untrusted"
    assert result.tls is not None and not result.tls.verified


@pytest.mark.peers
async def test_it_speaks_ftp_inside_implicit_tls(vsftpd_implicit, certs):
    result = await probe(vsftpd_implicit.port, "implicit", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert result.banner.startswith("220 (vsFTPd")
    assert "EPSV" in result.details["features"]
    assert result.details["plaintext_login_offered"] is False


@pytest.mark.peers
async def test_it_logs_in_after_auth_tls_and_protects_the_data_channel(vsftpd, certs):
    result = await probe(vsftpd.port, "starttls", tls_ca_file=certs.ca_file, **ANONYMOUS)

    assert result.status is Status.UP, result.reason
    log = vsftpd.log.read_text()
    assert "OK LOGIN" in log
    assert '"200 PROT now Private."' in log


@pytest.mark.peers
async def test_it_logs_in_inside_implicit_tls(vsftpd_implicit, certs):
    result = await probe(vsftpd_implicit.port, "implicit", tls_ca_file=certs.ca_file, **ANONYMOUS)

    assert result.status is Status.UP, result.reason
    assert '"200 PBSZ set to 0."' in vsftpd_implicit.log.read_text()


@pytest.mark.peers
async def test_it_logs_in_over_plaintext_when_allowed(vsftpd_without_tls):
    result = await probe(vsftpd_without_tls.port, allow_plaintext_login=True, **ANONYMOUS)

    assert result.status is Status.UP, result.reason
    assert result.details["plaintext_login_offered"] is True


@pytest.mark.peers
async def test_it_reports_a_wrong_password_as_auth_failed(vsftpd, certs):
    result = await probe(vsftpd.port, "starttls", tls_ca_file=certs.ca_file, username="anonymous", password="wrong")

    assert (str(result.failure), result.reason) == ("auth_failed", "server refused the password: 530 Login incorrect.")


@pytest.mark.peers
async def test_it_reports_a_refused_user_as_auth_failed(vsftpd_without_tls):
    result = await probe(vsftpd_without_tls.port, username="bob", password="secret", allow_plaintext_login=True)

    assert (str(result.failure), result.reason) == (
        "auth_failed",
        "server refused the user name: 530 This FTP server is anonymous only.",
    )
    assert result.details["plaintext_login_offered"] is False


@pytest.mark.peers
async def test_it_reports_missing_auth_tls(vsftpd_without_tls):
    result = await probe(vsftpd_without_tls.port, "starttls")

    assert (str(result.failure), result.reason) == ("starttls_unavailable", "AUTH TLS not offered in FEAT reply")
    assert "EPSV" in result.details["features"]


async def test_it_refuses_a_plaintext_login_without_connecting():
    async with LineServer(b"220 ready\r\n", scripted({})) as server:
        result = await probe(server.port, username="alice", password="secret")

    assert result.status is Status.UNKNOWN
    assert (str(result.failure), result.reason) == ("config_error", ftp.PLAINTEXT_REFUSAL)
    assert result.address is None  # no connection was made: the server never saw the account


async def test_it_reads_a_multi_line_greeting_and_strips_control_characters():
    greeting = (
        b"220-Welcome\x1b[31m to\r\n220-ish lines 220-style\r\n 230 is not the end\r\n220 ProFTPD 1.3.8 Server\r\n"
    )
    async with LineServer(greeting, scripted({b"FEAT": FEATURES})) as server:
        result = await probe(server.port)

    assert result.status is Status.UP, result.reason
    assert result.banner.splitlines() == [
        "220 Welcome [31m to",  # ESC replaced by a space (text.printable), so words are never glued together
        "220 220-ish lines 220-style",
        "220 230 is not the end",  # RFC 959's padding space before a leading digit is stripped
        "220 ProFTPD 1.3.8 Server",
    ]
    assert result.details["features"] == ["EPSV", "UTF8"]
    assert server.received == [b"FEAT", b"QUIT"]


async def test_it_reports_a_421_greeting_as_server_rejected():
    async with LineServer(b"421 Service not available, closing control connection.\r\n") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "server refused the FTP session: 421 Service not available, closing control connection.",
    )


async def test_it_reports_a_530_before_login_as_server_rejected():
    async with LineServer(b"220 ready\r\n", scripted({b"FEAT": b"530 Not allowed from your address.\r\n"})) as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "server rejected FEAT: 530 Not allowed from your address.",
    )


async def test_it_accepts_a_server_without_feat():
    async with LineServer(b"220 old server\r\n", scripted({})) as server:
        result = await probe(server.port)

    assert result.status is Status.UP, result.reason
    assert result.details["features"] == []


async def test_it_tries_auth_tls_when_feat_is_missing_and_reports_its_refusal():
    async with LineServer(b"220 old server\r\n", scripted({b"AUTH": b"502 Command not implemented.\r\n"})) as server:
        result = await probe(server.port, "starttls")

    assert (str(result.failure), result.reason) == (
        "starttls_unavailable",
        "server does not support AUTH TLS: 502 Command not implemented.",
    )
    assert server.received == [b"FEAT", b"AUTH TLS"]


async def test_it_reports_garbage_as_a_protocol_error():
    async with LineServer(b"SSH-2.0-OpenSSH_9.2\r\n") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "protocol_error",
        "the FTP greeting is not an FTP reply: SSH-2.0-OpenSSH_9.2",
    )


async def test_it_reports_a_reply_with_another_code_as_a_protocol_error():
    async with LineServer(b"220 ready\r\n", scripted({b"FEAT": b"250 ok\r\n"})) as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == ("protocol_error", "expected 211 in the reply to FEAT, got 250 ok")


async def endless_greeting(reader, writer, script):
    """Open a multi-line greeting and never end it."""
    writer.write(b"220-welcome\r\n")
    for _ in range(100_000):  # bounded, so the server stops by itself
        writer.write(b"220-still welcoming you\r\n")
        await writer.drain()


async def test_it_stops_reading_an_endless_multi_line_reply():
    async with HostileServer(endless_greeting, "tcp") as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "response_too_large",
        f"the FTP greeting is longer than {ftp.MAX_REPLY_LINES} lines",
    )


async def test_it_reports_a_silent_server_as_a_timeout():
    async with HostileServer(silent, "tcp") as server:
        result = await probe(server.port, timeout=0.5)

    assert (str(result.failure), result.reason) == ("timeout", "timed out waiting for the FTP greeting")


def test_it_takes_the_username_from_the_url():
    assert ftp.PROTOCOL.url_options(urllib.parse.urlsplit("ftp://back%40up@files.example/")) == {"username": "back@up"}


def test_it_refuses_a_password_in_the_url():
    with pytest.raises(OptionsError) as raised:
        ftp.PROTOCOL.url_options(urllib.parse.urlsplit("ftp://alice:secret@files.example"))

    assert str(raised.value) == "url: a password in a URL ends up in shell history and logs; give it apart from the URL"


def test_it_uses_the_plaintext_port_for_auth_tls():
    assert (ftp.PROTOCOL.standard_port("starttls"), ftp.PROTOCOL.standard_port("implicit")) == (21, 990)
