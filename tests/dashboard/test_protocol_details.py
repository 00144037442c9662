"""The service page's "Greeting and details" card shows the details each protocol declares in `shown`.

Real probes (ICMP to 127.0.0.1, UDP to a local echo server, a NetBIOS node, tftpd-hpa, vsftpd) are
recorded through the daemon's writer, then the page must show what the protocol module says a person
reads, escaped.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from django.core.cache import cache

from dashboard import checks, detail
from monitor.probes import Status
from tests.dashboard.conftest import make_service, probes
from tests.dashboard.test_detail import ESCAPED, FETCH, HOSTILE, element, page, result_with, served
from tests.peers.netbios_server import NetBIOSServer
from tests.peers.tftpd import running_tftpd
from tests.peers.vsftpd import running_vsftpd

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()  # check now's rate limit counts in the cache


class _Echo(asyncio.DatagramProtocol):
    """A UDP echo server on a free 127.0.0.1 port, as an async context manager that `served()` runs."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)

    async def __aenter__(self) -> int:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return self.transport.get_extra_info("sockname")[1]

    async def __aexit__(self, *exc) -> None:
        self.transport.close()


def probed(client, service) -> str:
    """Probe `service` now through the engine, record the result as the daemon would, return the card's HTML."""
    probes(service, [checks.probe_service(service)])
    return element(page(client, service), "greeting")


# --- Real probes, recorded ----------------------------------------------------------------------------


def test_an_icmp_service_shows_its_loss_and_round_trip_times(viewer):
    service = make_service("ping", protocol="icmp", port=None, options={"count": 2, "interval": 0.05})
    result = checks.probe_service(service)
    assert result.status is Status.UP, result.reason
    probes(service, [result])

    card = element(page(viewer, service), "greeting")
    assert "Sent: 2\n\nReceived: 2\n\nLoss (%): 0" in card
    assert f"RTT max (s): {detail._rounded(result.details['rtt_max'])}" in card
    assert "Jitter (s): " in card and "e-0" not in card  # no exponent: an RTT of 3e-05 s reads 0.00003


def test_a_udp_service_shows_the_reply_it_got(viewer):
    with served(_Echo()) as port:
        service = make_service("echo", protocol="udp", port=port, options={"send": "hello portwatch"})
        card = probed(viewer, service)
    assert "<pre>Sent bytes: 15\n\nReply bytes: 15\n\nReply: hello portwatch</pre>" in card


def test_a_hostile_udp_reply_is_shown_as_text(viewer):
    with served(_Echo()) as port:
        service = make_service("echo", protocol="udp", port=port, options={"send": HOSTILE})
        card = probed(viewer, service)
    assert f"Reply: {ESCAPED}" in card and "<script" not in card and "<img" not in card


def test_netbios_names_are_one_line_each_and_escaped(viewer):
    node = NetBIOSServer([("FILESERVER", 0x20, False), ("<IMG SRC=X>", 0x00, True)], "52:54:00:12:34:56")
    with served(node) as port:
        card = probed(viewer, make_service("nas", protocol="netbios", port=port))
    assert "Workgroup: &lt;IMG SRC=X&gt;\n\nMAC: 52:54:00:12:34:56\n\nNames:\n" in card
    assert "  name=FILESERVER flags=active node_type=B suffix=0x20 type=unique\n" in card
    assert "  name=&lt;IMG SRC=X&gt; flags=active node_type=B suffix=0x00 type=group</pre>" in card
    assert "<IMG" not in card


def test_a_tftp_service_shows_the_file_it_read(viewer):
    content = b"portwatch boot image\n" * 40
    with running_tftpd({"boot.img": content}) as server:
        service = make_service("boot", protocol="tftp", port=server.port, options={"filename": "boot.img"})
        card = probed(viewer, service)
    expected = f"File: boot.img\n\nRead to the end: yes\n\nSize (bytes): {len(content)}\n\nBytes read: {len(content)}"
    assert expected in card and f"SHA-256: {hashlib.sha256(content).hexdigest()}</pre>" in card


def test_an_ftp_service_shows_its_features_and_the_plaintext_login(viewer):
    with running_vsftpd(None) as server:
        card = probed(viewer, make_service("files", protocol="ftp", port=server.port))
    assert "FEAT:\n  " in card and "\n  EPSV\n" in card and "Login offered without TLS: yes</pre>" in card


def test_check_now_shows_the_declared_details_of_a_udp_service(editor):
    with served(_Echo()) as port:
        service = make_service("echo", protocol="udp", port=port, options={"send": "ping"})
        html = editor.post(f"/services/{service.id}/check", **FETCH).content.decode()
    assert "<pre>Sent bytes: 4\n\nReply bytes: 4\n\nReply: ping</pre>" in html


# --- How values read -----------------------------------------------------------------------------------


def test_mail_login_facts_are_shown_with_yes_no_and_rounded_seconds():
    details = {
        "capabilities": ["USER", "STLS"],
        "plaintext_login_offered": False,
        "messages": 0,
        "mailbox_bytes": 1234,
        "login_seconds": 0.0123456,
    }
    text, _ = detail.greeting_text("pop3", "+OK ready", details)
    assert text == (
        "+OK ready\n\nCapabilities:\n  USER\n  STLS\n\nLogin offered without TLS: no\n\nMessages: 0"
        "\n\nMailbox bytes: 1234\n\nLogin time (s): 0.01235"
    )


def test_nested_details_read_as_one_compact_line_per_entry():
    semantics = {"findings": [], "GET": {"status": 200, "content_type": "text/html"}, "HEAD": {"status": 200}}
    text, _ = detail.greeting_text("http", "HTTP/1.1 200 OK", {"method_semantics": semantics, "redirects": []})
    assert text == (
        "HTTP/1.1 200 OK\n\nRedirects: none\n\nMethod semantics:\n  findings none"
        "\n  GET content_type=text/html status=200\n  HEAD status=200"
    )


def test_details_the_protocol_does_not_declare_are_not_shown():
    text, _ = detail.greeting_text("mysql", "8.0.36", {"server_version": "8.0.36", "connection_id": 4711})
    assert text == "8.0.36\n\nServer version: 8.0.36"


def test_an_unknown_protocol_shows_the_banner_alone():
    assert detail.greeting_text("gopher", "hello", {"matched": "x"}) == ("hello", False)


def test_a_line_break_in_a_stored_value_cannot_forge_a_heading():
    text, _ = detail.greeting_text("tcp", "", {"matched": "ok\n\nLogin offered without TLS: no"})
    assert text == "Matched: ok Login offered without TLS: no"


@pytest.mark.parametrize(
    ("value", "shown"), [(3.1e-05, "0.000031"), (0.0123456, "0.01235"), (12345.6, "12350"), (1.5, "1.5"), (0.0, "0")]
)
def test_floats_keep_four_significant_digits_without_an_exponent(value, shown):
    assert detail.greeting_text("icmp", "", {"jitter": value})[0] == f"Jitter (s): {shown}"


def test_every_location_gets_the_details_of_its_own_last_probe(viewer):
    service = make_service("ping", protocol="icmp", port=None, locations="eu,us")
    probes(service, [result_with(details={"sent": 3, "received": 3})], location="eu")
    probes(service, [result_with(details={"sent": 3, "received": 1})], location="us")
    card = element(page(viewer, service), "greeting")
    assert "<h3>eu</h3>\n    <pre>Sent: 3\n\nReceived: 3</pre>" in card
    assert "<h3>us</h3>\n    <pre>Sent: 3\n\nReceived: 1</pre>" in card
