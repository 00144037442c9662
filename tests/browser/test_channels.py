"""An admin adds a webhook channel in the browser and presses "send test": the receiver, a real server here, gets it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.alerting.conftest import Receiver
from tests.browser.conftest import ADMIN, VIEWER, expect
from tests.peers.http_server import Reply

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NAME = "browser hook"
PATH_TOKEN = "path-T0KEN-only-the-receiver-knows"


@pytest.fixture
def hook() -> Iterator[Receiver]:
    server = Receiver(Reply(204), None)
    yield server
    server.close()


def test_an_admin_adds_a_webhook_and_sends_a_test_that_arrives(pages, hook):
    page = pages.open("/channels/", ADMIN)
    page.get_by_role("link", name="Add channel").click()
    page.get_by_label("Name").fill(NAME)
    page.get_by_label("Kind").select_option("webhook")
    page.get_by_label("URL").fill(hook.url(f"/hook/{PATH_TOKEN}"))
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/channels/\d+/$"))
    expect(page.get_by_role("heading", name=NAME)).to_be_visible()
    channel_page = re.search(r"/channels/\d+/$", page.url)[0]

    page.get_by_role("button", name="Send test").click()

    expect(page.locator("#test-ok")).to_contain_text("HTTP 204")
    (request,) = hook.received
    assert request.path == f"/hook/{PATH_TOKEN}"
    assert json.loads(request.body)["test"] is True and json.loads(request.body)["channel"] == NAME
    assert PATH_TOKEN not in page.content()  # the page shows the URL masked

    viewer = pages.open(channel_page, VIEWER)
    expect(viewer.get_by_role("heading", name=NAME)).to_be_visible()
    expect(viewer.get_by_role("button", name="Send test")).to_have_count(0)
