"""Alerting for real: a service stopped and started, Celery workers and notifiers on Redis and PostgreSQL, receivers.

Each test starts a private redis-server and a database on a private PostgreSQL cluster
(tests/peers/services.py), Celery workers as subprocesses (some with beat: each of those runs its own
dispatcher and its own `portwatch.notify` schedule, so several notifiers claim the same rows), a real TCP
service to probe, and the receivers: a webhook endpoint checking signatures, aiosmtpd for the email
channel (the workers get EMAIL_HOST and EMAIL_PORT in their environment) and an HTTP endpoint behind
apprise's json:// URL. The service is taken down and brought back on its port; the tests read what the
receivers got and what the database recorded. Intervals are 5 s and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.message
import json
import os
import time
from collections.abc import Iterator

import psycopg
import pytest

from monitor.alerting.channels.webhook import verify
from monitor.celery import worker_queues
from monitor.humanize import span
from tests.alerting.conftest import MailRecorder, ThreadedServer
from tests.alerting.test_apprise import as_apprise
from tests.conftest import need
from tests.peers.http_server import HTTPServer, Reply, Request
from tests.peers.services import (
    REDIS_SERVER,
    CeleryProcess,
    PostgresServer,
    RedisServer,
    Stack,
    TcpServers,
    celery_processes,
    free_port,
    postgres_available,
    wait_until,
)
from tests.peers.smtp_server import smtp_server

pytestmark = [pytest.mark.celery, pytest.mark.redis, pytest.mark.timeout(180)]

INTERVAL = 5  # the service's probe interval, the minimum; also the notify task's period
NOTIFY_PERIOD = 5
QUEUES = worker_queues("default")
SECRET = "whsec-end-to-end-0123456789"
RECIPIENT = "ops@example.com"
# Worker start, one probe, one notify run and the grouping window, on a busy two-core machine.
ARRIVAL_TIMEOUT = 40


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    need(postgres_available(), "PostgreSQL 15 binaries (initdb, pg_ctl) or runuser are missing")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def redis(tmp_path) -> Iterator[RedisServer]:
    need(REDIS_SERVER is not None, "redis-server is not installed")
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def mail() -> Iterator[tuple[int, MailRecorder]]:
    """Run aiosmtpd in a thread, keeping every message; yield its port and the recorder."""
    recorder = MailRecorder()
    with contextlib.closing(ThreadedServer(smtp_server(handler=recorder))) as server:
        yield server.port, recorder


@pytest.fixture
def stack(postgres, redis, mail, tmp_path) -> Stack:
    """A migrated database on the private cluster, the private broker, and the mail settings for the workers."""
    url = postgres.create_database(f"portwatch_alerting_e2e_{os.getpid()}_{time.monotonic_ns()}")
    mail_env = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(mail[0]), "EMAIL_USE_TLS": "false"}
    stack = Stack(tmp_path, url, redis.url, extra_env=mail_env | {"EMAIL_USE_SSL": "false"})
    stack.migrate()
    return stack


class Hook(HTTPServer):
    """A webhook receiver that answers 204 and keeps each request with whether its signature verified."""

    def __init__(self, port: int = 0) -> None:
        super().__init__({}, fallback=Reply(204), port=port)
        self.verified: list[bool] = []

    def reply_to(self, request: Request) -> Reply:
        headers = request.headers
        signed = verify(
            SECRET, headers.get("x-portwatch-timestamp", ""), request.body, headers.get("x-portwatch-signature", "")
        )
        self.verified.append(signed)
        return super().reply_to(request)

    def alerts(self) -> list[dict]:
        """Return every alert received, in order of arrival, across deliveries."""
        return [alert for request in self.requests for alert in json.loads(request.body)["alerts"]]

    def kinds(self) -> list[str]:
        return [alert["kind"] for alert in self.alerts()]


def create(stack: Stack, service: dict, channels: list[dict]) -> int:
    """Create the service and its channels (attached to it alone); return the service's id."""
    return stack.django(
        f"""
        from monitor.models import Channel, Service
        service = Service.objects.create(**{service!r})
        for spec in {channels!r}:
            Channel.objects.create(**spec).services.add(service)
        print(json.dumps(service.id))
        """
    )


