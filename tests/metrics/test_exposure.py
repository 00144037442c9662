"""/metrics' version-exposure families, scraped through Django's test client and read by prometheus_client's parser."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon.recording import pause
from monitor.exposure_report import findings
from monitor.metrics.collector import SERVICE_LABELS, collect
from monitor.metrics.exposition import LABELS
from monitor.models import Service, ServiceState, StateExposition
from monitor.probes import Phases, Result, Status
from tests.conftest import need
from tests.metrics.conftest import TOKEN
from tests.test_audit_command import MISSED, REFUSED, mail_service, make, recorded, web_result

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

VERSION, PLAINTEXT = "portwatch_exposure_version_revealed", "portwatch_exposure_plaintext_login"


def scrape() -> dict[str, list]:
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def by_pair(samples) -> dict[tuple, float]:
    return {tuple(sample.labels[name] for name in SERVICE_LABELS): sample.value for sample in samples}


def test_each_measured_pair_says_whether_it_reveals_a_version_and_offers_plaintext_login():
    mail = mail_service("mail", locations="eu,us")
    recorded(make("web", "http", 443, "implicit"), web_result("nginx"))
    families = scrape()
    version, plaintext = by_pair(families[VERSION]), by_pair(families[PLAINTEXT])
    port = str(mail.port)
    eu, us = (("mail", "smtp", "127.0.0.1", port, where, f"127.0.0.1:{port}") for where in ("eu", "us"))
    web = ("web", "http", "127.0.0.1", "443", "default", "127.0.0.1:443")
    assert version == {eu: 1.0, us: 1.0, web: 0.0}
    assert plaintext == {eu: 1.0, us: 1.0, web: 0.0}


def test_the_labels_are_those_of_the_pairs_other_series():
    mail_service('mx "1"\\')  # a name to escape
    families = scrape()
    info = set(by_pair(families["portwatch_service_info"]))
    assert set(by_pair(families[VERSION])) == info == set(by_pair(families[PLAINTEXT]))


def test_pairs_never_measured_or_paused_have_no_sample_and_a_refused_one_reveals_nothing():
    recorded(make("idle", "smtp", 25), MISSED)
    mail = mail_service("mail", locations="eu,us")
    pause({(mail.id, "us")}, "monitoring stopped")
    recorded(make("shell", "tcp", 23), REFUSED)
    version = by_pair(scrape()[VERSION])
    found = {(pair[0], pair[4]): value for pair, value in version.items()}  # (service, location)
    assert found == {("mail", "eu"): 1.0, ("shell", "default"): 0.0}


def test_both_families_are_declared_without_any_service():
    body = b"".join(collect()).decode()
    assert f"# TYPE {VERSION} gauge" in body and f"# TYPE {PLAINTEXT} gauge" in body
    assert f"\n{VERSION}{{" not in body


def test_promtool_accepts_the_families():
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool is not installed (Debian's prometheus package has it)")
    mail_service('odd "name"\\', locations="eu")
    body = b"".join(collect()).decode()
    assert f"\n{VERSION}{{" in body
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


# Assessed when the state is written, stored with its series: a scrape only joins text ----------------------------


def greeted(banner: str) -> Result:
    """Return a probe's result that heard `banner` and recorded no details, as a plain greeting probe does."""
    return Result(Status.UP, None, "ok", Phases(connect=0.001, total=0.002), banner=banner)


def test_the_writer_stores_each_pairs_verdict_with_its_series():
    pop = make("pop", "pop3", 110)
    recorded(pop, greeted("+OK Dovecot 2.3.19 ready."))
    text = bytes(StateExposition.objects.get(state__service=pop).text).decode()
    assert f"{VERSION}{{{LABELS}}} 1\n" in text and f"{PLAINTEXT}{{{LABELS}}} 1\n" in text


