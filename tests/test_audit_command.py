"""`manage.py audit`, over stored rows the daemon's writer recorded from real probes of real servers.

`probed(...)` and `mail_service()` are shared with the dashboard's and /metrics' exposure tests: aiosmtpd offering
AUTH before any TLS, probed by the engine, its result recorded through `monitor.daemon.recording`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json

import pytest
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP, AuthResult
from django.core.management import call_command

from monitor.daemon.recording import Outcome, pause, record
from monitor.models import Service
from monitor.probes import Failure, Phases, Result, Status, Target, parse_options, run_probe
from tests.peers.dovecot import running_dovecot

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

STEP = dt.timedelta(seconds=60)


def make(name: str, protocol: str, port: int | None = 1, tls_mode: str = "none", **fields) -> Service:
    return Service.objects.create(
        name=name, host="127.0.0.1", port=port, protocol=protocol, tls_mode=tls_mode, **fields
    )


def recorded(service: Service, *results: Result, location: str = "default") -> None:
    """Record `results` as the service's consecutive slots up to now, through the daemon's writer."""
    now = dt.datetime.now(dt.UTC)
    first = now - len(results) * STEP
    record([Outcome(service.id, location, first + i * STEP, first + i * STEP, r) for i, r in enumerate(results)])


def probed(service: Service, location: str = "default") -> Result:
    """Probe `service` once with the engine, record the result and return it."""
    options = parse_options(service.protocol, service.options)
    target = Target(service.host, service.port, service.tls_mode)
    result = asyncio.run(run_probe(service.protocol, target, options, timeout=3.0))
    recorded(service, result, location=location)
    return result


@contextlib.asynccontextmanager
async def smtp_with_plaintext_auth():
    """Run aiosmtpd offering AUTH without TLS (auth_require_tls=False), as a careless submission server does."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            Sink(),
            hostname="mail.test",
            authenticator=lambda *args: AuthResult(success=False),
            auth_require_tls=False,
            loop=loop,
        ),
        "127.0.0.1",
        0,
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def mail_service(name: str = "mail", locations: str = "") -> Service:
    """Return an SMTP service whose real probe heard "220 mail.test Python SMTP 1.4.x" and AUTH before TLS."""
    service = make(name, "smtp", locations=locations)

    async def probe_all() -> list[Result]:
        async with smtp_with_plaintext_auth() as port:
            service.port = port
            options = parse_options("smtp", {})
            target = Target(service.host, port, "none")
            return [await run_probe("smtp", target, options, timeout=3.0) for _ in service.location_list]

    results = asyncio.run(probe_all())
    service.save(update_fields=["port"])
    for location, result in zip(service.location_list, results, strict=True):
        assert result.ok, result.reason
        recorded(service, result, location=location)
    return service


def web_result(server: str, powered_by: str | None = None) -> Result:
    """Return an HTTP probe's result with the headers the HTTP probe records as details."""
    details = {"status_code": 200, "server_header": server} | ({"powered_by": powered_by} if powered_by else {})
    return Result(Status.UP, None, "HTTP 200", Phases(connect=0.001, total=0.01), details=details)


MISSED = Result(Status.UNKNOWN, Failure.MISSED, "no worker is serving location 'default'", Phases())
REFUSED = Result(Status.DOWN, Failure.REFUSED, "connection refused", Phases(connect=0.001, total=0.001))


def audit(*args: str) -> tuple[str, int]:
    out = io.StringIO()
    try:
        call_command("audit", *args, stdout=out)
    except SystemExit as exit:
        return out.getvalue(), int(exit.code)
    return out.getvalue(), 0


def line_of(output: str, name: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(f"{name} ")]
    return line


@pytest.fixture
def fleet() -> dict[str, Service]:
    """A mail server revealing its version and offering AUTH in clear, a web server naming itself only, an idle one."""
    web = make("web", "http", 443, "implicit")
    recorded(web, web_result("nginx"))
    return {"mail": mail_service(), "web": web, "idle": make("idle", "tcp", 7)}


