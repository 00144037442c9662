"""A viewer in the browser: sees the services, is offered no way to change them, and is refused when trying."""

from __future__ import annotations

import pytest

from tests.browser.conftest import VIEWER, expect, service_row

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NAME = "viewer's pick"


@pytest.fixture(scope="module")
def service_id(site) -> int:
    """A service to look at; made in the database, since adding one is not what this scenario is about."""
    spec = {"name": NAME, "host": "127.0.0.1", "port": 9, "protocol": "tcp", "interval": 60, "timeout": 2.0}
    return site.stack.create_services([spec])[0]


def test_a_viewer_sees_the_overview_without_an_add_service_link(pages, service_id):
    page = pages.open("/", VIEWER)

    expect(service_row(page, NAME)).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview")).to_be_visible()
    expect(page.get_by_role("link", name="Add service")).to_have_count(0)


@pytest.mark.parametrize("path", ["/services/new", "/services/{id}/edit"])
def test_a_viewer_gets_a_403_page_when_trying_to_change_services(pages, site, service_id, path):
    page = pages.new(VIEWER)
    response = page.goto(path.format(id=service_id))

    assert response.status == 403
    expect(page.locator("body")).to_contain_text("403")


def test_a_viewer_is_not_offered_check_now(pages, service_id):
    page = pages.open(f"/services/{service_id}/", VIEWER)

    expect(page.get_by_role("heading", name=NAME)).to_be_visible()
    expect(page.get_by_role("button", name="Check now")).to_have_count(0)
