"""The email channel against a real SMTP server (aiosmtpd) and scripted peers, alone and through the notifier."""

from __future__ import annotations

import base64
import datetime as dt
import socket

import pytest

from monitor.alerting import notifier
from monitor.alerting.channels import email as email_channel
from monitor.models import Channel, DeliveryAttempt, Notification
from monitor.probes import Status
from tests.alerting.conftest import silent
from tests.alerting.test_notifier import STEP, make_service, now, probe

PASSWORD = "smtp-pa55word-do-not-show"


def send(to=("ops@example.com",), timeout: float = 2.0):
    return email_channel.deliver(list(to), "DOWN: mail", "mail is down.", "<p>mail is down.</p>", timeout=timeout)


def test_it_sends_one_message_with_text_and_html_parts(mail_server):
    _, recorder = mail_server()
    delivery = send(to=["ops@example.com", "oncall@example.com"])
    assert delivery.ok, delivery.error
    (got,) = recorder.messages
    assert (got["Subject"], got["From"], got["To"]) == (
        "DOWN: mail",
        "portwatch@example.com",
        "ops@example.com, oncall@example.com",
    )
    parts = {part.get_content_type(): part.get_content().strip() for part in got.iter_parts()}
    assert parts == {"text/plain": "mail is down.", "text/html": "<p>mail is down.</p>"}


def test_a_recipient_refused_with_5xx_is_not_retryable(mail_server):
    mail_server(refuse={"ops@example.com": "550 5.1.1 no such user"})
    delivery = send()
    assert (delivery.ok, delivery.retryable, delivery.status) == (False, False, 550)
    assert "refused the recipients (ops@example.com: 550 5.1.1 no such user)" in delivery.error


def test_a_recipient_refused_with_4xx_is_retryable(mail_server):
    mail_server(refuse={"ops@example.com": "450 4.2.0 mailbox busy"})
    delivery = send()
    assert (delivery.ok, delivery.retryable, delivery.status) == (False, True, 450)


def test_a_refused_connection_is_retryable(settings):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    delivery = send()
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert delivery.error == f"the connection to 127.0.0.1:{port} was refused"


def test_a_silent_server_times_out_retryably(raw_peer, settings):
    peer = raw_peer(silent)  # accepts, never greets
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", int(peer.url().split(":")[2].split("/")[0])
    delivery = send(timeout=0.5)
    assert (delivery.ok, delivery.retryable) == (False, True)
    assert "within 0.5 s" in delivery.error and delivery.elapsed < 2


def test_a_greeting_of_421_is_retryable_and_554_is_not(line_server):
    line_server(b"421 mail.test busy, try later\r\n", lambda line: None)
    assert send().retryable
    line_server(b"554 mail.test no service\r\n", lambda line: None)
    delivery = send()
    assert (delivery.retryable, delivery.status) == (False, 554)


def test_the_password_never_appears_in_the_error_even_when_the_server_echoes_it(line_server, settings):
    def answer(line: bytes) -> bytes | None:
        if line.upper().startswith(b"EHLO"):
            return b"250-mail.test\r\n250 AUTH PLAIN\r\n"
        if line.upper().startswith(b"AUTH PLAIN"):
            echoed = base64.b64decode(line.split()[2]).replace(b"\x00", b" ")
            return b"535 5.7.8 bad credentials: " + echoed + b"\r\n"
        return None

    line_server(b"220 mail.test ESMTP\r\n", answer)
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "portwatch", PASSWORD
    delivery = send()
    assert (delivery.ok, delivery.retryable, delivery.status) == (False, False, 535)
    assert "refused the login: 535 5.7.8 bad credentials" in delivery.error
    assert PASSWORD not in delivery.error and "***" in delivery.error


# --- Through the notifier ---------------------------------------------------------------------------


def make_email_channel(recipients: str = "ops@example.com") -> Channel:
    return Channel.objects.create(name="mail", kind="email", url=recipients, timeout=2.0, group_window=0)


@pytest.mark.django_db
@pytest.mark.postgres
def test_an_outage_sends_exactly_one_down_and_one_recovered_email(mail_server):
    _, recorder = mail_server()
    make_email_channel()
    service = make_service()
    start = now() - 5 * STEP
    probe(service, start, Status.DOWN)
    notifier.run(now())
    probe(service, start + STEP, Status.UP)
    for _ in range(2):
        notifier.run(now())

    subjects = [got["Subject"] for got in recorder.messages]
    assert subjects == [
        "DOWN: mail (tcp 127.0.0.1:25) from default",
        "RECOVERED: mail (tcp 127.0.0.1:25) from default after 1 min",
    ]
    for got in recorder.messages:
        types = [part.get_content_type() for part in got.iter_parts()]
        assert types == ["text/plain", "text/html"]
    down_text = recorder.messages[0].get_body(("plain",)).get_content()
    assert "Failure: refused: connection refused" in down_text
    assert "Outage lasted: 1 min" in recorder.messages[1].get_body(("plain",)).get_content()
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_refused_recipient_fails_the_notification_without_retrying(mail_server):
    _, recorder = mail_server(refuse={"gone@example.com": "550 5.1.1 no such user"})
    make_email_channel("gone@example.com")
    probe(make_service(), now() - STEP, Status.DOWN)
    moment = now()
    assert notifier.run(moment)["failed"] == 1
    assert notifier.run(moment + dt.timedelta(hours=1)) == {"alerts": 0, "sent": 0, "retrying": 0, "failed": 0}
    notification = Notification.objects.get()
    assert notification.status == "failed" and "550 5.1.1 no such user" in notification.last_error
    assert (DeliveryAttempt.objects.count(), recorder.messages) == (1, [])
