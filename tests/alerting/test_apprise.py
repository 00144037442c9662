"""The apprise channel: json:// and form:// targets against the real local receiver, alone and via the notifier."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse

import pytest

from monitor.alerting import notifier
from monitor.alerting.channels import apprise as apprise_channel
from monitor.models import Channel, Notification
from monitor.probes import Status
from tests.alerting.conftest import Reply, silent
from tests.alerting.test_notifier import STEP, make_service, now, probe

TOKEN = "tok3n-s3cret-4321"


def as_apprise(url: str, scheme: str = "json", credentials: str = "") -> str:
    """Return the receiver's http://host:port/path as an apprise json:// or form:// URL."""
    return f"{scheme}://{credentials}{url.removeprefix('http://')}"


def test_a_json_target_gets_the_title_and_body(receiver):
    server = receiver()
    delivery = apprise_channel.deliver([as_apprise(server.url())], "DOWN: mail", "mail is down.", timeout=5)
    assert delivery.ok, delivery.error
    (got,) = server.received
    assert got.path == "/hook"
    assert {key: json.loads(got.body)[key] for key in ("title", "message")} == {
        "title": "DOWN: mail",
        "message": "mail is down.",
    }


def test_a_form_target_gets_the_title_and_body(receiver):
    server = receiver()
    delivery = apprise_channel.deliver([as_apprise(server.url(), "form")], "DOWN: mail", "mail is down.", timeout=5)
    assert delivery.ok, delivery.error
    fields = dict(urllib.parse.parse_qsl(server.received[0].body.decode()))
    assert (fields["title"], fields["message"]) == ("DOWN: mail", "mail is down.")


def test_a_refused_port_is_a_retryable_failure_that_shows_no_token(refused_url, caplog):
    caplog.set_level(logging.DEBUG)
    url = (
        as_apprise(refused_url, credentials=f"portwatch:{TOKEN}@") + f"?-token={TOKEN}"
    )  # apprise logs this query at debug level
    delivery = apprise_channel.deliver([url], "DOWN: mail", "mail is down.", timeout=5)
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert delivery.error.startswith("apprise could not notify json://***")
    assert TOKEN not in delivery.error and TOKEN not in caplog.text


def test_a_receiver_answering_500_is_a_retryable_failure(receiver):
    server = receiver(Reply(500, b"busy"))
    delivery = apprise_channel.deliver([as_apprise(server.url())], "DOWN: mail", "mail is down.", timeout=5)
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert "500" in delivery.error


def test_a_silent_receiver_is_given_up_on_at_the_timeout(raw_peer):
    peer = raw_peer(silent)
    started = time.monotonic()
    delivery = apprise_channel.deliver([as_apprise(peer.url())], "DOWN: mail", "mail is down.", timeout=0.5)
    assert time.monotonic() - started < 2
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert delivery.error == "apprise did not finish notifying json://*** within 0.5 s"


def test_a_url_apprise_cannot_parse_fails_at_once_without_echoing_it():
    delivery = apprise_channel.deliver(["nosuchservice://" + TOKEN], "t", "b", timeout=5)
    assert (delivery.ok, delivery.retryable) == (False, False)
    assert delivery.error == "apprise cannot use the URLs: #1 (nosuchservice://***)"


# --- The model and the notifier ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_model_names_the_bad_apprise_url_without_its_token():
    channel = Channel(name="chat", kind="apprise", url=f"json://127.0.0.1/hook nosuchservice://{TOKEN}")
    with pytest.raises(Exception) as raised:
        channel.full_clean()
    assert raised.value.message_dict["url"] == [
        "apprise cannot use URL #2 (nosuchservice://***): check its scheme and parts (see apprise's wiki)."
    ]


@pytest.mark.django_db
def test_the_model_rejects_a_bad_email_address():
    channel = Channel(name="mail", kind="email", url="ops@example.com, not-an-address")
    with pytest.raises(Exception) as raised:
        channel.full_clean()
    assert raised.value.message_dict["url"] == ["Not a valid email address: 'not-an-address'."]


@pytest.mark.django_db
@pytest.mark.postgres
def test_an_outage_posts_exactly_one_down_and_one_recovered_through_apprise(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    server = receiver()
    Channel.objects.create(
        name="chat",
        kind="apprise",
        url=as_apprise(server.url(), credentials=f"u:{TOKEN}@") + f"?-token={TOKEN}",
        group_window=0,
    )
    service = make_service()
    start = now() - 5 * STEP
    probe(service, start, Status.DOWN)
    notifier.run(now())
    probe(service, start + STEP, Status.UP)
    for _ in range(2):
        notifier.run(now())

    titles = [json.loads(got.body)["title"] for got in server.received]
    assert titles == [
        "DOWN: mail (tcp 127.0.0.1:25) from default",
        "RECOVERED: mail (tcp 127.0.0.1:25) from default after 1 min",
    ]
    assert "Failure: refused: connection refused" in json.loads(server.received[0].body)["message"]
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}
    assert TOKEN not in caplog.text