def tcp_service(name: str, port: int) -> dict:
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": port,
        "protocol": "tcp",
        "interval": INTERVAL,
        "timeout": 2.0,
        "failure_threshold": 1,
        "recovery_threshold": 1,
        "options": {"read_banner": True},
    }


def webhook(url: str, *, group_window: float) -> dict:
    return {"name": "hook", "kind": "webhook", "url": url, "secret": SECRET, "group_window": group_window, "timeout": 5}


def query(stack: Stack, sql: str, *parameters: object) -> list[tuple]:
    """Read committed rows with plain SQL, as the workers wrote them."""
    with psycopg.connect(stack.database_url, connect_timeout=5) as conn:
        return conn.execute(sql, parameters).fetchall()


def has_status(stack: Stack, service_id: int, status: str, after: dt.datetime) -> bool:
    rows = stack.results(measured_only=True)
    return any(row.service_id == service_id and row.status == status and row.started_at > after for row in rows)


def notifications(stack: Stack) -> list[tuple[str, str, str, int]]:
    """Return (channel, alert kind, status, attempts) of every notification, oldest alert first."""
    return query(
        stack,
        "SELECT c.name, a.kind, n.status, n.attempts FROM monitor_notification n "
        "JOIN monitor_alert a ON a.id = n.alert_id JOIN monitor_channel c ON c.id = n.channel_id "
        "ORDER BY c.name, a.created, a.id",
    )


def subjects(recorder: MailRecorder) -> list[str]:
    return [str(message["Subject"]) for message in recorder.messages]


