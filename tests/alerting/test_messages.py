"""What a person reads: subjects, text and HTML bodies, from `facts` dicts and from a recorded outage."""

from __future__ import annotations

import datetime as dt

import pytest

from monitor.alerting import messages
from monitor.alerting.payload import MAX_REASON
from monitor.humanize import span
from monitor.models import Alert
from monitor.probes import Status
from tests.alerting.test_notifier import STEP, make_service, now, probe


def facts(**changes) -> dict:
    data = {
        "kind": "down",
        "status": "down",
        "service": {
            "id": 7,
            "name": "mail",
            "protocol": "smtp",
            "host": "mail.example.com",
            "port": 25,
            "location": "default",
        },
        "failure": {"kind": "refused", "reason": "connection refused"},
        "since": "2026-11-28T12:00:00Z",
        "url": None,
        "last_good": {"at": "2026-11-28T11:59:00Z", "latency": 0.0423},
        "certificate": None,
    }
    return data | changes


def test_the_down_subject_names_service_target_and_location():
    assert messages.render(facts()).subject == "DOWN: mail (smtp mail.example.com:25) from default"


def test_the_recovered_subject_says_how_long_the_outage_lasted():
    said = messages.render(facts(kind="up", status="up", duration_seconds=300))
    assert said.subject == "RECOVERED: mail (smtp mail.example.com:25) from default after 5 min"
    assert "Outage lasted: 5 min" in said.text and "Cause: refused: connection refused" in said.text


def test_the_down_text_says_what_failed_since_when_and_the_last_good_check():
    text = messages.render(facts()).text
    assert text.splitlines() == [
        "mail is down.",
        "Service: mail (smtp mail.example.com:25)",
        "Location: default",
        "Failure: refused: connection refused",
        "Down since: 2026-11-28T12:00:00Z",
        "Last good check: 2026-11-28T11:59:00Z (42 ms)",
    ]


def test_a_script_in_the_reason_is_escaped_in_the_html():
    said = messages.render(facts(failure={"kind": "protocol_error", "reason": "<script>alert(1)</script>"}))
    assert "<script>" not in said.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in said.html
    assert "<script>alert(1)</script>" in said.text  # plain text is not markup


def test_a_long_reason_is_bounded():
    said = messages.render(facts(failure={"kind": "protocol_error", "reason": "x" * 10_000}))
    assert "x" * MAX_REASON not in said.text and "x" * (MAX_REASON - 1) + "…" in said.text


def test_certificate_facts_are_shown_escaped_for_a_certificate_failure():
    certificate = {
        "subject": "CN=<b>evil</b>",
        "issuer": "CN=Test CA",
        "not_after": "2026-11-01T00:00:00+00:00",
        "days_left": -27.5,
        "verify_error": "certificate has expired",
    }
    said = messages.render(facts(failure={"kind": "tls_expired", "reason": "expired"}, certificate=certificate))
    assert "Certificate subject: CN=<b>evil</b>" in said.text
    assert "Certificate expires: 2026-11-01T00:00:00+00:00 (-27.5 days left)" in said.text
    assert "CN=&lt;b&gt;evil&lt;/b&gt;" in said.html and "<b>evil" not in said.html


def test_the_service_page_is_linked_when_there_is_a_url():
    said = messages.render(facts(url="https://portwatch.example.com/services/7/"))
    assert "Service page: https://portwatch.example.com/services/7/" in said.text
    assert "<a href='https://portwatch.example.com/services/7/'>" in said.html


@pytest.mark.parametrize(
    ("seconds", "shown"), [(40, "40 s"), (300, "5 min"), (3600, "1 h"), (7500, "2 h 5 min"), (273600, "3 d 4 h")]
)
def test_durations_read_as_a_person_says_them(seconds, shown):
    assert span(seconds) == shown


@pytest.mark.django_db
def test_facts_of_a_recorded_outage_hold_the_last_good_check_and_the_base_url(settings):
    settings.PORTWATCH_BASE_URL = "https://portwatch.example.com"
    service = make_service()
    start = now() - 5 * STEP
    probe(service, start - STEP, Status.UP)
    probe(service, start, Status.DOWN)
    from monitor.alerting import notifier

    notifier.evaluate(now())
    data = messages.facts(Alert.objects.get())
    assert data["last_good"] == {"at": (start - STEP).strftime("%Y-%m-%dT%H:%M:%SZ"), "latency": 0.01}
    assert data["url"] == f"https://portwatch.example.com/services/{service.pk}/"
    assert data["certificate"] is None
    assert isinstance(dt.datetime.fromisoformat(data["since"].replace("Z", "+00:00")), dt.datetime)


def test_a_certificate_warning_names_the_certificate_it_warns_about_escaped():
    certificate = {"subject": "CN=<i>intermediate</i>", "not_after": "2026-12-05T00:00:00Z", "days_left": 6.5}
    certificate["which"] = "chain"
    said = messages.render(
        facts(kind="certificate", status="warning", detail={"days_left": 6.5}, certificate=certificate)
    )
    assert said.subject == "CERTIFICATE EXPIRES in 6.5 days: mail (smtp mail.example.com:25) from default"
    assert (
        "Which certificate: chain" in said.text
        and "Certificate expires: 2026-12-05T00:00:00Z (6.5 days left)" in said.text
    )
    assert "&lt;i&gt;intermediate&lt;/i&gt;" in said.html and "<i>" not in said.html


def test_several_alerts_sent_together_make_one_message_with_a_summary():
    said = messages.render_group([facts(), facts(kind="up", status="up", duration_seconds=60), facts()])
    assert said.subject == "3 alerts: 2 down, 1 recovered"
    assert said.text.startswith("3 alerts: 2 down, 1 recovered.\n\nmail is down.")
    assert said.html.count("<table>") == 3
