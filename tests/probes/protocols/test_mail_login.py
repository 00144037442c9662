"""Logging in with SMTP AUTH, POP3 USER/PASS and IMAP LOGIN: real Dovecot and aiosmtpd, scripted servers for oddities.

A login tells whether the service is enabled for the account; a refusal is `auth_failed` with the
server's answer, never the password, and the password never crosses a connection without TLS
unless the service allows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from monitor.probes import PROTOCOLS, Result, Status, Target, run_probe
from monitor.probes.mailreply import MAX_QUOTED_CHARS
from tests.peers.dovecot import Account, Dovecot, free_ports, running_dovecot
from tests.peers.smtp_server import Accounts, LineServer, smtp_server

TIMEOUT = 5.0
PASSWORD = "s3cret-Pa55"
ALICE = Account("alice", PASSWORD, messages=3)
CHLOE = Account("chloe", "pässwörd-ünïcode", messages=1)  # not ASCII: IMAP must send it as a literal
FAILURE_DELAY = 3  # seconds Dovecot holds back a refusal in the slow-refusal tests
# Dovecot counts auth_failure_delay on its whole-second clock, checked twice a second, so a refusal
# comes back between DELAY - 1 and DELAY + 0.5 seconds after the password; never sooner than this.
SHORTEST_DOVECOT_DELAY = FAILURE_DELAY - 1


@pytest.fixture(scope="module")
def dovecot(certs) -> Iterator[Dovecot]:
    with running_dovecot(certs.good, accounts=[ALICE, CHLOE], settings=["auth_failure_delay = 0"]) as server:
        yield server


@pytest.fixture(scope="module")
def slow_dovecot() -> Iterator[Dovecot]:
    with running_dovecot(None, accounts=[ALICE], settings=[f"auth_failure_delay = {FAILURE_DELAY} secs"]) as server:
        yield server


@pytest.fixture(scope="module")
def dovecot_without_plain(certs) -> Iterator[Dovecot]:
    """A Dovecot whose only mechanism is CRAM-MD5: LOGIN needs PLAIN, so it advertises LOGINDISABLED everywhere."""
    with running_dovecot(certs.good, accounts=[ALICE], settings=["auth_mechanisms = cram-md5"]) as server:
        yield server


async def probe(protocol: str, port: int, tls: str = "none", *, timeout: float = TIMEOUT, **raw) -> Result:
    options = PROTOCOLS[protocol].options.from_mapping(raw)
    return await run_probe(protocol, Target("127.0.0.1", port, tls), options, timeout=timeout)


def port_of(server: Dovecot, protocol: str, tls: str) -> int:
    return getattr(server, f"{protocol}s" if tls == "implicit" else protocol)


def login(account: Account = ALICE, password: str | None = None, **raw) -> dict:
    return {"username": account.name, "password": account.password if password is None else password, **raw}


def tls_options(certs, tls: str) -> dict:
    """Return the options a TLS mode needs: the test CA, or leave to send the password in the clear."""
    return {"allow_plaintext_login": True} if tls == "none" else {"tls_ca_file": certs.ca_file}


def assert_password_kept_out(result: Result, password: str = PASSWORD) -> None:
    assert password not in json.dumps(result.to_dict(), ensure_ascii=False)
    assert password not in result.reason


def closed_port() -> int:
    return free_ports(1)[0]


# --- POP3 against Dovecot ------------------------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize("tls", ["starttls", "implicit", "none"])
async def test_pop3_logs_in_and_counts_the_mailbox(dovecot, certs, tls):
    result = await probe("pop3", port_of(dovecot, "pop3", tls), tls, **login(), **tls_options(certs, tls))

    assert result.status is Status.UP, result.reason
    assert (result.details["messages"], result.details["mailbox_bytes"]) == (3, ALICE.mailbox_bytes)
    assert result.details["login_seconds"] >= 0


@pytest.mark.peers
async def test_pop3_reports_a_wrong_password_as_auth_failed_with_the_servers_answer(dovecot, certs):
    result = await probe("pop3", dovecot.pop3s, "implicit", **login(password="wrong-guess"), tls_ca_file=certs.ca_file)

    assert (result.status, str(result.failure)) == (Status.DOWN, "auth_failed")
    assert result.reason == "login refused (PASS): -ERR [AUTH] Authentication failed."
    assert "messages" not in result.details
    assert_password_kept_out(result, "wrong-guess")


@pytest.mark.peers
async def test_pop3_notes_a_login_offered_before_tls_for_the_audit(dovecot, certs):
    plain = await probe("pop3", dovecot.pop3)
    implicit = await probe("pop3", dovecot.pop3s, "implicit", tls_ca_file=certs.ca_file)

    # Dovecot counts a client on the server's own address as secured, so it offers USER without TLS here.
    assert plain.details["plaintext_login_offered"] is True
    assert implicit.details["plaintext_login_offered"] is False


async def test_pop3_says_nothing_about_plaintext_login_when_capa_is_refused():
    async with LineServer(b"+OK old server\r\n", lambda line: b"-ERR what?\r\n" if line != b"QUIT" else None) as server:
        result = await probe("pop3", server.port)

    assert result.status is Status.UP, result.reason
    assert "plaintext_login_offered" not in result.details


async def test_pop3_reports_a_server_side_refusal_as_server_rejected():
    replies = {b"CAPA": b"+OK\r\nUSER\r\n.\r\n", b"USER": b"+OK\r\n", b"PASS": b"-ERR [SYS/TEMP] try again later\r\n"}
    async with LineServer(b"+OK ready\r\n", lambda line: replies.get(line.split(b" ")[0])) as server:
        result = await probe("pop3", server.port, **login(allow_plaintext_login=True))

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "login failed on the server's side (PASS): -ERR [SYS/TEMP] try again later",
    )


async def test_pop3_masks_a_password_the_server_echoes_and_drops_control_characters():
    def echo(line: bytes) -> bytes | None:
        if line.startswith(b"PASS "):
            return b"-ERR [AUTH] \x1b[31mwrong: " + line[5:] + b" " + b"x" * 500 + b"\r\n"
        return {b"CAPA": b"+OK\r\nUSER\r\n.\r\n", b"USER": b"+OK\r\n"}.get(line.split(b" ")[0])

    async with LineServer(b"+OK ready\r\n", echo) as server:
        result = await probe("pop3", server.port, **login(allow_plaintext_login=True))

    assert str(result.failure) == "auth_failed"
    assert result.reason.startswith("login refused (PASS): -ERR [AUTH] [31mwrong: *** xxx")
    assert len(result.reason) <= len("login refused (PASS): ") + MAX_QUOTED_CHARS
    assert_password_kept_out(result)


# --- IMAP against Dovecot ------------------------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize("tls", ["starttls", "implicit", "none"])
async def test_imap_logs_in_and_counts_the_inbox_read_only(dovecot, certs, tls):
    result = await probe("imap", port_of(dovecot, "imap", tls), tls, **login(), **tls_options(certs, tls))

    assert result.status is Status.UP, result.reason
    assert result.details["messages"] == 3
    assert result.details["login_seconds"] >= 0


@pytest.mark.peers
async def test_imap_reports_a_wrong_password_as_auth_failed_with_the_servers_answer(dovecot, certs):
    result = await probe("imap", dovecot.imap, "starttls", **login(password="wrong-guess"), tls_ca_file=certs.ca_file)

    assert (result.status, str(result.failure)) == (Status.DOWN, "auth_failed")
    assert result.reason == "login refused (LOGIN): NO [AUTHENTICATIONFAILED] Authentication failed."
    assert "messages" not in result.details
    assert_password_kept_out(result, "wrong-guess")


@pytest.mark.peers
async def test_imap_sends_a_password_that_is_not_ascii_as_a_literal(dovecot, certs):
    result = await probe("imap", dovecot.imaps, "implicit", **login(CHLOE), tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert result.details["messages"] == 1


@pytest.mark.peers
@pytest.mark.parametrize("tls", ["none", "starttls"])
async def test_imap_refuses_to_send_login_when_the_server_says_logindisabled(dovecot_without_plain, certs, tls):
    result = await probe("imap", dovecot_without_plain.imap, tls, **login(), **tls_options(certs, tls))

    assert (str(result.failure), result.reason) == (
        "auth_failed",
        "the server refuses LOGIN on this connection (LOGINDISABLED in CAPABILITY)",
    )
    assert result.details["plaintext_login_offered"] is False


@pytest.mark.peers
async def test_imap_notes_a_login_offered_before_tls_for_the_audit(dovecot, certs):
    plain = await probe("imap", dovecot.imap)
    implicit = await probe("imap", dovecot.imaps, "implicit", tls_ca_file=certs.ca_file)

    assert plain.details["plaintext_login_offered"] is True
    assert implicit.details["plaintext_login_offered"] is False


def imap_script(capabilities: bytes, replies: dict[bytes, bytes]):
    """Return an IMAP answer function by command, echoing tags; lines that are not commands go to `replies[b""]`."""
    replies = {
        b"CAPABILITY": b"* CAPABILITY " + capabilities + b"\r\n{tag} OK done\r\n",
        b"LOGOUT": b"* BYE bye\r\n{tag} OK done\r\n",
        **replies,
    }
    tags: list[bytes] = []

    def answer(line: bytes) -> bytes | None:
        tag, _, rest = line.partition(b" ")
        command = rest.split(b" ")[0].upper()
        if tag.startswith(b"A") and command in replies:
            tags.append(tag)
            return replies[command].replace(b"{tag}", tag)
        return replies.get(b"", b"").replace(b"{tag}", tags[-1]) or None

    return answer


async def test_imap_never_sends_login_after_logindisabled():
    answer = imap_script(b"IMAP4rev1 LOGINDISABLED", {b"LOGIN": b"{tag} OK why did you send this\r\n"})
    async with LineServer(b"* OK ready\r\n", answer) as server:
        result = await probe("imap", server.port, **login(allow_plaintext_login=True))

    assert str(result.failure) == "auth_failed"
    assert [line.split(b" ")[1] for line in server.received] == [b"CAPABILITY"]  # and no LOGIN


async def test_imap_waits_for_the_go_ahead_before_a_synchronizing_literal():
    password = "grüße"  # 7 bytes in UTF-8
    answer = imap_script(
        b"IMAP4rev1",  # no LITERAL+: every literal waits for "+"
        {
            b"LOGIN": b"+ go ahead\r\n",
            b"": b"{tag} OK logged in\r\n",
            b"EXAMINE": b"* 5 EXISTS\r\n{tag} OK [READ-ONLY] done\r\n",
        },
    )
    async with LineServer(b"* OK ready\r\n", answer) as server:
        result = await probe("imap", server.port, **login(password=password, allow_plaintext_login=True))

    assert result.status is Status.UP, result.reason
    assert result.details["messages"] == 5
    assert server.received[1:3] == [b'A2 LOGIN "alice" {7}', password.encode("utf-8")]


async def test_imap_quotes_and_escapes_an_ascii_password():
    answer = imap_script(b"IMAP4rev1", {b"LOGIN": b"{tag} OK in\r\n", b"EXAMINE": b"* 0 EXISTS\r\n{tag} OK done\r\n"})
    async with LineServer(b"* OK ready\r\n", answer) as server:
        result = await probe("imap", server.port, **login(password='a "quoted" \\ one', allow_plaintext_login=True))

    assert result.status is Status.UP, result.reason
    assert server.received[1] == b'A2 LOGIN "alice" "a \\"quoted\\" \\\\ one"'


async def test_imap_reports_a_login_refused_for_a_server_reason_as_server_rejected():
    answer = imap_script(b"IMAP4rev1", {b"LOGIN": b"{tag} NO [UNAVAILABLE] user database is down\r\n"})
    async with LineServer(b"* OK ready\r\n", answer) as server:
        result = await probe("imap", server.port, **login(allow_plaintext_login=True))

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "server rejected LOGIN: NO [UNAVAILABLE] user database is down",
    )


# --- SMTP AUTH against aiosmtpd ------------------------------------------------------------------------------------


async def test_smtp_logs_in_with_auth_plain_after_starttls(certs):
    accounts = Accounts({"alice": PASSWORD})
    async with smtp_server(starttls=certs.good, accounts=accounts) as port:
        result = await probe("smtp", port, "starttls", **login(), tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert accounts.attempts == [("PLAIN", "alice")]
    assert result.details["auth_mechanism"] == "PLAIN"
    assert result.details["plaintext_login_offered"] is False  # aiosmtpd offers AUTH only once TLS is on


async def test_smtp_falls_back_to_auth_login_when_plain_is_not_offered(certs):
    accounts = Accounts({"alice": PASSWORD})
    async with smtp_server(starttls=certs.good, accounts=accounts, auth_exclude=["PLAIN"]) as port:
        result = await probe("smtp", port, "starttls", **login(), tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert accounts.attempts == [("LOGIN", "alice")]


async def test_smtp_logs_in_inside_implicit_tls(certs):
    accounts = Accounts({"alice": PASSWORD})
    async with smtp_server(implicit=certs.good, accounts=accounts, auth_require_tls=False) as port:
        result = await probe("smtp", port, "implicit", **login(), tls_ca_file=certs.ca_file)

    assert result.status is Status.UP, result.reason
    assert accounts.attempts == [("PLAIN", "alice")]
    assert result.details["plaintext_login_offered"] is False


@pytest.mark.parametrize("excluded", [[], ["PLAIN"]])
async def test_smtp_reports_a_wrong_password_as_auth_failed_with_the_servers_answer(certs, excluded):
    async with smtp_server(starttls=certs.good, accounts=Accounts({"alice": "other"}), auth_exclude=excluded) as port:
        result = await probe("smtp", port, "starttls", **login(), tls_ca_file=certs.ca_file)

    mechanism = "LOGIN" if excluded else "PLAIN"
    assert (result.status, str(result.failure)) == (Status.DOWN, "auth_failed")
    assert result.reason == f"login refused (AUTH {mechanism}): 535 5.7.8 Authentication credentials invalid"
    assert_password_kept_out(result)


async def test_smtp_reports_auth_missing_before_tls_as_auth_failed():
    async with smtp_server(accounts=Accounts({"alice": PASSWORD})) as port:
        result = await probe("smtp", port, **login(allow_plaintext_login=True))

    assert (str(result.failure), result.reason) == (
        "auth_failed",
        "AUTH not offered in EHLO reply; the server accepts no login on this connection",
    )
    assert result.details["plaintext_login_offered"] is False


async def test_smtp_notes_auth_offered_without_tls_and_logs_in_when_allowed():
    accounts = Accounts({"alice": PASSWORD})
    async with smtp_server(accounts=accounts, auth_require_tls=False) as port:
        result = await probe("smtp", port, **login(allow_plaintext_login=True))

    assert result.status is Status.UP, result.reason
    assert result.details["plaintext_login_offered"] is True
    assert accounts.attempts == [("PLAIN", "alice")]


async def test_smtp_reports_a_temporary_auth_failure_as_server_rejected():
    replies = {
        b"EHLO": b"250-mail.test\r\n250 AUTH PLAIN\r\n",
        b"AUTH": b"454 4.7.0 Temporary authentication failure\r\n",
    }
    async with LineServer(b"220 mail.test\r\n", lambda line: replies.get(line.split(b" ")[0])) as server:
        result = await probe("smtp", server.port, **login(allow_plaintext_login=True))

    assert (str(result.failure), result.reason) == (
        "server_rejected",
        "login failed for now (AUTH PLAIN): 454 4.7.0 Temporary authentication failure",
    )


# --- Plaintext guard, shared by the three ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
async def test_it_refuses_to_send_the_password_without_tls_before_connecting(protocol):
    # A closed port: had the probe connected, the result would be `refused`, not a config error.
    result = await probe(protocol, closed_port(), **login())

    assert (result.status, str(result.failure), result.reason) == (
        Status.UNKNOWN,
        "config_error",
        "refusing to send the password without TLS; set allow_plaintext_login to allow it",
    )


async def test_it_reports_a_username_without_a_password_as_a_config_error():
    result = await probe("imap", closed_port(), "implicit", username="alice")

    assert (result.status, str(result.failure), result.reason) == (
        Status.UNKNOWN,
        "config_error",
        "a username is set but no password was handed in; nothing was sent",
    )


@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_the_password_stays_out_of_the_options_repr_and_mapping(protocol):
    options = PROTOCOLS[protocol].options.from_mapping(login(allow_plaintext_login=True))

    assert PASSWORD not in repr(options)
    assert options.to_mapping() == {"username": "alice", "allow_plaintext_login": True}


# --- Slow refusals -------------------------------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize(("protocol", "command"), [("pop3", "PASS"), ("imap", "LOGIN")])
async def test_a_slow_refusal_is_waited_for_and_counted_in_the_latency(slow_dovecot, protocol, command):
    port = getattr(slow_dovecot, protocol)
    wrong = login(password="nope", allow_plaintext_login=True)
    result = await probe(protocol, port, timeout=FAILURE_DELAY + 5, **wrong)

    assert str(result.failure) == "auth_failed", result.reason
    assert result.reason.startswith(f"login refused ({command}): ")
    assert result.details["login_seconds"] >= SHORTEST_DOVECOT_DELAY
    assert result.phases.total >= result.details["login_seconds"]


@pytest.mark.peers
@pytest.mark.parametrize(("protocol", "command"), [("pop3", "PASS"), ("imap", "LOGIN")])
async def test_a_refusal_slower_than_the_timeout_is_a_timeout_waiting_for_the_login_answer(
    slow_dovecot, protocol, command
):
    port = getattr(slow_dovecot, protocol)
    result = await probe(protocol, port, timeout=1.0, **login(password="nope", allow_plaintext_login=True))

    assert (str(result.failure), result.reason) == ("timeout", f"timed out waiting for the login answer to {command}")
    assert "login_seconds" in result.details
