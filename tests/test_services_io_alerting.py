"""The services file's alerting parts: channels (secrets never exported), maintenance windows, dependencies.

Through the real commands against a real database; environment variables are set for real with monkeypatch.
Errors are checked by their exact text.
"""

from __future__ import annotations

import datetime as dt
import io
import textwrap
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from monitor.models import Channel, MaintenanceWindow, Service

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

PAGER_URL = "https://hooks.example.com/services/T0/B0/pager-token-0123456789"
PAGER_SECRET = "signing-secret-abcdefghijklmnop"
CET = dt.timezone(dt.timedelta(hours=1))


def run_import(tmp_path: Path, text: str, *flags: str) -> str:
    path = tmp_path / "services.yaml"
    path.write_text(textwrap.dedent(text))
    out = io.StringIO()
    call_command("import_services", str(path), *flags, stdout=out)
    return out.getvalue()


def import_error(tmp_path: Path, text: str, *flags: str) -> str:
    """Return the error lines of a failing import (without the "nothing imported" first line)."""
    with pytest.raises(CommandError) as raised:
        run_import(tmp_path, text, *flags)
    first, *rest = str(raised.value).splitlines()
    assert first.endswith("services.yaml: nothing imported.")
    return "\n".join(rest)


def export() -> str:
    out = io.StringIO()
    call_command("export_services", stdout=out)
    return out.getvalue()


def make_everything() -> None:
    """Two services, one depending on the other; two channels in an escalation chain; a weekly window."""
    db = Service.objects.create(name="db", host="127.0.0.1", port=5432, protocol="tcp")
    web = Service.objects.create(
        name="web",
        host="127.0.0.1",
        port=8080,
        protocol="http",
        alert_quorum=1,
        reminder_minutes=60,
        degraded_latency=1.5,
        degraded_checks=5,
        certificate_warn_days="30,7",
    )
    web.depends_on.set([db])
    oncall = Channel.objects.create(name="oncall", kind="email", url="ops@example.com", enabled=False)
    pager = Channel.objects.create(
        name="pager",
        url=PAGER_URL,
        secret=PAGER_SECRET,
        tags="production",
        escalate_to=oncall,
        escalate_after_minutes=30,
        schedule_days="mon,tue,wed,thu,fri",
        schedule_from=dt.time(8, 0),
        schedule_until=dt.time(17, 30),
        schedule_timezone="Europe/Berlin",
        timeout=5.0,
    )
    pager.services.set([web])
    window = MaintenanceWindow.objects.create(
        name="patch night",
        starts_at=dt.datetime(2025, 1, 4, 22, 0, tzinfo=CET),
        ends_at=dt.datetime(2025, 1, 5, 2, 0, tzinfo=CET),
        repeat="weekly",
        timezone="Europe/Berlin",
        tags="db",
        note="OS updates",
    )
    window.services.set([db])


EXPORTED = """\
# Portwatch services. Import with `manage.py import_services FILE`; values left out take their defaults.
# Secrets (a channel's url and secret, a service's login_password) are never exported: to import elsewhere,
# add `url_env: NAME` (read from the environment) or `url:`. Left out, an existing row keeps its stored ones.
services:
- name: db
  host: 127.0.0.1
  port: 5432
  protocol: tcp
- name: web
  host: 127.0.0.1
  port: 8080
  protocol: http
  depends_on: [db]
  alert_quorum: 1
  reminder_minutes: 60
  degraded_latency: 1.5
  degraded_checks: 5
  certificate_warn_days: [30, 7]
channels:
- name: oncall
  kind: email
  enabled: false
- name: pager
  kind: webhook
  tags: [production]
  services: [web]
  escalate_to: oncall
  escalate_after_minutes: 30
  schedule_days: [mon, tue, wed, thu, fri]
  schedule_from: 08:00
  schedule_until: '17:30'
  schedule_timezone: Europe/Berlin
  timeout: 5
maintenance:
- name: patch night
  services: [db]
  tags: [db]
  starts_at: '2025-01-04T22:00:00+01:00'
  ends_at: '2025-01-05T02:00:00+01:00'
  repeat: weekly
  timezone: Europe/Berlin
  note: OS updates
"""


