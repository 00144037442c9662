"""Acknowledging an outage: the signed link (no login) and the service page's form."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core import signing
from django.core.cache import cache
from django.test import Client

from monitor.alerting.acknowledgement import token
from monitor.models import Problem
from tests.dashboard.conftest import make_service

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_rate_limit():
    cache.clear()


@pytest.fixture
def problem() -> Problem:
    now = dt.datetime.now(dt.UTC)
    service = make_service("mail <primary>")
    return Problem.objects.create(
        kind="down",
        service=service,
        opened_at=now,
        started_at=now,
        locations=["eu", "us"],
        failure="refused",
        reason="<script>alert(1)</script> connection refused",
    )


def link(problem: Problem) -> str:
    return f"/ack/{token(problem)}"


def test_the_link_shows_the_problem_escaped_without_a_login(problem):
    response = Client().get(link(problem))
    page = response.content.decode()
    assert response.status_code == 200
    assert "mail &lt;primary&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt; connection refused" in page
    assert "<script>alert(1)" not in page and 'name="note"' in page


def test_posting_the_link_with_a_note_acknowledges_by_link(problem):
    page = Client().post(link(problem), {"note": "  restarting   postfix "}).content.decode()
    problem.refresh_from_db()
    assert (problem.acknowledged_by, problem.acknowledgement) == ("link", "restarting postfix")
    assert "Acknowledged by link" in page


def test_the_note_is_required(problem):
    response = Client().post(link(problem), {"note": "   "})
    assert response.status_code == 400
    assert "an acknowledgement needs a note" in response.content.decode()
    problem.refresh_from_db()
    assert problem.acknowledged_at is None


def test_the_link_needs_a_csrf_token(problem):
    response = Client(enforce_csrf_checks=True).post(link(problem), {"note": "on it"})
    assert response.status_code == 403
    problem.refresh_from_db()
    assert problem.acknowledged_at is None


def test_a_tampered_token_is_a_clear_400(problem):
    other = Problem.objects.create(kind="down", service=problem.service, key="x", opened_at=problem.opened_at)
    _, timestamp, signature = token(problem).split(":")
    payload = signing.b64_encode(json.dumps({"problem": other.pk}, separators=(",", ":")).encode()).decode()
    forged = f"{payload}:{timestamp}:{signature}"  # another problem's id under this problem's signature
    response = Client().post(f"/ack/{forged}", {"note": "mine now"})
    assert response.status_code == 400
    assert "This acknowledgement link is not valid." in response.content.decode()
    assert not Problem.objects.exclude(acknowledged_at=None).exists()


def test_a_link_to_a_problem_that_is_gone_says_so(problem):
    address = link(problem)
    problem.delete()
    response = Client().get(address)
    assert response.status_code == 400 and "no longer exists" in response.content.decode()


def test_the_link_posts_are_rate_limited_per_problem(problem):
    client = Client()
    statuses = [client.post(link(problem), {"note": ""}).status_code for _ in range(11)]
    assert statuses[:10] == [400] * 10 and statuses[10] == 429


# The service page ---------------------------------------------------------------------------------


def test_the_service_page_shows_the_open_outage_and_an_editor_acknowledges_it(editor, problem):
    page = editor.get(f"/services/{problem.service_id}/").content.decode()
    assert 'id="problem"' in page and "eu, us" in page and 'id="acknowledge-form"' in page
    response = editor.post(f"/services/{problem.service_id}/acknowledge", {"note": "on it"})
    assert response.status_code == 302
    problem.refresh_from_db()
    assert (problem.acknowledged_by, problem.acknowledgement) == ("eddie", "on it")
    after = editor.get(f"/services/{problem.service_id}/").content.decode()
    assert "by eddie" in after and 'id="acknowledge-form"' not in after


def test_the_service_page_form_needs_a_note(editor, problem):
    response = editor.post(f"/services/{problem.service_id}/acknowledge", {"note": ""}, follow=True)
    assert "an acknowledgement needs a note" in response.content.decode()
    problem.refresh_from_db()
    assert problem.acknowledged_at is None


def test_a_viewer_sees_the_outage_but_may_not_acknowledge(viewer, problem):
    page = viewer.get(f"/services/{problem.service_id}/").content.decode()
    assert 'id="problem"' in page and 'id="acknowledge-form"' not in page
    assert viewer.post(f"/services/{problem.service_id}/acknowledge", {"note": "x"}).status_code == 403


def test_a_forming_problem_is_not_shown(viewer, problem):
    Problem.objects.filter(pk=problem.pk).update(started_at=None)
    assert 'id="problem"' not in viewer.get(f"/services/{problem.service_id}/").content.decode()
