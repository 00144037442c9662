"""A mail server whose greeting is markup: every page that shows it must show it as text and run none of it.

The escaping alone must stop it: a Content-Security-Policy report in the console would mean that a
page emitted the markup and only the policy (the second wall) kept the script from running.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import EDITOR, PROBE_WAIT_MS, PeerLoop, add_service, expect, service_row
from tests.peers.smtp_server import LineServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NAME = "hostile mail"
SCRIPT = "<script>window.__pwned=1</script>"
GREETING = f'220 {SCRIPT}<img src=x onerror="window.__pwned=2"> ready'
# The EHLO reply is hostile too: its first line is the server's name and the next an extension.
EHLO_REPLY = b'250-<script>window.__pwned=3</script>\r\n250 X-<IMG SRC=x ONERROR="window.__pwned=4">\r\n'


def answer(line: bytes) -> bytes | None:
    """Play just enough SMTP for the probe to finish: EHLO, then QUIT."""
    command = line.split(b" ")[0].upper()
    return {b"EHLO": EHLO_REPLY, b"QUIT": b"221 bye\r\n"}.get(command, b"500 unknown\r\n")


@pytest.fixture(scope="module")
def hostile_port(peers: PeerLoop) -> int:
    """Start the server; `peers` stops it when the session ends, so later pages show an up service too."""
    return peers.start(LineServer(GREETING.encode() + b"\r\n", answer)).port


def assert_inert(page) -> None:
    """Nothing ran, no element was made of the server's text, and the policy never had to step in."""
    assert page.evaluate("window.__pwned") is None
    assert page.locator('img[src="x"]').count() == 0
    blocked = [message.text for message in page.console_messages() if "Content Security Policy" in message.text]
    assert blocked == []


def test_a_greeting_made_of_markup_is_shown_as_text_and_never_runs(pages, hostile_port):
    editor = pages.new(EDITOR)
    service_id = add_service(
        editor,
        name=NAME,
        protocol="smtp",
        host="127.0.0.1",
        port=str(hostile_port),
        interval="5",
        timeout="3",
        failure_threshold="1",
    )
    overview = pages.open("/", EDITOR)
    expect(service_row(overview, NAME).locator(".status")).to_contain_text("Up", timeout=PROBE_WAIT_MS)
    assert_inert(overview)

    detail = pages.open(f"/services/{service_id}/", EDITOR)
    expect(detail.locator("#greeting pre")).to_contain_text(GREETING)
    assert_inert(detail)

    # The result comes back as HTML that detail.js puts in place with innerHTML.
    detail.get_by_role("button", name="Check now").click()
    expect(detail.locator("#check-result pre")).to_contain_text(GREETING)
    assert_inert(detail)
