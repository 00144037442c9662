"""The SMTP prober against aiosmtpd (plain, STARTTLS, implicit TLS) and scripted servers for refusals."""

from __future__ import annotations

import re
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from monitor.probes import OptionsError, Status, Target, run_probe
from monitor.probes.protocols import smtp, tcp
from tests.peers.smtp_server import SERVER_NAME, LineServer, smtp_server

TIMEOUT = 5.0


async def probe(port: int, tls: str = "none", **raw):
    return await run_probe("smtp", Target("127.0.0.1", port, tls), smtp.Options.from_mapping(raw), timeout=TIMEOUT)


def certificate(leaf) -> x509.Certificate:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scripted(replies: dict[bytes, bytes]):
    """Return an answer function replying by command word; QUIT always gets 221."""
    replies = {b"QUIT": b"221 bye\r\n", **replies}
    return lambda line: replies.get(line.split(b" ")[0].upper(), b"500 unknown\r\n")


class EHLORecorder:
    """An aiosmtpd handler that remembers the names clients give in EHLO."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.names.append(hostname)
        session.host_name = hostname
        return responses


async def test_it_records_the_greeting_and_extensions_of_a_plain_server():
    async with smtp_server() as port:
        result = await probe(port)

    assert result.status is Status.UP, result.reason
    assert result.banner.startswith(f"220 {SERVER_NAME} ")
    assert {"SIZE", "8BITMIME", "HELP"} <= set(result.details["extensions"])
    assert result.details["extensions"]["SIZE"] == "33554432"
    assert result.tls is None


async def test_it_introduces_itself_with_the_configured_ehlo_name():
    recorder = EHLORecorder()
    async with smtp_server(handler=recorder) as port:
        result = await probe(port, ehlo_name="probe.example.net")

    assert result.status is Status.UP, result.reason
    assert recorder.names == ["probe.example.net"]


async def test_it_upgrades_with_starttls_and_says_ehlo_again(certs):
    async with smtp_server(starttls=certs.good) as port:
        result = await probe(port, "starttls", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert result.tls.subject == certificate(certs.good).subject.rfc4514_string()
    assert result.tls.days_left > 365
    # aiosmtpd offers AUTH only over TLS and stops offering STARTTLS once it is on.
    assert "STARTTLS" in result.details["extensions"]
    assert "AUTH" in result.details["extensions_after_tls"]
    assert "STARTTLS" not in result.details["extensions_after_tls"]


async def test_it_speaks_smtp_inside_implicit_tls(certs):
    async with smtp_server(implicit=certs.good) as port:
        result = await probe(port, "implicit", tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.tls.verified
    assert "SIZE" in result.details["extensions"]
    assert "extensions_after_tls" not in result.details  # one EHLO, already inside TLS


async def test_it_reports_missing_starttls():
    async with smtp_server() as port:
        result = await probe(port, "starttls")

    assert (str(result.failure), result.reason) == ("starttls_unavailable", "STARTTLS not offered in EHLO reply")
    assert "SIZE" in result.details["extensions"]  # what was learnt before the failure is kept


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize(
    ("cert", "failure"),
    [("expired", "tls_expired"), ("wrong_host", "tls_hostname"), ("unknown_ca", "tls_untrusted")],
)
async def test_it_reports_a_bad_certificate_with_its_facts(certs, tls, cert, failure):
    leaf = getattr(certs, cert)
    async with smtp_server(**{tls: leaf}) as port:
        result = await probe(port, tls, tls_ca_file=certs.ca_file)

    assert str(result.failure) == failure, result.reason
    expected = certificate(leaf)
    assert result.tls.subject == expected.subject.rfc4514_string()
    assert result.tls.not_after == expected.not_valid_after_utc
    assert result.tls.fingerprint_sha256 == expected.fingerprint(hashes.SHA256()).hex()
    assert result.tls.serial_number == format(expected.serial_number, "x")
    assert not result.tls.verified


async def test_it_warns_about_a_certificate_close_to_expiry(certs):
    async with smtp_server(starttls=certs.expiring) as port:
        result = await probe(port, "starttls", tls_ca_file=certs.ca_file)

    assert (result.status, str(result.failure)) == (Status.WARNING, "tls_expiring")
    assert re.fullmatch(r"certificate expires in [45]\.\d days \(\d{4}-\d\d-\d\d\)", result.reason), result.reason


async def test_it_accepts_an_unknown_ca_when_verification_is_off(certs):
    async with smtp_server(starttls=certs.unknown_ca) as port:
        result = await probe(port, "starttls", tls_verify=False)

    assert result.status is Status.UP, result.reason
    assert not result.tls.verified


async def test_it_reports_a_refusing_greeting_as_server_rejected():
    async with LineServer(b"554 mail.test no SMTP service here\r\n", scripted({})) as server:
        result = await probe(server.port)

    assert str(result.failure) == "server_rejected"
    assert result.reason == "server refused the SMTP session: 554 mail.test no SMTP service here"
    assert result.banner == "554 mail.test no SMTP service here"


async def test_it_reports_a_refused_connection():
    result = await probe(closed_port())

    assert str(result.failure) == "refused"


async def test_it_reads_a_multi_line_greeting():
    greeting = b"220-mail.test ESMTP\r\n220-no UCE\r\n220 welcome\r\n"
    async with LineServer(greeting, scripted({b"EHLO": b"250-mail.test\r\n250 PIPELINING\r\n"})) as server:
        result = await probe(server.port)

    assert result.status is Status.UP, result.reason
    assert result.banner == "220 mail.test ESMTP\n220 no UCE\n220 welcome"
    assert result.details["extensions"] == {"PIPELINING": ""}


async def test_it_reports_a_reply_that_is_not_smtp_with_a_preview():
    async with LineServer(b"hello\x00there\r\n") as server:
        result = await probe(server.port)

    assert str(result.failure) == "protocol_error"
    assert result.reason == "the SMTP greeting is not an SMTP reply: hello\\x00there"


async def test_it_reports_a_rejected_ehlo():
    async with LineServer(b"220 mail.test\r\n", scripted({b"EHLO": b"502 5.5.1 not implemented\r\n"})) as server:
        result = await probe(server.port)

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "server rejected EHLO: 502 5.5.1 not implemented",
    )


async def test_it_reports_a_refused_starttls():
    replies = {b"EHLO": b"250-mail.test\r\n250 STARTTLS\r\n", b"STARTTLS": b"454 4.7.0 TLS not available\r\n"}
    async with LineServer(b"220 mail.test\r\n", scripted(replies)) as server:
        result = await probe(server.port, "starttls")

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "server rejected STARTTLS: 454 4.7.0 TLS not available",
    )


@pytest.mark.parametrize(
    ("count", "failure"), [(smtp.MAX_REPLY_LINES, None), (smtp.MAX_REPLY_LINES + 1, "response_too_large")]
)
async def test_it_bounds_the_lines_of_one_reply(count, failure):
    ehlo_reply = b"250-mail.test\r\n" + b"250-X-LINE\r\n" * (count - 2) + b"250 HELP\r\n"
    async with LineServer(b"220 mail.test\r\n", scripted({b"EHLO": ehlo_reply})) as server:
        result = await probe(server.port)

    assert (None if result.failure is None else str(result.failure)) == failure, result.reason


async def test_it_bounds_the_bytes_of_one_reply():
    line = b"250-X-" + b"A" * 1000 + b"\r\n"
    ehlo_reply = line * (smtp.MAX_REPLY_BYTES // len(line) + 1) + b"250 HELP\r\n"
    async with LineServer(b"220 mail.test\r\n", scripted({b"EHLO": ehlo_reply})) as server:
        result = await probe(server.port)

    assert str(result.failure) == "response_too_large"
    assert result.reason == f"the reply to EHLO is longer than {smtp.MAX_REPLY_BYTES} bytes"


def test_it_refuses_an_ehlo_name_that_would_inject_a_command():
    with pytest.raises(OptionsError) as raised:
        smtp.Options.from_mapping({"ehlo_name": "a\r\nRSET"})

    assert str(raised.value) == "ehlo_name: must be a host name without spaces, not 'a\\r\\nRSET'"


# The TCP prober has no test module of its own yet; this sits beside its SMTP sibling above (text
# an option would put on the wire) until tests/probes/test_tcp.py exists.
def test_the_tcp_prober_refuses_a_send_escape_that_is_not_a_byte():
    with pytest.raises(OptionsError) as raised:
        tcp.Options.from_mapping({"send": "PING \\u20ac\\r\\n"})

    assert (raised.value.field, raised.value.message) == (
        "send",
        "escapes must stand for bytes, \\x00 to \\xff, and U+20AC (€) is not one;"
        " write the character itself to send it as UTF-8",
    )
