"""The overview without a mouse: Tab reaches the filters and a service's link, and Enter opens its page."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import VIEWER, expect, service_row

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NAME = "keyboard target"
MAX_TABS = 100  # far more stops than the header, filters and a few rows have

# What has the focus: a filter (a control of the overview's GET form) or a link to a service's page.
FOCUSED = """() => {
  const el = document.activeElement;
  const form = el && el.closest("form");
  return {
    filter: /^(INPUT|SELECT)$/.test(el.tagName) && form !== null && form.method === "get",
    href: el.tagName === "A" ? el.getAttribute("href") : null,
    text: (el.textContent || "").trim(),
  };
}"""


@pytest.fixture(scope="module")
def service_id(site) -> int:
    spec = {"name": NAME, "host": "127.0.0.1", "port": 9, "protocol": "tcp", "interval": 60, "timeout": 2.0}
    return site.stack.create_services([spec])[0]


def test_tab_reaches_the_filters_and_a_service_link_and_enter_opens_it(pages, service_id):
    page = pages.open("/", VIEWER)
    expect(service_row(page, NAME)).to_be_visible()

    reached_filter = False
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        reached_filter |= focused["filter"]
        if focused["href"] == f"/services/{service_id}/" and focused["text"] == NAME:
            break
    else:
        pytest.fail(f"{MAX_TABS} presses of Tab never reached the link to {NAME!r}")
    assert reached_filter, "Tab passed no filter on its way to the service link"

    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/services/{service_id}/$"))
    expect(page.get_by_role("heading", name=NAME)).to_be_visible()