def test_it_lists_every_service_with_what_it_reveals_and_its_flags(fleet):
    output, status = audit()
    mail = line_of(output, "mail")
    assert "Python SMTP 1.4." in mail and "VERSION PLAINTEXT-LOGIN (AUTH LOGIN PLAIN is offered without TLS)" in mail
    assert line_of(output, "web").split() == ["web", "http", "127.0.0.1:443", "nginx", "-", "-"]
    assert "not heard yet" in line_of(output, "idle")
    assert output.rstrip().endswith("1 of 3 listed services exposed.")
    assert status == 0  # a report, not a check: exposure alone does not fail it


def test_json_lists_each_location_with_software_evidence_and_why(fleet):
    output, _ = audit("--json")
    services = {entry["service"]: entry for entry in json.loads(output)}
    assert set(services) == {"mail", "web", "idle"}
    [where] = services["mail"]["locations"]
    [software] = where["software"]
    assert (software["name"], software["source"]) == ("Python SMTP", "banner")
    assert software["version"].startswith("1.4.") and software["evidence"].startswith("220 mail.test Python SMTP 1.4.")
    assert (where["plaintext_login"], where["plaintext_why"]) == (True, "AUTH LOGIN PLAIN is offered without TLS")
    assert (services["web"]["reveals_software"], services["web"]["reveals_version"]) == (True, False)
    assert (services["idle"]["heard"], services["idle"]["locations"]) == (False, [])


def test_only_exposed_leaves_out_services_revealing_nothing_worth_fixing(fleet):
    output, _ = audit("--only-exposed", "--json")
    assert [entry["service"] for entry in json.loads(output)] == ["mail"]


def test_fail_on_exposure_exits_1_when_a_service_is_exposed(fleet):
    assert audit("--fail-on-exposure")[1] == 1


def test_fail_on_exposure_exits_0_when_nothing_is_exposed(db):
    recorded(make("web", "http", 443, "implicit"), web_result("Apache"))
    output, status = audit("--fail-on-exposure", "--only-exposed")
    assert (output.strip(), status) == ("No services exposed.", 0)


def test_a_missed_slot_after_the_probe_keeps_what_the_probe_heard(db):
    mail = mail_service()
    recorded(mail, MISSED)  # the state's last result now has no banner
    [entry] = json.loads(audit("--json")[0])
    assert entry["reveals_version"] is True


def test_a_refused_connection_reveals_nothing(db):
    recorded(make("shell", "tcp", 23), Result(Status.UP, None, "banner", Phases(), banner="Debian GNU/Linux 12"))
    recorded(Service.objects.get(name="shell"), REFUSED)
    [entry] = json.loads(audit("--json")[0])
    assert (entry["heard"], entry["reveals_version"]) == (False, False)


def test_a_header_revealing_versions_lists_each_product(db):
    recorded(make("web", "http", 443, "implicit"), web_result("nginx/1.22.1", "PHP/8.2.7"))
    output, _ = audit()
    assert "nginx 1.22.1, PHP 8.2.7" in line_of(output, "web")


def test_every_location_is_assessed_and_a_state_never_measured_is_not(db):
    mail_service("mail", locations="eu,us")
    recorded(make("other", "smtp", 25), MISSED)
    services = {entry["service"]: entry for entry in json.loads(audit("--json")[0])}
    assert [where["location"] for where in services["mail"]["locations"]] == ["eu", "us"]
    assert services["other"]["locations"] == []


def test_a_paused_location_is_left_out(db):
    mail = mail_service("mail", locations="eu,us")
    pause({(mail.id, "us")}, "monitoring stopped: location removed")
    [entry] = json.loads(audit("--json")[0])
    assert [where["location"] for where in entry["locations"]] == ["eu"]


@pytest.mark.peers
def test_a_real_dovecot_without_tls_names_itself_and_offers_plaintext_login(db):
    with running_dovecot(None) as dovecot:
        pop3 = make("pop", "pop3", dovecot.pop3)
        result = probed(pop3)
    assert result.ok, result.reason
    [entry] = json.loads(audit("--json")[0])
    [where] = entry["locations"]
    assert [item["name"] for item in where["software"]] == ["Dovecot"]
    assert (entry["reveals_version"], entry["plaintext_login"]) == (False, True)
