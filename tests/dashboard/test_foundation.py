"""The dashboard's shared parts: roles as groups, sign-in, the rate limit, security headers and display filters."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.test import Client, RequestFactory

from dashboard import roles
from dashboard.access import MANUAL_PROBES_PER_WINDOW, allow
from dashboard.templatetags.portwatch import DASH, days, ms, percent, span, status_badge
from tests.dashboard.conftest import PASSWORD, user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()


@pytest.mark.parametrize("role", [roles.VIEWER, roles.EDITOR, roles.ADMIN])
def test_each_role_group_holds_exactly_the_permissions_it_names(role):
    group = Group.objects.get(name=role)
    held = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
    assert held == set(roles.ROLES[role])


@pytest.mark.parametrize("role", [roles.VIEWER, roles.EDITOR, roles.ADMIN, None])
def test_a_users_role_is_read_from_what_their_groups_allow(role):
    assert roles.role_of(user_with_role("someone", role)) == role


def test_a_superuser_counts_as_admin(django_user_model):
    assert roles.role_of(django_user_model.objects.create_superuser("root", password=PASSWORD)) == roles.ADMIN


def test_logging_in_with_the_right_password_opens_the_overview():
    user_with_role("vera", roles.VIEWER)
    response = Client().post("/login/", {"username": "vera", "password": PASSWORD})
    assert (response.status_code, response["Location"]) == (302, "/")


def test_a_wrong_password_stays_on_the_login_page_and_says_so():
    user_with_role("vera", roles.VIEWER)
    response = Client().post("/login/", {"username": "vera", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_logging_out_takes_a_post_with_a_csrf_token():
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_with_role("vera", roles.VIEWER))
    assert client.post("/logout/").status_code == 403
    assert client.get("/logout/").status_code == 405


def test_the_login_form_is_protected_by_csrf():
    user_with_role("vera", roles.VIEWER)
    response = Client(enforce_csrf_checks=True).post("/login/", {"username": "vera", "password": PASSWORD})
    assert response.status_code == 403


def test_pages_forbid_inline_scripts_and_framing():
    response = Client().get("/login/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"


def test_manual_probes_are_limited_per_user_per_window():
    request = RequestFactory().post("/")
    request.user = user_with_role("eddie", roles.EDITOR)
    allowed = [allow(request) for _ in range(MANUAL_PROBES_PER_WINDOW + 2)]
    assert allowed == [True] * MANUAL_PROBES_PER_WINDOW + [False, False]
    other = RequestFactory().post("/")
    other.user = user_with_role("ada", roles.ADMIN)
    assert allow(other)


def test_the_limit_holds_across_a_window_boundary_and_frees_up_as_the_window_slides():
    from dashboard.access import MANUAL_PROBE_WINDOW

    request = RequestFactory().post("/")
    request.user = user_with_role("eddie", roles.EDITOR)
    start = 1_000 * MANUAL_PROBE_WINDOW  # the start of a fixed window
    used = [allow(request, now=start - 1) for _ in range(MANUAL_PROBES_PER_WINDOW)]
    # Fixed windows alone would allow ten more a second later, in the next window.
    assert (used, allow(request, now=start + 1)) == ([True] * MANUAL_PROBES_PER_WINDOW, False)
    # Most of the last window has slid by: its ten count for a tenth.
    assert allow(request, now=start + 0.95 * MANUAL_PROBE_WINDOW)


def test_percent_never_rounds_a_failure_up_to_a_perfect_score():
    assert (percent(0.99999), percent(1.0), percent(None)) == ("99.99 %", "100 %", DASH)


@pytest.mark.parametrize(("seconds", "shown"), [(0.0004, "0.4 ms"), (0.0123, "12 ms"), (1.234, "1.23 s"), (None, DASH)])
def test_latency_is_shown_in_the_unit_that_reads_best(seconds, shown):
    assert ms(seconds) == shown


def test_durations_and_days_left_read_as_people_say_them():
    assert (span(45), span(3 * 3600 + 300), span(2 * 86400 + 7200)) == ("45 s", "3 h 5 min", "2 d 2 h")
    assert (days(45.2), days(0.5), days(-3)) == ("45 d", "0.5 d", "expired 3 d ago")
    assert span(dt.timedelta(minutes=5).total_seconds()) == "5 min"


def test_a_status_is_shown_with_an_icon_and_a_word_not_colour_alone():
    html = status_badge("down")
    assert 'class="status status-down"' in html and "✖" in html and "Down" in html
    assert "Unknown" in status_badge("<script>")