def test_a_scrape_answers_the_stored_verdict_without_assessing_again():
    pop = make("pop", "pop3", 110)
    recorded(pop, greeted("+OK Dovecot 2.3.19 ready."))
    stored = StateExposition.objects.get(state__service=pop)
    text = bytes(stored.text).replace(f"{VERSION}{{{LABELS}}} 1".encode(), f"{VERSION}{{{LABELS}}} 0".encode())
    StateExposition.objects.filter(pk=stored.pk).update(text=text)
    assert by_pair(scrape()[VERSION]) == {("pop", "pop3", "127.0.0.1", "110", "default", "127.0.0.1:110"): 0.0}


def test_a_missed_slot_keeps_the_banner_its_last_measured_probe_heard():
    pop = make("pop", "pop3", 110)
    recorded(pop, greeted("+OK Dovecot 2.3.19 ready."))
    recorded(pop, MISSED)  # a batch of its own, as the sweeper records it: the banner is read back
    assert bytes(StateExposition.objects.get(state__service=pop).text).count(f"{VERSION}{{".encode()) == 1
    assert list(by_pair(scrape()[VERSION]).values()) == [1.0]


def test_a_changed_tls_mode_is_assessed_at_once_as_the_service_page_does():
    pop = make("pop", "pop3", 110)
    recorded(pop, greeted("+OK Dovecot ready."))
    assert list(by_pair(scrape()[PLAINTEXT]).values()) == [1.0]  # POP3 without TLS
    Service.objects.filter(pk=pop.pk).update(tls_mode="implicit", port=995)
    assert list(by_pair(scrape()[PLAINTEXT]).values()) == [0.0]
    assert not findings([pop.pk])[pop.pk, "default"].plaintext_login  # what the service page says


def test_the_stored_verdicts_are_those_a_live_assessment_gives():
    mail_service("mail", locations="eu,us")
    recorded(make("web", "http", 443, "implicit"), web_result("Apache/2.4.62 (Debian)", powered_by="PHP/8.2.7"))
    recorded(make("pop", "pop3", 110), greeted("+OK Dovecot ready."))
    recorded(make("shell", "tcp", 23), REFUSED)
    stored = scrape()
    StateExposition.objects.all().delete()  # every pair rendered live from its state
    live = scrape()
    for name in (VERSION, PLAINTEXT):
        assert by_pair(stored[name]) == by_pair(live[name])
    names = dict(Service.objects.values_list("pk", "name"))
    page = {(names[sid], where): finding for (sid, where), finding in findings().items()}  # the service page's
    for name, verdict in ((VERSION, "reveals_version"), (PLAINTEXT, "plaintext_login")):
        scraped = {(pair[0], pair[4]): value for pair, value in by_pair(stored[name]).items()}
        assert scraped == {pair: int(getattr(finding, verdict)) for pair, finding in page.items()}
    states = ServiceState.objects.filter(last_checked_at__isnull=False)
    kept = {"reveals_version": {}, "offers_plaintext_login": {}}  # the flags the overview counts
    for state in states:
        for flag in kept:
            kept[flag][names[state.service_id], state.location] = int(getattr(state, flag))
    for name, flag in ((VERSION, "reveals_version"), (PLAINTEXT, "offers_plaintext_login")):
        assert {(pair[0], pair[4]): value for pair, value in by_pair(stored[name]).items()} == kept[flag]
    assert {pair[0] for pair, value in by_pair(stored[VERSION]).items() if value} == {"mail", "web"}
    assert {pair[0] for pair, value in by_pair(stored[PLAINTEXT]).items() if value} == {"mail", "pop"}


def test_a_missed_slot_keeps_the_plaintext_login_of_a_server_that_sent_no_banner():
    shell = make("shell", "telnet", 23)
    recorded(shell, greeted(""))  # a Telnet server answering with option negotiation only: nothing to quote
    recorded(shell, MISSED)  # the state's last result is now of status unknown
    state = shell.states.get()
    page = findings([shell.pk])[shell.pk, "default"]
    assert (state.offers_plaintext_login, page.plaintext_login) == (True, True)
    assert list(by_pair(scrape()[PLAINTEXT]).values()) == [1.0]
    StateExposition.objects.all().delete()  # rendered live from the state: the same
    assert list(by_pair(scrape()[PLAINTEXT]).values()) == [1.0]
