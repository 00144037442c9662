"""What is told, held back and never held back: grouping, quorum across locations, dependencies, maintenance,
flapping, reminders, escalation, acknowledgement and schedules, through the daemon's real recording path to
real webhook receivers."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from monitor.alerting import acknowledgement, flapping, notifier
from monitor.daemon.recording import Outcome, record
from monitor.models import Alert, Channel, MaintenanceWindow, Notification, Problem, Service
from monitor.probes import Failure, Phases, Result, Status

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SECOND = dt.timedelta(seconds=1)
STEP = dt.timedelta(seconds=60)
T0 = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)  # a Friday


def make_service(name: str, **fields) -> Service:
    fields = {"host": "127.0.0.1", "port": 25, "protocol": "tcp", "failure_threshold": 1, **fields}
    return Service.objects.create(name=name, **fields)


def make_channel(url: str, name: str = "hook", **fields) -> Channel:
    return Channel.objects.create(name=name, url=url, timeout=2.0, **({"group_window": 0} | fields))


def probe(service: Service, moment: dt.datetime, status: Status, location: str = "default") -> None:
    failure = None if status is Status.UP else Failure.REFUSED
    reason = "ok" if failure is None else "connection refused"
    result = Result(status, failure, reason, Phases(total=0.01))
    assert record([Outcome(service.id, location, moment, moment, result)]) == 1


def posts(server) -> list[dict]:
    return [json.loads(got.body) for got in server.received]


def told(server) -> list[tuple[str, str]]:
    """Return (kind, service name) of every alert the receiver got, in order."""
    return [(alert["kind"], alert["service"]["name"]) for post in posts(server) for alert in post["alerts"]]


# --- Grouping ---------------------------------------------------------------------------------------


def test_fifty_services_on_one_host_down_together_make_one_message_per_channel_and_one_recovery(receiver):
    hook, other = receiver(), receiver()
    make_channel(hook.url(), group_window=30)
    make_channel(other.url("/other"), name="other", group_window=30)
    services = [make_service(f"s{index:02}") for index in range(50)]
    for index, service in enumerate(services):
        probe(service, T0 + index * 0.1 * SECOND, Status.DOWN)
    notifier.run(T0 + 10 * SECOND)
    assert hook.received == [] and other.received == []  # waiting for company
    notifier.run(T0 + 29 * SECOND)
    assert hook.received == []  # the window counts from the first change, at T0, not from when it was noticed
    notifier.run(T0 + 30 * SECOND)
    for server in (hook, other):
        assert len(server.received) == 1
        assert sorted(told(server)) == [("down", service.name) for service in services]
    for service in services:
        probe(service, T0 + STEP, Status.UP)
    notifier.run(T0 + STEP + 5 * SECOND)
    notifier.run(T0 + STEP + 35 * SECOND)
    for server in (hook, other):
        assert len(server.received) == 2
        assert sorted(told(server)[50:]) == [("up", service.name) for service in services]


def test_an_alert_waits_at_most_its_window_and_a_later_one_makes_its_own_message(receiver):
    hook = receiver()
    make_channel(hook.url(), group_window=30)
    first, second = make_service("first"), make_service("second")
    probe(first, T0, Status.DOWN)
    notifier.run(T0 + SECOND)
    probe(second, T0 + 20 * SECOND, Status.DOWN)
    notifier.run(T0 + 21 * SECOND)
    notifier.run(T0 + 31 * SECOND)  # the first is due: the second, still in its window, goes with it
    assert [len(post["alerts"]) for post in posts(hook)] == [2]
    probe(first, T0 + 40 * SECOND, Status.UP)
    notifier.run(T0 + 41 * SECOND)
    assert len(hook.received) == 1
    notifier.run(T0 + 71 * SECOND)
    assert told(hook)[-1] == ("up", "first")


def test_an_email_channel_gets_one_message_listing_every_service(mail_server):
    _, recorder = mail_server()
    Channel.objects.create(name="mail", kind="email", url="ops@example.com", timeout=2.0, group_window=30)
    for index in range(5):
        probe(make_service(f"mx{index}"), T0, Status.DOWN)
    notifier.run(T0 + SECOND)
    notifier.run(T0 + 31 * SECOND)
    assert len(recorder.messages) == 1
    mail = recorder.messages[0]
    assert mail["Subject"] == "5 alerts: 5 down"
    body = mail.get_body(("plain",)).get_content()
    assert all(f"mx{index} is down." in body for index in range(5))


# --- Quorum across locations ------------------------------------------------------------------------


def test_by_default_a_service_is_down_only_when_every_location_sees_it_and_says_which(receiver):
    hook = receiver()
    make_channel(hook.url())
    service = make_service("web", locations="eu,us")
    probe(service, T0, Status.DOWN, "eu")
    notifier.run(T0 + SECOND)
    assert hook.received == []
    problem = Problem.objects.get(service=service)
    assert (problem.started_at, problem.locations) == (None, ["eu"])  # forming
    probe(service, T0 + 10 * SECOND, Status.DOWN, "us")
    notifier.run(T0 + 11 * SECOND)
    (down,) = [alert for post in posts(hook) for alert in post["alerts"]]
    assert (down["kind"], down["locations"]) == ("down", ["eu", "us"])
    probe(service, T0 + STEP, Status.UP, "eu")  # one location recovered: the quorum is broken
    notifier.run(T0 + STEP + SECOND)
    assert told(hook) == [("down", "web"), ("up", "web")]
    assert Problem.objects.get(service=service).ended_at == T0 + STEP
    assert Alert.objects.filter(service=service).count() == 2  # one problem, not one per location


def test_a_location_that_recovers_before_the_quorum_tells_nobody(receiver):
    hook = receiver()
    make_channel(hook.url())
    service = make_service("web", locations="eu,us,asia", alert_quorum=2)
    probe(service, T0, Status.DOWN, "eu")
    probe(service, T0 + 10 * SECOND, Status.UP, "eu")
    probe(service, T0 + 20 * SECOND, Status.DOWN, "us")
    notifier.run(T0 + 30 * SECOND)
    assert hook.received == []
    probe(service, T0 + 40 * SECOND, Status.DOWN, "asia")  # two of three
    notifier.run(T0 + 41 * SECOND)
    assert told(hook) == [("down", "web")]
    assert posts(hook)[0]["alerts"][0]["locations"] == ["asia", "us"]


# --- Dependencies -----------------------------------------------------------------------------------


def test_children_down_with_their_parent_are_held_and_listed_in_its_messages(receiver):
    hook = receiver()
    make_channel(hook.url(), group_window=30)
    gateway = make_service("gateway", protocol="tcp")
    children = [make_service(name) for name in ("imap", "pop3", "smtp")]
    for child in children:
        child.depends_on.add(gateway)
    probe(children[0], T0, Status.DOWN)  # a child is seen first: its alert waits in its window
    notifier.run(T0 + SECOND)
    probe(gateway, T0 + 5 * SECOND, Status.DOWN)
    probe(children[1], T0 + 6 * SECOND, Status.DOWN)
    notifier.run(T0 + 7 * SECOND)
    notifier.run(T0 + 40 * SECOND)  # the parent's window is over: its message goes
    probe(children[2], T0 + 50 * SECOND, Status.DOWN)  # after the parent's message: held all the same
    notifier.run(T0 + 51 * SECOND)
    assert told(hook) == [("down", "gateway")]
    (down,) = posts(hook)[0]["alerts"]
    assert [child["name"] for child in down["held"]] == ["imap", "pop3"]
    children[1].refresh_from_db()
    probe(children[1], T0 + 55 * SECOND, Status.UP)  # recovers while held: nobody hears of it
    probe(gateway, T0 + STEP, Status.UP)
    notifier.run(T0 + STEP + SECOND)
    notifier.run(T0 + STEP + 31 * SECOND)
    kinds = told(hook)
    assert kinds[:2] == [("down", "gateway"), ("up", "gateway")]
    up = posts(hook)[1]["alerts"][0]
    assert [child["name"] for child in up["held"]] == ["imap", "smtp"]
    # The parent is up; children still down are told now, as still down.
    assert sorted(kinds[2:]) == [("down", "imap"), ("down", "smtp")]
    assert len(hook.received) == 2  # the recovery and the released children went together
    for released in posts(hook)[-1]["alerts"][1:]:
        assert released["detail"]["released"] == (
            f"held until now ({released['service']['name']} depends on gateway, which is down); still down"
        )
    assert not any(name == "pop3" for _, name in kinds)


# --- Maintenance ------------------------------------------------------------------------------------


def test_maintenance_holds_new_alerts_tells_what_is_still_down_after_and_never_holds_a_resolution(receiver):
    hook = receiver()
    make_channel(hook.url())
    held, told_before, quiet = make_service("db"), make_service("web"), make_service("cache")
    probe(told_before, T0 - STEP, Status.DOWN)  # told before the window opens
    notifier.run(T0 - STEP + SECOND)
    window = MaintenanceWindow.objects.create(name="upgrade", starts_at=T0, ends_at=T0 + 10 * STEP, tags="")
    window.services.add(held, told_before, quiet)
    probe(held, T0 + STEP, Status.DOWN)
    probe(quiet, T0 + STEP, Status.DOWN)
    probe(told_before, T0 + 2 * STEP, Status.UP)  # a resolution inside the window: sent
    notifier.run(T0 + 2 * STEP + SECOND)
    assert told(hook) == [("down", "web"), ("up", "web")]
    assert Problem.objects.get(service=held).held.startswith("held: db is in maintenance 'upgrade'")
    probe(quiet, T0 + 5 * STEP, Status.UP)  # recovered inside the window: nobody hears of it
    notifier.run(T0 + 9 * STEP)
    assert len(told(hook)) == 2
    notifier.run(T0 + 10 * STEP + SECOND)  # the window is over: db is still down
    assert told(hook)[2:] == [("down", "db")]
    released = posts(hook)[-1]["alerts"][0]
    assert "maintenance 'upgrade'" in released["detail"]["released"]
    probe(held, T0 + 11 * STEP, Status.UP)
    notifier.run(T0 + 11 * STEP + SECOND)
    assert told(hook)[3:] == [("up", "db")]


# --- Flapping ---------------------------------------------------------------------------------------


def test_a_flapping_service_gets_one_flapping_notice_its_alerts_held_then_one_stable(receiver):
    hook = receiver()
    make_channel(hook.url())
    service = make_service("flaky")
    moment = T0
    for index in range(12):
        probe(service, moment, Status.DOWN if index % 2 == 0 else Status.UP)
        notifier.run(moment + SECOND)
        moment += STEP
    kinds = [kind for kind, _ in told(hook)]
    assert kinds.count("flapping") == 1
    flapping_at = kinds.index("flapping")
    after = kinds[flapping_at + 1 :]
    assert after in ([], ["up"]), after  # only the resolution of an outage already told
    assert kinds[:flapping_at] and set(kinds[:flapping_at]) <= {"down", "up"}
    for _ in range(22):  # stays up: the share of changes falls below the low threshold
        probe(service, moment, Status.UP)
        notifier.run(moment + SECOND)
        moment += STEP
    kinds = [kind for kind, _ in told(hook)]
    assert kinds.count("stable") == 1 and kinds[-1] == "stable"
    assert Problem.objects.filter(service=service, ended_at=None).count() == 0


def test_the_flapping_share_is_icingas_weighted_measure():
    assert flapping.flap_share(["up"] * 21) == 0
    assert flapping.flap_share(["up", "down"] * 10 + ["up"]) == pytest.approx(100.0)
    one_new = flapping.flap_share(["up"] * 20 + ["down"])
    one_old = flapping.flap_share(["down"] + ["up"] * 20)
    assert one_new == pytest.approx(6.0) and one_old == pytest.approx(4.0)


# --- Reminders, escalation, acknowledgement ---------------------------------------------------------


def test_reminders_repeat_until_the_outage_is_acknowledged(receiver):
    hook = receiver()
    make_channel(hook.url(), reminder_minutes=10)
    service = make_service("mx")
    probe(service, T0, Status.DOWN)
    notifier.run(T0 + SECOND)
    notifier.run(T0 + 9 * STEP)
    assert told(hook) == [("down", "mx")]
    notifier.run(T0 + 10 * STEP + SECOND)
    notifier.run(T0 + 10 * STEP + 2 * SECOND)  # once per interval, not once per run
    assert told(hook) == [("down", "mx"), ("reminder", "mx")]
    problem = Problem.objects.get(service=service)
    acknowledgement.acknowledge(problem, by="alice", note="restarting postfix", now=T0 + 11 * STEP)
    notifier.run(T0 + 40 * STEP)
    assert len(told(hook)) == 2
    probe(service, T0 + 41 * STEP, Status.UP)
    notifier.run(T0 + 41 * STEP + SECOND)
    assert told(hook)[-1] == ("up", "mx")


def test_an_unacknowledged_outage_escalates_down_the_chain_and_its_recovery_reaches_everyone(receiver):
    team, oncall, manager = receiver(), receiver(), receiver()
    boss = make_channel(manager.url(), name="manager")
    pager = make_channel(oncall.url(), name="pager", escalate_to=boss, escalate_after_minutes=10)
    make_channel(team.url(), name="team", escalate_to=pager, escalate_after_minutes=5, tags="mail")
    boss.tags = pager.tags = "escalation-only"
    boss.save(), pager.save()
    service = make_service("mx", tags="mail")
    probe(service, T0, Status.DOWN)
    notifier.run(T0 + SECOND)
    assert (len(team.received), len(oncall.received)) == (1, 0)
    notifier.run(T0 + 5 * STEP + 2 * SECOND)
    assert len(oncall.received) == 1
    escalated = posts(oncall)[0]["alerts"][0]
    assert (escalated["kind"], escalated["escalated_from"]) == ("down", "team")
    notifier.run(T0 + 15 * STEP + 3 * SECOND)
    assert len(manager.received) == 1
    probe(service, T0 + 20 * STEP, Status.UP)
    notifier.run(T0 + 20 * STEP + SECOND)
    for server in (team, oncall, manager):
        assert told(server)[-1] == ("up", "mx")


def test_an_acknowledged_outage_does_not_escalate(receiver):
    team, oncall = receiver(), receiver()
    pager = make_channel(oncall.url(), name="pager", tags="escalation-only")
    make_channel(team.url(), name="team", escalate_to=pager, escalate_after_minutes=5)
    service = make_service("mx")
    probe(service, T0, Status.DOWN)
    notifier.run(T0 + SECOND)
    problem = Problem.objects.get(service=service)
    acknowledgement.acknowledge(problem, by="bob", note="on it", now=T0 + STEP)
    notifier.run(T0 + 30 * STEP)
    assert oncall.received == []


def test_an_acknowledgement_needs_a_note_and_a_forged_link_is_refused():
    service = make_service("mx")
    problem = Problem.objects.create(kind="down", service=service, opened_at=T0, started_at=T0)
    with pytest.raises(acknowledgement.AcknowledgeError, match="needs a note"):
        acknowledgement.acknowledge(problem, by="x", note="   ", now=T0)
    token = acknowledgement.token(problem)
    assert acknowledgement.problem_for(token) == problem
    with pytest.raises(acknowledgement.AcknowledgeError, match="not valid"):
        acknowledgement.problem_for(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    problem.ended_at = T0 + STEP
    problem.save()
    with pytest.raises(acknowledgement.AcknowledgeError, match="already over"):
        acknowledgement.acknowledge(problem, by="x", note="late", now=T0 + 2 * STEP)


# --- Schedules --------------------------------------------------------------------------------------


def test_a_schedule_sends_the_night_to_on_call_and_the_day_to_the_team(receiver):
    day, night = receiver(), receiver()
    make_channel(
        day.url(), name="day", schedule_days="mon,tue,wed,thu,fri", schedule_from=dt.time(8), schedule_until=dt.time(20)
    )
    make_channel(night.url(), name="night", schedule_from=dt.time(20), schedule_until=dt.time(8))
    office, overnight = make_service("office"), make_service("overnight")
    probe(office, T0, Status.DOWN)  # Friday 10:00 UTC
    notifier.run(T0 + SECOND)
    late = T0 + dt.timedelta(hours=13)  # Friday 23:00
    probe(overnight, late, Status.DOWN)
    notifier.run(late + SECOND)
    assert told(day) == [("down", "office")] and told(night) == [("down", "overnight")]
    probe(overnight, late + dt.timedelta(hours=10), Status.UP)  # Saturday 09:00: the night shift still hears
    notifier.run(late + dt.timedelta(hours=10, seconds=1))
    assert told(night)[-1] == ("up", "overnight") and len(told(day)) == 1


def test_a_schedule_in_a_time_zone_and_across_midnight():
    channel = Channel(schedule_from=dt.time(22), schedule_until=dt.time(6), schedule_timezone="Europe/Berlin")
    channel.schedule_days = "sat"
    assert channel.on_duty(dt.datetime(2026, 11, 28, 22, 30, tzinfo=dt.UTC))  # Sat 23:30 in Berlin
    assert channel.on_duty(dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC))  # Sun 04:00, the Saturday night shift
    assert not channel.on_duty(dt.datetime(2026, 11, 29, 22, 30, tzinfo=dt.UTC))  # Sun 23:30
    assert not channel.on_duty(dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC))


def test_a_channel_attached_to_a_service_gets_only_it(receiver):
    hook = receiver()
    channel = make_channel(hook.url())
    mine, other = make_service("mine"), make_service("other")
    channel.services.add(mine)
    probe(mine, T0, Status.DOWN)
    probe(other, T0, Status.DOWN)
    notifier.run(T0 + SECOND)
    assert told(hook) == [("down", "mine")]
    assert Notification.objects.count() == 1


def test_the_signed_link_in_the_message_acknowledges_and_stops_escalation_and_reminders(receiver, settings):
    settings.PORTWATCH_BASE_URL = "https://portwatch.example.com"
    team, oncall = receiver(), receiver()
    pager = make_channel(oncall.url(), name="pager", tags="escalation-only")
    make_channel(team.url(), name="team", escalate_to=pager, escalate_after_minutes=5, reminder_minutes=10)
    service = make_service("mx")
    probe(service, T0, Status.DOWN)
    notifier.run(T0 + SECOND)
    link = posts(team)[0]["alerts"][0]["acknowledge_url"]
    assert link.startswith("https://portwatch.example.com/ack/")
    path = link.removeprefix(settings.PORTWATCH_BASE_URL)
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(path)
    assert page.status_code == 200 and b"mx" in page.content
    answer = browser.post(path, {"note": "failing over to mx2", "csrfmiddlewaretoken": page.context["csrf_token"]})
    assert answer.status_code == 200
    problem = Problem.objects.get(service=service)
    assert (problem.acknowledged_by, problem.acknowledgement) == ("link", "failing over to mx2")
    notifier.run(T0 + 30 * STEP)
    assert oncall.received == [] and told(team) == [("down", "mx")]  # no escalation, no reminder
    probe(service, T0 + 31 * STEP, Status.UP)
    notifier.run(T0 + 31 * STEP + SECOND)
    assert told(team)[-1] == ("up", "mx") and Problem.objects.get(service=service).ended_at is not None


@pytest.mark.parametrize("service_name", [None, "mx"])
def test_the_database_keeps_one_open_problem_per_kind_and_service_or_key(service_name):
    service = make_service(service_name) if service_name else None
    fields = {"kind": "monitor" if service is None else "down", "service": service, "key": "", "opened_at": T0}
    if service is None:
        fields["key"] = "dispatcher"
    Problem.objects.create(**fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Problem.objects.create(**fields)
    Problem.objects.filter(**fields).update(ended_at=T0 + STEP)
    Problem.objects.create(**fields)  # once the first has ended, a new one may open
