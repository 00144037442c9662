"""An editor adds an SMTP service in the browser and watches it live: up, its latency chart, then down with an incident.

The mail server is aiosmtpd on 127.0.0.1 in this process; the running stack probes it every 5 s.
The overview is never reloaded by hand: its rows refresh themselves (portwatch.js), which this tests too.
The tests run in file order and share the service; each first waits for the state it starts from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.browser.conftest import EDITOR, PROBE_WAIT_MS, Pages, PeerLoop, add_service, expect, service_row
from tests.peers.smtp_server import smtp_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NAME = "mail relay"


@dataclass
class Mail:
    id: int
    server: object  # the running smtp_server() context manager
    port: int


@pytest.fixture(scope="module")
def mail(browser, site, sessions, shots_dir, peers: PeerLoop) -> Iterator[Mail]:
    """Start the SMTP server and add it as a service through the Add service form, as the editor."""
    server = smtp_server()
    port = peers.start(server)
    pages = Pages(browser, site, sessions, shots_dir)
    try:
        service_id = add_service(
            pages.new(EDITOR),
            name=NAME,
            protocol="smtp",
            host="127.0.0.1",
            port=str(port),
            interval="5",
            timeout="3",
            failure_threshold="1",
        )
    finally:
        pages.close(None)
    yield Mail(service_id, server, port)
    if server in peers.running:
        peers.stop(server)


def test_an_added_smtp_service_goes_up_on_the_overview_by_itself(pages, mail):
    page = pages.open("/", EDITOR)

    # The first probe may land after the page was served: the row must turn Up without a reload.
    expect(service_row(page, NAME).locator(".status")).to_contain_text("Up", timeout=PROBE_WAIT_MS)


def test_the_detail_page_draws_the_latency_chart(pages, mail):
    page = pages.open("/", EDITOR)
    expect(service_row(page, NAME).locator(".status")).to_contain_text("Up", timeout=PROBE_WAIT_MS)
    service_row(page, NAME).get_by_role("link", name=NAME, exact=True).click()

    expect(page).to_have_url(f"{pages.site.base_url}/services/{mail.id}/")
    chart = page.locator("svg#latency-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("polygon, path, polyline, rect, circle").first).to_be_visible()  # data, not the axes


def test_a_stopped_server_goes_down_on_the_overview_and_opens_an_incident(pages, mail, peers):
    page = pages.open("/", EDITOR)
    row = service_row(page, NAME)
    expect(row.locator(".status")).to_contain_text("Up", timeout=PROBE_WAIT_MS)

    peers.stop(mail.server)

    expect(row.locator(".status")).to_contain_text("Down", timeout=PROBE_WAIT_MS)
    incidents = pages.open("/incidents/", EDITOR)
    expect(incidents.locator("#open-incidents tr", has_text=NAME)).to_be_visible()
    # Pictures for docs/screenshots/ once there is history to show: results up and down, an incident.
    pages.screenshot_schemes("/", EDITOR, "overview", ready=".status-down")
    pages.screenshot_schemes(f"/services/{mail.id}/", EDITOR, "detail", ready="#latency-chart")