def plain_text(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# 1. The outage lifecycle: three channels, four workers, two notifiers --------------------------


def test_an_outage_reaches_each_channel_once_down_and_once_recovered(stack, mail, receiver):
    _, inbox = mail
    with TcpServers(1) as target, Hook() as hook, celery_processes() as workers:
        port = target.ports[0]
        chat = receiver()
        name = f"billing-{port}"
        service_id = create(
            stack,
            tcp_service(name, port),
            [
                webhook(hook.url("/hook"), group_window=2),
                {"name": "mail", "kind": "email", "url": RECIPIENT, "group_window": 2, "timeout": 5},
                {"name": "chat", "kind": "apprise", "url": as_apprise(chat.url("/notify")), "group_window": 2},
            ],
        )
        # Four workers, two of them with beat: two dispatchers and two notify schedules on the same rows.
        for index, beat in enumerate((True, True, False, False)):
            workers.append(CeleryProcess.worker(stack, f"w{index}", queues=QUEUES, concurrency=1, beat=beat))
        begin = now()
        wait_until(lambda: has_status(stack, service_id, "up", begin), timeout=ARRIVAL_TIMEOUT, what="a first up")

        target.stop(port)
        stopped = now()
        wait_until(
            lambda: "down" in hook.kinds() and inbox.messages and chat.received,
            timeout=ARRIVAL_TIMEOUT,
            what="a DOWN on every channel",
        )
        target.start(port)
        restarted = now()
        wait_until(
            lambda: "up" in hook.kinds() and len(inbox.messages) >= 2 and len(chat.received) >= 2,
            timeout=ARRIVAL_TIMEOUT,
            what="a RECOVERED on every channel",
        )
        time.sleep(3 * NOTIFY_PERIOD)  # both notifiers run a few more times: nothing may be sent again

    # Webhook: one signed DOWN, then one RECOVERED of the same problem.
    assert hook.verified and all(hook.verified)
    down, up = hook.alerts()
    assert (down["kind"], up["kind"]) == ("down", "up")
    assert down["alert_id"] != up["alert_id"] and down["problem_id"] == up["problem_id"]
    assert (down["service"]["id"], down["service"]["name"], down["service"]["port"]) == (service_id, name, port)
    assert down["failure"]["kind"] == "refused"
    assert up["failure"]["kind"] == "refused"  # a resolution says what it was
    duration = up["duration_seconds"]
    # The outage is measured on the probe grid, first failing probe to first good one: within an interval (and
    # a probe's lateness on a busy machine) of the time the service was really down.
    assert abs(duration - (restarted - stopped).total_seconds()) <= INTERVAL + 2
    target_words = f"{name} (tcp 127.0.0.1:{port}) from default"
    expected = [f"DOWN: {target_words}", f"RECOVERED: {target_words} after {span(duration)}"]

    # Email: one message each, the subject naming the service, the body the failure and the outage's length.
    assert subjects(inbox) == expected
    assert "Failure: refused" in plain_text(inbox.messages[0])
    assert f"Outage lasted: {span(duration)}" in plain_text(inbox.messages[1])
    assert all(message["To"] == RECIPIENT for message in inbox.messages)

    # Apprise's json:// target: the same words as a JSON title and body.
    said = [json.loads(request.body) for request in chat.received]
    assert [item["title"] for item in said] == expected
    assert "Failure: refused" in said[0]["message"] and f"Outage lasted: {span(duration)}" in said[1]["message"]

    # And the database agrees: each notification sent once, at the first attempt.
    assert notifications(stack) == [
        (channel, kind, "sent", 1) for channel in ("chat", "hook", "mail") for kind in ("down", "up")
    ]


# 2. Nothing lost: the webhook receiver is down when the outage starts -------------------------


def test_a_receiver_down_at_the_outage_still_gets_one_down_then_one_recovered(stack):
    """The receiver's port refuses the DOWN; the service recovers while the DOWN waits for its retry, RETRY_BASE
    (30 s) later; then the receiver is back on its port. Refused-then-back is the real failure, and the
    retry's 30 s keeps the test near a minute, so no 503 stand-in is needed."""
    hook_port = free_port()  # nothing listens here yet: connections are refused
    with TcpServers(1) as target, celery_processes() as workers:
        port = target.ports[0]
        service_id = create(
            stack, tcp_service(f"ledger-{port}", port), [webhook(f"http://127.0.0.1:{hook_port}/hook", group_window=0)]
        )
        for index in range(2):  # two workers, each with beat: two notifiers
            workers.append(CeleryProcess.worker(stack, f"w{index}", queues=QUEUES, concurrency=1, beat=True))
        begin = now()
        wait_until(lambda: has_status(stack, service_id, "up", begin), timeout=ARRIVAL_TIMEOUT, what="a first up")

        target.stop(port)
        wait_until(
            lambda: query(stack, "SELECT ok, error FROM monitor_deliveryattempt"),
            timeout=ARRIVAL_TIMEOUT,
            what="the DOWN's first, refused, attempt",
        )
        target.start(port)
        # The recovery is decided and its notification waits behind the DOWN's retry.
        wait_until(
            lambda: query(
                stack,
                "SELECT 1 FROM monitor_notification n JOIN monitor_alert a ON a.id = n.alert_id WHERE a.kind = 'up'",
            ),
            timeout=ARRIVAL_TIMEOUT,
            what="the RECOVERED alert",
        )
        with Hook(port=hook_port) as hook:
            wait_until(lambda: len(hook.alerts()) >= 2, timeout=60, what="the DOWN retried and the RECOVERED sent")
            time.sleep(2 * NOTIFY_PERIOD)  # and nothing sent twice after

    attempts = query(
        stack,
        "SELECT a.kind, d.ok, d.error FROM monitor_deliveryattempt d JOIN monitor_notification n "
        "ON n.id = d.notification_id JOIN monitor_alert a ON a.id = n.alert_id ORDER BY d.at, d.id",
    )
    error = f"the connection to http://127.0.0.1:{hook_port}/*** was refused"  # the URL masked, as always
    # Refused once, sent at the retry; the RECOVERED, made meanwhile, waited for it and went once, after.
    assert attempts == [("down", False, error), ("down", True, ""), ("up", True, "")]
    assert hook.kinds() == ["down", "up"]
    assert len(hook.requests) == 2 and all(hook.verified)  # in that order, each in its own delivery
    assert notifications(stack) == [("hook", "down", "sent", 2), ("hook", "up", "sent", 1)]
