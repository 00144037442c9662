"""The public status page, made by the superuser in the Django admin and opened by someone who is not signed in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import ADMIN, PROBE_WAIT_MS, Pages, PeerLoop, expect, service_row
from tests.peers.smtp_server import LineServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NAME = "public web"
TAG = "public"
SLUG = "example"
DAYS = 90


@pytest.fixture(scope="module")
def status_slug(browser, site, sessions, shots_dir, peers: PeerLoop) -> Iterator[str]:
    """A service tagged `public` that is up, and a status page showing that tag, added in the admin."""
    server = LineServer(b"220 status test ready\r\n")
    port = peers.start(server).port
    spec = {"name": NAME, "host": "127.0.0.1", "port": port, "protocol": "tcp", "interval": 5, "timeout": 2.0}
    site.stack.create_services([spec | {"tags": TAG}])
    pages = Pages(browser, site, sessions, shots_dir)
    try:
        admin = pages.open("/admin/dashboard/statuspage/add/", ADMIN)
        admin.get_by_label("Title").fill("Example status")
        admin.get_by_label("Title").press("Tab")  # the admin fills the slug from the title now; ours replaces it
        admin.get_by_label("Slug").fill(SLUG)
        expect(admin.get_by_label("Slug")).to_have_value(SLUG)
        admin.locator("#id_components-0-name").fill("Website")
        admin.locator("#id_components-0-tag").fill(TAG)
        admin.get_by_role("button", name="Save", exact=True).click()
        expect(admin.locator(".messagelist .success")).to_be_visible()
        # Wait for the first probe, so the page shows a measured status rather than "unknown".
        overview = pages.open("/", ADMIN)
        expect(service_row(overview, NAME).locator(".status")).to_contain_text("Up", timeout=PROBE_WAIT_MS)
    finally:
        pages.close(None)
    yield SLUG
    peers.stop(server)


def test_anyone_sees_the_overall_status_and_90_daily_bars(pages, status_slug):
    page = pages.open(f"/status/{status_slug}/")

    expect(page.locator("#overall")).to_contain_text("operational")
    expect(page.locator(".day-bars")).to_be_visible()
    expect(page.locator(".day-bars rect")).to_have_count(DAYS)
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)  # nobody is signed in
    pages.screenshot_schemes(f"/status/{status_slug}/", None, "status", ready=".day-bars")