def snapshot() -> dict[str, list]:
    """Return every row of the three tables with its references by name (secrets included, to compare)."""
    return {
        "services": [
            (s.name, s.alert_quorum, s.reminder_minutes, s.degraded_latency, s.degraded_checks,
             s.certificate_warn_days, sorted(d.name for d in s.depends_on.all()))
            for s in Service.objects.order_by("name")
        ],
        "channels": [
            (c.name, c.kind, c.url, c.secret, c.enabled, c.tags, sorted(s.name for s in c.services.all()),
             c.escalate_to and c.escalate_to.name, c.escalate_after_minutes, c.schedule_days, c.schedule_from,
             c.schedule_until, c.schedule_timezone, c.timeout, c.group_window, c.reminder_minutes)
            for c in Channel.objects.order_by("name")
        ],
        "maintenance": [
            (w.name, sorted(s.name for s in w.services.all()), w.tags, w.starts_at, w.ends_at, w.repeat,
             w.repeat_until, w.timezone, w.note, w.enabled)
            for w in MaintenanceWindow.objects.order_by("name")
        ],
    }  # fmt: skip


# Export and round trips -------------------------------------------------------------------------


def test_export_writes_channels_windows_and_alerting_fields_by_name_without_defaults():
    make_everything()
    assert export() == EXPORTED


def test_export_never_contains_a_channel_secret():
    make_everything()
    text = export()
    assert "pager-token" not in text and "hooks.example.com" not in text
    assert PAGER_SECRET not in text and "ops@example.com" not in text


def test_importing_the_export_into_the_same_database_changes_nothing_and_keeps_the_secrets(tmp_path):
    make_everything()
    before = snapshot()
    assert run_import(tmp_path, export()) == "0 created, 0 updated, 5 unchanged\n"
    assert snapshot() == before
    assert Channel.objects.get(name="pager").url == PAGER_URL


def test_an_export_without_secrets_cannot_create_channels_in_an_empty_database(tmp_path):
    make_everything()
    text = export()
    for model in (MaintenanceWindow, Channel, Service):
        model.objects.all().delete()
    assert import_error(tmp_path, text).splitlines() == [
        'channels[0] "oncall": url is required for a new channel: give url or url_env.',
        'channels[1] "pager": url is required for a new channel: give url or url_env.',
    ]
    assert not Service.objects.exists()  # all or nothing: the valid services were not written either


def test_an_export_with_url_env_added_recreates_everything_in_an_empty_database(tmp_path, monkeypatch):
    make_everything()
    before, text = snapshot(), export()
    for model in (MaintenanceWindow, Channel, Service):
        model.objects.all().delete()
    document = yaml.safe_load(text)
    document["channels"][0]["url_env"] = "ONCALL_URL"
    document["channels"][1] |= {"url_env": "PAGER_URL", "secret_env": "PAGER_SECRET"}
    monkeypatch.setenv("ONCALL_URL", "ops@example.com")
    monkeypatch.setenv("PAGER_URL", PAGER_URL)
    monkeypatch.setenv("PAGER_SECRET", PAGER_SECRET)
    output = run_import(tmp_path, yaml.safe_dump(document, sort_keys=False))
    assert output.endswith("5 created, 0 updated, 0 unchanged\n")
    assert snapshot() == before
    assert export() == EXPORTED


# Secrets on import ------------------------------------------------------------------------------


