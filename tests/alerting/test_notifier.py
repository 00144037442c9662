"""The notifier end to end: changes recorded by the daemon's real path, delivered to real webhook receivers."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from monitor import tasks
from monitor.alerting import notifier
from monitor.alerting.channels.webhook import verify
from monitor.daemon.recording import Outcome, record
from monitor.models import Alert, Channel, DeliveryAttempt, Incident, Notification, Service, StatusChange
from monitor.probes import Failure, Phases, Result, Status
from tests.alerting.conftest import Reply, at_once

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SECRET = "whsec-0123456789abcdef"
STEP = dt.timedelta(seconds=60)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_service(name: str = "mail", tags: str = "") -> Service:
    return Service.objects.create(name=name, host="127.0.0.1", port=25, protocol="tcp", failure_threshold=1, tags=tags)


def make_channel(url: str, name: str = "hook", tags: str = "") -> Channel:
    return Channel.objects.create(name=name, url=url, secret=SECRET, tags=tags, timeout=2.0, group_window=0)


def probe(service: Service, moment: dt.datetime, status: Status) -> None:
    failure = None if status is Status.UP else Failure.REFUSED
    reason = "ok" if failure is None else "connection refused"
    result = Result(status, failure, reason, Phases(total=0.01))
    assert record([Outcome(service.id, "default", moment, moment, result)]) == 1


def posts(server) -> list[dict]:
    """Return the JSON bodies the receiver got, one per delivery."""
    return [json.loads(got.body) for got in server.received]


def bodies(server) -> list[dict]:
    """Return every alert the receiver got, in order, from all its deliveries."""
    return [alert for post in posts(server) for alert in post["alerts"]]


# --- The outage lifecycle ---------------------------------------------------------------------------


def test_an_outage_gives_one_signed_down_and_one_up_with_the_right_fields(receiver):
    server = receiver()
    make_channel(server.url())
    service = make_service()
    start = now() - 5 * STEP
    probe(service, start, Status.DOWN)
    notifier.run(now())
    probe(service, start + STEP, Status.UP)
    notifier.run(now())

    down, up = bodies(server)
    assert (down["kind"], up["kind"]) == ("down", "up")
    assert down["service"] == {
        "id": service.id,
        "name": "mail",
        "protocol": "tcp",
        "host": "127.0.0.1",
        "port": 25,
        "location": "default",
    }
    assert down["failure"] == {"kind": "refused", "reason": "connection refused"}
    assert down["since"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (up["since"], up["duration_seconds"], up["status"]) == (
        (start + STEP).strftime("%Y-%m-%dT%H:%M:%SZ"),
        60,
        "up",
    )
    assert up["failure"] == down["failure"]  # the recovery says what the outage was
    assert [post["schema"] for post in posts(server)] == [2, 2] and down["alert_id"] != up["alert_id"]
    for got in server.received:
        assert verify(SECRET, got.headers["x-portwatch-timestamp"], got.body, got.headers["x-portwatch-signature"])


def test_running_the_notifier_again_sends_nothing_more(receiver):
    server = receiver()
    make_channel(server.url())
    service = make_service()
    start = now() - 5 * STEP
    probe(service, start, Status.DOWN)
    probe(service, start + STEP, Status.UP)
    for _ in range(3):
        notifier.run(now())
    assert [body["kind"] for body in bodies(server)] == ["down", "up"]
    assert (Alert.objects.count(), Notification.objects.count()) == (2, 2)


def test_a_task_run_is_the_notifier_run(receiver):
    server = receiver()
    make_channel(server.url())
    probe(make_service(), now() - STEP, Status.DOWN)
    assert tasks.notify() == {"alerts": 1, "sent": 1, "retrying": 0, "failed": 0}
    assert len(server.received) == 1


def test_changes_that_do_not_involve_down_make_no_alert(receiver):
    server = receiver()
    make_channel(server.url())
    service = make_service()
    probe(service, now() - 2 * STEP, Status.UP)  # unknown -> up
    probe(service, now() - STEP, Status.WARNING)  # up -> warning
    notifier.run(now())
    assert StatusChange.objects.filter(processed=None).count() == 0
    assert (Alert.objects.count(), len(server.received)) == (0, 0)


# --- Retries and failures ---------------------------------------------------------------------------


def test_a_500_is_retried_after_the_backoff_and_both_attempts_are_recorded(receiver):
    server = receiver(Reply(500, b"busy"))
    make_channel(server.url())
    probe(make_service(), now() - STEP, Status.DOWN)
    moment = now()
    assert notifier.run(moment)["retrying"] == 1
    server.reply = Reply(204)
    assert notifier.run(moment + dt.timedelta(seconds=29))["sent"] == 0  # still backing off
    assert notifier.run(moment + dt.timedelta(seconds=30))["sent"] == 1
    assert len(server.received) == 2
    attempts = list(DeliveryAttempt.objects.order_by("at").values_list("ok", "status"))
    assert attempts == [(False, 500), (True, 204)]
    assert Notification.objects.get().status == "sent"


def test_a_404_fails_at_once_with_its_error_recorded(receiver):
    server = receiver(Reply(404, b"no such hook"))
    make_channel(server.url())
    probe(make_service(), now() - STEP, Status.DOWN)
    moment = now()
    assert notifier.run(moment)["failed"] == 1
    notifier.run(moment + dt.timedelta(hours=2))
    notification = Notification.objects.get()
    assert notification.status == "failed"
    assert "404" in notification.last_error and "no such hook" in notification.last_error
    assert DeliveryAttempt.objects.get().status == 404
    assert len(server.received) == 1


def test_retries_stop_when_the_retry_window_ends(refused_url, settings):
    settings.PORTWATCH_ALERT_RETRY_WINDOW = 60
    make_channel(refused_url)
    probe(make_service(), now() - STEP, Status.DOWN)
    moment = now()
    assert notifier.run(moment)["retrying"] == 1  # the next try, 30 s on, is inside the window
    assert notifier.run(moment + dt.timedelta(seconds=30))["failed"] == 1  # the next, 60 s on, is not
    notification = Notification.objects.get()
    assert notification.last_error.endswith("(retries stopped: PORTWATCH_ALERT_RETRY_WINDOW ended)")
    assert DeliveryAttempt.objects.count() == 2


def test_a_notification_whose_sender_died_is_sent_when_its_lease_expires(receiver):
    server = receiver()
    make_channel(server.url())
    probe(make_service(), now() - STEP, Status.DOWN)
    moment = now()
    notifier.evaluate(moment)
    Notification.objects.update(status="sending", claimed_until=moment + notifier.LEASE)  # claimed, then died
    assert notifier.deliver_due(moment + dt.timedelta(seconds=10))["sent"] == 0
    assert notifier.deliver_due(moment + notifier.LEASE + dt.timedelta(seconds=1))["sent"] == 1
    assert len(server.received) == 1


def test_the_recovery_waits_for_the_outage_still_being_retried(receiver):
    server = receiver(Reply(503))
    make_channel(server.url())
    service = make_service()
    probe(service, now() - 3 * STEP, Status.DOWN)
    probe(service, now() - 2 * STEP, Status.UP)
    moment = now()
    notifier.run(moment)
    assert len(server.received) == 1  # the down, refused; the up waits for it
    server.reply = Reply(204)
    notifier.run(moment + dt.timedelta(seconds=30))
    assert [body["kind"] for body in bodies(server)] == ["down", "down", "up"]


# --- What is not sent -------------------------------------------------------------------------------


def test_a_change_older_than_the_max_age_is_recorded_but_not_sent(receiver, settings):
    settings.PORTWATCH_ALERT_MAX_AGE = 3600
    server = receiver()
    make_channel(server.url())
    service = make_service()
    probe(service, now() - dt.timedelta(hours=2), Status.DOWN)
    notifier.run(now())
    notification = Notification.objects.get()
    assert notification.status == "skipped"
    assert "PORTWATCH_ALERT_MAX_AGE (60 min)" in notification.last_error
    probe(service, now() - STEP, Status.UP)  # its recovery: nobody was told of the outage
    notifier.run(now())
    assert len(server.received) == 0
    assert list(Alert.objects.values_list("kind", flat=True)) == ["down"]


def test_a_channel_with_tags_only_gets_matching_services(receiver):
    mail, anything, web = receiver(), receiver(), receiver()
    make_channel(mail.url(), name="mail", tags="mail")
    make_channel(anything.url(), name="all")
    make_channel(web.url(), name="web", tags="web")
    probe(make_service("smtp", tags="mail,production"), now() - STEP, Status.DOWN)
    probe(make_service("db", tags="database"), now() - STEP, Status.DOWN)
    notifier.run(now())
    names = {server: sorted(body["service"]["name"] for body in bodies(server)) for server in (mail, anything, web)}
    assert names == {mail: ["smtp"], anything: ["db", "smtp"], web: []}


def test_a_disabled_channel_gets_nothing(receiver):
    server = receiver()
    channel = make_channel(server.url())
    channel.enabled = False
    channel.save()
    probe(make_service(), now() - STEP, Status.DOWN)
    notifier.run(now())
    assert (len(server.received), Notification.objects.count()) == (0, 0)


def test_channel_secrets_are_stored_encrypted():
    url = "https://hooks.example.com/services/T0/B0/XYZ?token=abc"
    channel = make_channel(url)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT url, secret FROM {Channel._meta.db_table}")
        raw_url, raw_secret = cursor.fetchone()
    assert raw_url.startswith("gAAAA") and raw_secret.startswith("gAAAA")
    assert "hooks.example.com" not in raw_url and SECRET not in raw_secret
    stored = Channel.objects.get(pk=channel.pk)
    assert (stored.url, stored.secret) == (url, SECRET)


# --- Concurrency and history ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_notifiers_at_once_deliver_each_notification_exactly_once(receiver):
    if connection.vendor != "postgresql":
        pytest.skip("row-level claims racing is PostgreSQL's; SQLite has one writer at a time anyway")
    server = receiver()
    make_channel(server.url(), name="one")
    make_channel(server.url("/other"), name="two")
    start = now() - 5 * STEP
    for index in range(15):
        service = make_service(f"s{index:02}")
        probe(service, start, Status.DOWN)
        probe(service, start + STEP, Status.UP)
    at_once(lambda: notifier.run(now()))
    notifier.run(now())  # a recovery deferred while the other thread made its down alert
    sent = [(got.path, alert["alert_id"]) for got in server.received for alert in json.loads(got.body)["alerts"]]
    assert len(sent) == len(set(sent)) == 60  # 15 services, down and up, to two channels, each once
    assert Notification.objects.exclude(status="sent").count() == 0


@pytest.mark.django_db(transaction=True)
def test_changes_recorded_before_alerting_existed_never_fire(receiver):
    service = make_service()
    probe(service, now() - STEP, Status.DOWN)
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate([("monitor", "0007_result_service_status")])
        StatusChange.objects.update(processed=None)
        executor.loader.build_graph()
        executor.migrate([("monitor", "0008_alerting")])
    finally:
        executor.loader.build_graph()
        executor.migrate(latest)
    server = receiver()
    make_channel(server.url())
    notifier.run(now())
    assert (Alert.objects.count(), len(server.received)) == (0, 0)
    assert Incident.objects.count() == 1


def test_the_admin_never_shows_a_channels_secrets_and_keeps_them_when_left_blank(admin_client):
    url = "https://hooks.example.com/services/T0/B0/XYZ"
    channel = make_channel(url)
    page = admin_client.get(f"/admin/monitor/channel/{channel.pk}/change/").content.decode()
    assert "T0/B0/XYZ" not in page and SECRET not in page
    assert "https://hooks.example.com/***" in page
    form = {"name": "renamed", "kind": "webhook", "enabled": "on", "tags": "", "url": "", "secret": "", "timeout": "3"}
    assert admin_client.post(f"/admin/monitor/channel/{channel.pk}/change/", form).status_code == 302
    stored = Channel.objects.get(pk=channel.pk)
    assert (stored.name, stored.url, stored.secret) == ("renamed", url, SECRET)
