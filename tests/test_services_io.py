"""Services as code: `export_services` and `import_services` through the commands, against a real database.

Errors are checked by their exact text; the round trip checks that importing an export saves no row.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from monitor import services_io
from monitor.models import Service
from monitor.probes import PROTOCOLS

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

FIELDS = [
    "name",
    "host",
    "port",
    "protocol",
    "tls_mode",
    "interval",
    "timeout",
    "enabled",
    "tags",
    "locations",
    "failure_threshold",
    "recovery_threshold",
    "options",
    "updated",
]


def run_import(tmp_path: Path, text: str, *flags: str) -> str:
    path = tmp_path / "services.yaml"
    path.write_text(textwrap.dedent(text))
    out = io.StringIO()
    call_command("import_services", str(path), *flags, stdout=out)
    return out.getvalue()


def import_error(tmp_path: Path, text: str) -> str:
    """Return the error lines of a failing import (without the "nothing imported" first line)."""
    with pytest.raises(CommandError) as raised:
        run_import(tmp_path, text)
    first, *rest = str(raised.value).splitlines()
    assert first.endswith("services.yaml: nothing imported.")
    return "\n".join(rest)


def export() -> str:
    out = io.StringIO()
    call_command("export_services", stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, tuple]:
    return {row[0]: row for row in Service.objects.values_list(*FIELDS)}


def make_services() -> None:
    Service.objects.create(name="web", host="127.0.0.1", port=8080, protocol="http", interval=30, timeout=2.5)
    Service.objects.create(
        name="mail-eu",
        host="Mail.Example.COM",
        protocol="smtp",
        tls_mode="starttls",
        tags="mail,eu",
        locations="default,eu",
        failure_threshold=3,
        options={"tls_warn_days": 7},
    )
    Service.objects.create(name="bücher", host="bücher.example", protocol="imap", tls_mode="implicit", enabled=False)


# Export -----------------------------------------------------------------------------------------


def test_export_writes_every_service_by_name_with_only_non_default_values():
    make_services()
    assert export() == textwrap.dedent(
        """\
        # Portwatch services. Import with `manage.py import_services FILE`; values left out take their defaults.
        services:
        - name: bücher
          host: xn--bcher-kva.example
          protocol: imap
          tls_mode: implicit
          enabled: false
        - name: mail-eu
          host: mail.example.com
          protocol: smtp
          tls_mode: starttls
          tags: [mail, eu]
          locations: [default, eu]
          failure_threshold: 3
          options: {tls_warn_days: 7}
        - name: web
          host: 127.0.0.1
          port: 8080
          protocol: http
          interval: 30
          timeout: 2.5
        """
    )


def test_export_to_a_file_writes_the_same_text(tmp_path):
    make_services()
    path = tmp_path / "out.yaml"
    call_command("export_services", str(path), stderr=io.StringIO())
    assert path.read_text() == export()


def test_importing_the_export_into_the_same_database_changes_nothing(tmp_path):
    make_services()
    before = snapshot()
    output = run_import(tmp_path, export())
    assert output == "0 created, 0 updated, 3 unchanged\n"
    assert snapshot() == before  # values and `updated` times alike: no row was saved


def test_an_export_imported_into_an_empty_database_recreates_the_services(tmp_path):
    make_services()
    text = export()
    Service.objects.all().delete()
    assert run_import(tmp_path, text).endswith("3 created, 0 updated, 0 unchanged\n")
    assert export() == text


# Import: creating, updating, pruning ------------------------------------------------------------


def test_import_creates_new_services_and_updates_existing_ones_by_name(tmp_path):
    Service.objects.create(name="web", host="127.0.0.1", port=8080, protocol="http", tags="old")
    output = run_import(
        tmp_path,
        """\
        services:
          - {name: web, host: 127.0.0.1, port: 8081, protocol: http}
          - {name: dns, host: 9.9.9.9, protocol: dns, options: {query_name: example.com}}
        """,
    )
    assert output == (
        "update web: port: 8080 -> 8081; tags: 'old' -> empty\ncreate dns\n1 created, 1 updated, 0 unchanged\n"
    )
    web = Service.objects.get(name="web")
    assert (web.port, web.tags) == (8081, "")  # a key left out takes its default
    assert Service.objects.get(name="dns").options == {"query_name": "example.com"}


def test_services_not_in_the_file_are_kept_without_prune_and_deleted_with_it(tmp_path):
    make_services()
    text = "services:\n  - {name: web, host: 127.0.0.1, port: 8080, protocol: http, interval: 30, timeout: 2.5}\n"
    kept = run_import(tmp_path, text)
    assert kept == "0 created, 0 updated, 1 unchanged; 2 not in the file kept (--prune deletes them)\n"
    assert Service.objects.count() == 3
    pruned = run_import(tmp_path, text, "--prune")
    assert pruned == "delete bücher\ndelete mail-eu\n0 created, 0 updated, 1 unchanged, 2 deleted\n"
    assert list(Service.objects.values_list("name", flat=True)) == ["web"]


def test_dry_run_shows_the_changes_and_writes_nothing(tmp_path):
    make_services()
    before = snapshot()
    output = run_import(
        tmp_path,
        """\
        services:
          - {name: web, host: 127.0.0.1, port: 8080, protocol: http, interval: 60, timeout: 2.5}
          - {name: new, host: 127.0.0.1, port: 25, protocol: smtp}
        """,
        "--dry-run",
        "--prune",
    )
    assert output == (
        "update web: interval: 30 -> 60\ncreate new\ndelete bücher\ndelete mail-eu\n"
        "Dry run, nothing written: 1 created, 1 updated, 0 unchanged, 2 deleted\n"
    )
    assert snapshot() == before


def test_an_empty_services_list_imports_nothing(tmp_path):
    assert run_import(tmp_path, "services:\n") == "0 created, 0 updated, 0 unchanged\n"


@pytest.mark.parametrize("text", ["services:\n", "services: []\n", "services:\n#  - {name: web, host: a}\n"])
@pytest.mark.parametrize("flags", [["--prune"], ["--prune", "--dry-run"]])
def test_prune_with_an_empty_list_refuses_to_delete_every_service(tmp_path, text, flags):
    make_services()
    with pytest.raises(CommandError) as raised:
        run_import(tmp_path, text, *flags)
    assert str(raised.value).endswith(
        "services.yaml: nothing imported.\nThe file lists no services, so --prune would delete every service "
        "in the database (3 services); add --allow-empty to do that."
    )
    assert Service.objects.count() == 3


def test_prune_with_a_missing_list_deletes_nothing_even_with_allow_empty(tmp_path):
    make_services()
    with pytest.raises(CommandError) as raised:
        run_import(tmp_path, "{}\n", "--prune", "--allow-empty")
    assert str(raised.value).endswith("services.yaml: nothing imported.\nThe file has no `services:` list.")
    assert Service.objects.count() == 3


def test_prune_with_an_empty_list_and_allow_empty_deletes_every_service(tmp_path):
    make_services()
    output = run_import(tmp_path, "services: []\n", "--prune", "--allow-empty")
    assert output == "delete bücher\ndelete mail-eu\ndelete web\n0 created, 0 updated, 0 unchanged, 3 deleted\n"
    assert Service.objects.count() == 0


def test_prune_with_an_empty_list_of_an_empty_database_is_no_error(tmp_path):
    assert run_import(tmp_path, "services: []\n", "--prune") == "0 created, 0 updated, 0 unchanged, 0 deleted\n"


def test_apply_refuses_an_emptying_prune_for_callers_other_than_the_command():
    make_services()
    with pytest.raises(services_io.ServicesFileError) as raised:
        services_io.apply(services_io.plan_import("services: []\n"), prune=True)
    assert raised.value.errors == [
        "The file lists no services, so --prune would delete every service in the database (3 services); "
        "add --allow-empty to do that."
    ]
    assert Service.objects.count() == 3


# Import: errors name the service and the field, and change nothing ------------------------------


def test_an_invalid_value_names_the_service_and_field_and_nothing_is_written(tmp_path):
    error = import_error(
        tmp_path,
        """\
        services:
          - {name: ok-1, host: 127.0.0.1, port: 25, protocol: smtp}
          - {name: ok-2, host: 127.0.0.1, port: 110, protocol: pop3}
          - {name: ok-3, host: 127.0.0.1, port: 143, protocol: imap}
          - {name: mail-eu, host: mail.example.com, port: 70000, protocol: smtp}
        """,
    )
    assert error == (
        'services[3] "mail-eu": port: Port must be between 1 and 65535, or empty for the protocol\'s standard '
        "port, not 70000."
    )
    assert not Service.objects.exists()  # the valid ones before it were not written either


def test_every_problem_in_the_file_is_listed(tmp_path):
    error = import_error(
        tmp_path,
        """\
        services:
          - {name: a, host: "http://example.com/", protocol: smtp, interval: 2}
          - {name: b, host: example.com, protocol: gopher, timeout: 10}
          - {name: c, host: example.com, protocol: tcp, interval: 10, timeout: 10}
        """,
    )
    assert error.splitlines() == [
        'services[0] "a": host: Host must be a DNS name, an IPv4 address or an IPv6 address: '
        "'http://example.com/' looks like a URL; enter only the host name and choose the protocol.",
        'services[0] "a": interval: Interval must be at least 5 seconds, not 2.',
        'services[0] "a": timeout: Timeout must be shorter than the interval (2 s), not 10 s.',
        f"services[1] \"b\": protocol: Protocol must be one of {', '.join(PROTOCOLS)}, not 'gopher'.",
        'services[2] "c": port: Port is required: tcp has no standard port.',
        'services[2] "c": timeout: Timeout must be shorter than the interval (10 s), not 10 s.',
    ]


def test_an_unknown_key_in_an_entry_is_named(tmp_path):
    error = import_error(tmp_path, "services:\n  - {name: web, host: example.com, protocl: http}\n")
    assert error == (
        "services[0] \"web\": unknown key 'protocl'; the keys are name, host, port, protocol, tls_mode, interval, "
        "timeout, enabled, tags, locations, failure_threshold, recovery_threshold, options, login_password, "
        "depends_on, alert_quorum, reminder_minutes, degraded_latency, degraded_checks, certificate_warn_days, "
        "login_password_env.\n"
        'services[0] "web": protocol is required.'
    )


def test_values_of_the_wrong_type_are_named_before_the_model_sees_them(tmp_path):
    error = import_error(
        tmp_path,
        """\
        services:
          - name: web
            host: example.com
            protocol: http
            port: true
            enabled: "no"
            tags: mail
            locations: [eu, 7]
            options: [tls_warn_days]
        """,
    )
    assert error.splitlines() == [
        'services[0] "web": port: must be a whole number, not True.',
        "services[0] \"web\": enabled: must be true or false, not 'no'.",
        "services[0] \"web\": tags: must be a list, such as [mail, production], not 'mail'.",
        "services[0] \"web\": locations: each item must be a text, such as [mail, production], not ['eu', 7].",
        'services[0] "web": options: must be a mapping of option names to values, such as {tls_warn_days: 7}, '
        "not ['tls_warn_days'].",
    ]


def test_an_entry_without_a_name_or_that_is_not_a_mapping_is_named_by_its_index(tmp_path):
    error = import_error(tmp_path, "services:\n  - {host: example.com, protocol: http}\n  - just a string\n")
    assert error.splitlines() == [
        "services[0]: name is required.",
        "services[1]: each service must be a mapping of keys and values, not a text.",
    ]


def test_a_name_given_twice_is_an_error(tmp_path):
    error = import_error(
        tmp_path,
        """\
        services:
          - {name: web, host: example.com, protocol: http}
          - {name: web, host: example.org, protocol: http}
        """,
    )
    assert error == "services[1] \"web\": name: 'web' is also the name of services[0]; names must be unique."


def test_a_yaml_syntax_error_is_reported_with_its_line_and_column(tmp_path):
    error = import_error(
        tmp_path,
        """\
        services:
          - name: web
            host: example.com
          protocol: http
        """,
    )
    assert error == (
        "Not valid YAML: line 4, column 3: while parsing a block collection expected <block end>, but found '?'."
    )


def test_a_key_given_twice_in_one_entry_is_reported_with_its_line(tmp_path):
    error = import_error(tmp_path, "services:\n  - name: web\n    host: example.com\n    host: example.org\n")
    assert error == "Not valid YAML: line 4, column 5: while reading a mapping found the key 'host' twice."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7\n", "The file must be a mapping with a `services:` list, but it is a number."),
        ("", "The file must be a mapping with a `services:` list, but it is empty."),
        ("just text\n", "The file must be a mapping with a `services:` list, but it is a text."),
        ("servers: []\n", "Unknown top-level key 'servers': the keys are services, channels, maintenance."),
        ("services: {web: 1}\n", "`services:` must be a list of services, not a mapping."),
    ],
)
def test_a_file_of_the_wrong_shape_is_rejected(tmp_path, text, message):
    assert import_error(tmp_path, text) == message


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(CommandError, match=r"^Cannot read .*nowhere\.yaml: \[Errno 2\] No such file or directory"):
        call_command("import_services", str(tmp_path / "nowhere.yaml"))