def test_url_env_reads_the_secret_from_the_environment_at_import_time(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_WEBHOOK", PAGER_URL)
    output = run_import(tmp_path, "services: []\nchannels:\n  - {name: ops, kind: webhook, url_env: OPS_WEBHOOK}\n")
    assert output == "create channel ops\n1 created, 0 updated, 0 unchanged\n"
    assert Channel.objects.get(name="ops").url == PAGER_URL


def test_a_missing_environment_variable_is_named_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("OPS_WEBHOOK", raising=False)
    error = import_error(
        tmp_path,
        """\
        services:
          - {name: web, host: 127.0.0.1, port: 80, protocol: http}
        channels:
          - {name: ops, kind: webhook, url_env: OPS_WEBHOOK}
        """,
    )
    assert error == "channels[0] \"ops\": url_env: the environment variable 'OPS_WEBHOOK' is not set."
    assert not Service.objects.exists()


def test_a_changed_url_is_described_without_its_value(tmp_path):
    make_everything()
    new_url = "https://hooks.example.com/services/T0/B0/new-token-9876543210"
    text = export().replace("  timeout: 5\n", f"  timeout: 5\n  url: {new_url}\n  secret: another-secret-value\n")
    dry = run_import(tmp_path, text, "--dry-run")
    assert dry == (
        "update channel pager: url changed; secret changed\nDry run, nothing written: 0 created, 1 updated, "
        "4 unchanged\n"
    )
    assert Channel.objects.get(name="pager").url == PAGER_URL
    output = run_import(tmp_path, text)
    assert "new-token" not in output and "another-secret" not in output and PAGER_URL not in output
    assert Channel.objects.get(name="pager").url == new_url


def test_a_secret_of_the_wrong_type_is_named_without_its_value(tmp_path):
    error = import_error(tmp_path, "services: []\nchannels:\n  - {name: ops, url: 123456789, secret_env: 7}\n")
    assert error.splitlines() == [
        'channels[0] "ops": url: must be a text.',
        'channels[0] "ops": secret_env: must be the name of an environment variable, not 7.',
    ]


def test_a_secret_given_both_ways_is_an_error(tmp_path):
    error = import_error(tmp_path, "services: []\nchannels:\n  - {name: ops, url: x, url_env: OPS}\n")
    assert error == 'channels[0] "ops": give url or url_env, not both.'


# References and loops ---------------------------------------------------------------------------


def test_unknown_names_are_errors_naming_the_entry_and_key(tmp_path):
    Channel.objects.create(name="stored", url=PAGER_URL)
    error = import_error(
        tmp_path,
        f"""\
        services:
          - {{name: web, host: 127.0.0.1, port: 80, protocol: http, depends_on: [db]}}
        channels:
          - {{name: ops, url: "{PAGER_URL}", services: [web, mail], escalate_to: nobody}}
          - {{name: ok, url: "{PAGER_URL}", escalate_to: stored}}
        maintenance:
          - {{name: patch, services: [dns], starts_at: 2025-01-04T22:00:00+01:00, ends_at: 2025-01-05T02:00:00Z}}
        """,
    )
    assert error.splitlines() == [
        "services[0] \"web\": depends_on: no service named 'db' in the file or the database.",
        "channels[0] \"ops\": services: no service named 'mail' in the file or the database.",
        "channels[0] \"ops\": escalate_to: no channel named 'nobody' in the file or the database.",
        "maintenance[0] \"patch\": services: no service named 'dns' in the file or the database.",
    ]


def test_references_resolve_to_rows_in_the_database_that_the_file_leaves_out(tmp_path):
    Service.objects.create(name="db", host="127.0.0.1", port=5432, protocol="tcp")
    run_import(tmp_path, "services:\n  - {name: web, host: 127.0.0.1, port: 80, protocol: http, depends_on: [db]}\n")
    assert list(Service.objects.get(name="web").depends_on.values_list("name", flat=True)) == ["db"]


def test_a_dependency_loop_in_the_file_is_an_error(tmp_path):
    error = import_error(
        tmp_path,
        """\
        services:
          - {name: a, host: 127.0.0.1, port: 1, protocol: tcp, depends_on: [b]}
          - {name: b, host: 127.0.0.1, port: 2, protocol: tcp, depends_on: [a]}
          - {name: c, host: 127.0.0.1, port: 3, protocol: tcp, depends_on: [c]}
        """,
    )
    assert error.splitlines() == [
        'services[0] "a": depends_on: the dependencies loop: a -> b -> a.',
        'services[1] "b": depends_on: the dependencies loop: b -> a -> b.',
        'services[2] "c": depends_on: the dependencies loop: c -> c.',
    ]


def test_a_dependency_loop_through_a_stored_service_is_an_error(tmp_path):
    a = Service.objects.create(name="a", host="127.0.0.1", port=1, protocol="tcp")
    b = Service.objects.create(name="b", host="127.0.0.1", port=2, protocol="tcp")
    b.depends_on.set([a])
    error = import_error(
        tmp_path, "services:\n  - {name: a, host: 127.0.0.1, port: 1, protocol: tcp, depends_on: [b]}\n"
    )
    assert error == 'services[0] "a": depends_on: the dependencies loop: a -> b -> a.'


def test_an_escalation_loop_is_an_error(tmp_path):
    error = import_error(
        tmp_path,
        f"""\
        services: []
        channels:
          - {{name: first, url: "{PAGER_URL}", escalate_to: second}}
          - {{name: second, url: "{PAGER_URL}", escalate_to: first}}
        """,
    )
    assert error.splitlines() == [
        'channels[0] "first": escalate_to: the escalation chain loops: first -> second -> first.',
        'channels[1] "second": escalate_to: the escalation chain loops: second -> first -> second.',
    ]


def test_a_chain_of_new_channels_is_saved_targets_first(tmp_path):
    run_import(
        tmp_path,
        f"""\
        services: []
        channels:
          - {{name: a, url: "{PAGER_URL}", escalate_to: b}}
          - {{name: b, url: "{PAGER_URL}", escalate_to: c}}
          - {{name: c, kind: email, url: ops@example.com}}
        """,
    )
    chain = Channel.objects.get(name="a")
    assert (chain.escalate_to.name, chain.escalate_to.escalate_to.name, chain.escalate_to.escalate_to.escalate_to) == (
        "b",
        "c",
        None,
    )


# Values checked before and by the models ---------------------------------------------------------


def test_channel_and_window_values_are_checked_with_the_models_messages(tmp_path):
    error = import_error(
        tmp_path,
        """\
        services: []
        channels:
          - {name: mail, kind: email, url: not-an-address, schedule_days: [mon, funday], schedule_from: 17:30}
        maintenance:
          - {name: w, starts_at: "2025-01-05T02:00:00+01:00", ends_at: "2025-01-04T22:00", timezone: Mars/Base}
        """,
    )
    assert error.splitlines() == [
        'channels[0] "mail": schedule_from: must be a time in quotes, such as "17:30", not 1050.',
        "maintenance[0] \"w\": ends_at: must be a date and time with an offset, such as '2025-01-04T22:00:00+01:00', "
        "not '2025-01-04T22:00'.",
    ]
    error = import_error(
        tmp_path,
        """\
        services: []
        channels:
          - {name: mail, kind: email, url: not-an-address, schedule_days: [mon, funday]}
        maintenance:
          - {name: w, starts_at: "2025-01-05T02:00:00+01:00", ends_at: "2025-01-04T22:00:00+01:00", timezone: Mars/Base}
        """,
    )
    assert error.splitlines() == [
        "channels[0] \"mail\": schedule_days: Days must be among mon, tue, wed, thu, fri, sat, sun, not 'fun'.",
        "maintenance[0] \"w\": timezone: Unknown time zone 'Mars/Base': use a name like Europe/Berlin.",
        'maintenance[0] "w": ends_at: The window must end after it starts.',
    ]


# The old format and pruning ---------------------------------------------------------------------


def test_a_bare_list_is_still_read_as_services(tmp_path):
    output = run_import(tmp_path, "- {name: web, host: 127.0.0.1, port: 80, protocol: http}\n")
    assert output == "create web\n1 created, 0 updated, 0 unchanged\n"
    assert Service.objects.get(name="web").port == 80


def test_prune_leaves_channels_and_windows_alone_when_the_file_has_no_such_list(tmp_path):
    make_everything()
    text = "services:\n  - {name: db, host: 127.0.0.1, port: 5432, protocol: tcp}\n"
    assert run_import(tmp_path, text, "--prune") == "delete web\n0 created, 0 updated, 1 unchanged, 1 deleted\n"
    assert sorted(Channel.objects.values_list("name", flat=True)) == ["oncall", "pager"]
    assert MaintenanceWindow.objects.count() == 1


def test_prune_deletes_channels_and_windows_not_in_their_lists(tmp_path):
    make_everything()
    text = (
        export().split("channels:")[0] + "channels:\n- {name: oncall, kind: email, enabled: false}\nmaintenance: []\n"
    )
    output = run_import(tmp_path, text, "--prune", "--allow-empty")
    assert output == (
        "delete channel pager\ndelete maintenance window patch night\n0 created, 0 updated, 3 unchanged, 2 deleted\n"
    )
    assert list(Channel.objects.values_list("name", flat=True)) == ["oncall"]
    assert not MaintenanceWindow.objects.exists()


def test_prune_with_an_empty_channels_list_refuses_to_delete_every_channel(tmp_path):
    make_everything()
    text = export().split("channels:")[0] + "channels: []\n"
    assert import_error(tmp_path, text, "--prune") == (
        "The file lists no channels, so --prune would delete every channel in the database (2 channels); "
        "add --allow-empty to do that."
    )
    assert Channel.objects.count() == 2


def test_prune_refuses_to_delete_a_row_the_file_still_names(tmp_path):
    make_everything()
    text = export().replace(
        "- name: web\n", "- name: gone\n  host: 127.0.0.1\n  protocol: tcp\n  port: 1\n- name: web\n"
    )
    text = text.replace("depends_on: [db]", "depends_on: [gone]")
    run_import(tmp_path, text)
    without_gone = text.replace("- name: gone\n  host: 127.0.0.1\n  protocol: tcp\n  port: 1\n", "")
    assert import_error(tmp_path, without_gone, "--prune") == (
        "services[1] \"web\": depends_on: 'gone' is not in the file, so --prune would delete it."
    )
    assert Service.objects.filter(name="gone").exists()


def test_a_window_with_only_its_required_keys_is_created_with_the_defaults(tmp_path):
    output = run_import(
        tmp_path,
        """\
        services: []
        maintenance:
          - {name: reboot, starts_at: 2025-01-04T22:00:00+01:00, ends_at: "2025-01-04T23:00:00+01:00"}
        """,
    )
    assert output == "create maintenance window reboot\n1 created, 0 updated, 0 unchanged\n"
    window = MaintenanceWindow.objects.get(name="reboot")
    assert (window.note, window.repeat, window.timezone, window.ends_at - window.starts_at) == (
        "",
        "none",
        "UTC",
        dt.timedelta(hours=1),
    )
