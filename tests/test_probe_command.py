"""`manage.py probe`: exit codes by the Nagios convention, the JSON shape, the Nagios line, and usage errors."""

from __future__ import annotations

import json
import os
import socketserver
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.peers.http_server import HTTPServer, Reply

ROOT = Path(__file__).resolve().parents[1]


class BannerHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"hello from the test server\r\n")


@pytest.fixture
def banner_server():
    """Yield a function that starts a banner server, plain or with a certificate, and returns its port."""
    servers = []

    def start(cert=None) -> int:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), BannerHandler)
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "probe", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_it_exits_0_and_prints_a_summary_when_the_service_is_up(banner_server):
    port = banner_server()

    run = probe(f"tcp://127.0.0.1:{port}")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "UP" in run.stdout.splitlines()[0]


def test_it_exits_1_when_the_certificate_expires_soon(banner_server, certs):
    port = banner_server(certs.expiring)

    run = probe(f"tls://localhost:{port}", "--ca-file", certs.ca_file, "--nagios")

    assert run.returncode == 1, run.stdout
    assert run.stdout.startswith("TCP WARNING - certificate expires in ")
    assert "cert_days=" in run.stdout


def test_it_refuses_two_output_modes_at_once():
    run = probe("smtp://127.0.0.1", "--json", "--nagios")

    assert run.returncode == 3
    assert "not allowed with argument" in run.stderr


def test_it_exits_2_with_the_reason_when_the_service_is_down():
    run = probe("smtp://127.0.0.1:1", "--json")

    assert run.returncode == 2
    result = json.loads(run.stdout)
    assert (result["status"], result["failure"]) == ("down", "refused")


def test_its_json_has_the_documented_keys_and_every_phase(banner_server):
    port = banner_server()

    result = json.loads(probe(f"tcp://127.0.0.1:{port}", "--json").stdout)

    assert {"status", "failure", "reason", "phases", "tls", "banner", "details"} <= set(result)
    assert set(result["phases"]) == {"resolve", "connect", "tls", "processing", "transfer", "total"}


def test_its_nagios_line_carries_status_and_perfdata(banner_server):
    port = banner_server()

    run = probe(f"tcp://127.0.0.1:{port}", "--nagios")

    status, perfdata = run.stdout.strip().split(" | ")
    assert status.startswith("TCP OK - ")
    assert perfdata.split()[0].startswith("time=")
    assert {item.split("=")[0] for item in perfdata.split()} >= {"time", "resolve", "connect", "tls", "processing"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gopher://example.test"], "unknown URL scheme gopher:"),
        (["tcp://127.0.0.1"], "tcp URLs need a port"),
        (["smtp://127.0.0.1:99999"], "must be a number from 1 to 65535"),
        (["https://127.0.0.1", "--starttls"], "URLs, not https"),
        (["smtps://127.0.0.1", "--starttls"], "--starttls cannot be combined with smtps"),
        (["smtp://127.0.0.1", "--keyword", "x"], "--keyword does not apply to smtp URLs"),
        (["smtp://127.0.0.1", "--warn-days", "-3"], "--warn-days: must be between 0 and 3650 days"),
        (["smtp://127.0.0.1", "--ca-file", "/nonexistent/ca.pem"], "--ca-file /nonexistent/ca.pem: no such file"),
        (["smtp://127.0.0.1", "--timeout", "0"], "--timeout must be a positive number of seconds"),
        (["smtp://127.0.0.1/path"], "smtp URLs take no path or query"),
    ],
)
def test_it_exits_3_and_says_what_is_wrong_with_a_bad_url_or_option(args, message):
    run = probe(*args)

    assert run.returncode == 3
    assert message in run.stdout


def test_it_exits_3_on_a_flag_argparse_rejects():
    run = probe("smtp://127.0.0.1", "--timeout", "soon")

    assert run.returncode == 3
    assert "invalid float value" in run.stderr


def test_its_nagios_mode_reports_usage_errors_as_unknown():
    run = probe("gopher://example.test", "--nagios")

    assert run.stdout.startswith("PORTWATCH UNKNOWN - ")
    assert run.returncode == 3


def test_it_exits_3_with_config_error_when_the_ca_file_holds_no_certificate(banner_server, certs, tmp_path):
    port = banner_server(certs.good)
    empty = tmp_path / "ca.pem"
    empty.write_bytes(b"")

    run = probe(f"tls://127.0.0.1:{port}", "--ca-file", str(empty), "--json")

    assert run.returncode == 3, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert (result["status"], result["failure"]) == ("unknown", "config_error")


def test_its_summary_names_the_failure_kind_of_a_warning(banner_server, certs):
    port = banner_server(certs.expiring)

    run = probe(f"tls://localhost:{port}", "--ca-file", certs.ca_file)

    assert run.returncode == 1, run.stdout
    assert run.stdout.splitlines()[0].endswith("WARNING  [tls_expiring]")


async def test_its_summary_shows_each_hop_of_a_redirect_with_its_certificate(certs):
    async with (
        HTTPServer({"/": Reply(200, b"ok")}, tls=certs.good) as final,
        HTTPServer({"/": Reply.redirect(f"https://localhost:{final.port}/")}, tls=certs.expiring) as first,
    ):
        run = probe(first.url("/"), "--ca-file", certs.ca_file, "--ip-family", "ipv4")

    hops = [line.split()[:5] for line in run.stdout.splitlines() if line.startswith("  hop ")]
    assert hops == [
        ["hop", "1", "302", first.url("/"), "127.0.0.1"],
        ["hop", "2", "200", f"https://localhost:{final.port}/", "127.0.0.1"],
    ], run.stdout


LOGIN = ("--username", "alice", "--password-env")


def test_it_takes_a_login_from_flags_and_the_environment_and_refuses_to_send_it_in_clear(banner_server):
    port = banner_server()
    secret = "hunter2-not-on-the-command-line"
    run = subprocess.run(
        [sys.executable, "manage.py", "probe", f"pop3://127.0.0.1:{port}", "--json", *LOGIN, "POP_PASSWORD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "POP_PASSWORD": secret},
    )
    result = json.loads(run.stdout)
    assert run.returncode == 3  # nothing was measured: the password would have crossed in clear text
    assert (result["status"], result["failure"]) == ("unknown", "config_error")
    assert "refusing to send the password without TLS" in result["reason"]
    assert secret not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pop3://127.0.0.1", "--username", "a", "--password-env", "PORTWATCH_NO_SUCH_VAR"], "no such environment"),
        (["https://127.0.0.1", "--username", "alice"], "--username does not apply to https URLs"),
        (["udp://127.0.0.1:9", "--count", "3"], "--count does not apply to udp URLs"),
        (["icmp://127.0.0.1", "--sni", "x"], "--sni does not apply to icmp URLs"),
        (["ftp://127.0.0.1/some/path"], "ftp URLs take no path or query"),
        (["mysql://bob:pw@127.0.0.1"], "'mysql://bob:***@127.0.0.1': a password in a URL ends up in shell history"),
    ],
)
def test_it_says_which_flags_and_url_parts_a_protocol_does_not_take(args, message):
    run = probe(*args)
    assert run.returncode == 3
    assert message in run.stdout


def test_its_help_names_the_protocols_each_flag_applies_to():
    run = probe("--help")
    text = " ".join(run.stdout.split())
    assert "--count N icmp:" in text
    assert "--expect EXPECT fastcgi:" in text and "telnet:" in text and "udp:" in text
    assert "--username USER ftp, imap, mysql, pop3, smtp:" in text
