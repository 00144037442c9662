"""Signing in through the login page of a running Portwatch, in a real browser."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import EDITOR, expect, log_in

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def test_a_user_logs_in_and_lands_on_the_overview(pages, site):
    page = pages.new()
    log_in(page, EDITOR)

    expect(page).to_have_url(f"{site.base_url}/")
    expect(page.locator(".account .who")).to_contain_text(EDITOR)


def test_a_wrong_password_shows_an_error_and_stays_on_the_login_page(pages, site):
    page = pages.new()
    log_in(page, EDITOR, "not the password")

    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    expect(page.get_by_label("Password")).to_be_visible()
    pages.screenshot(page, "login-error", publish=False)
