"""A login check's password: stored encrypted, handed to the engine only, never exported, shown back or logged."""

from __future__ import annotations

import io
import textwrap

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from monitor.admin import ServiceForm
from monitor.models import Service
from monitor.probes import OptionsError
from monitor.secrets import DecryptionError, decrypt

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

PASSWORD = "correct horse battery staple"
OTHER_KEY = "jXGbXjoLxkXJmVuGm_SN0m6LSQzmsRMaUOGOjsWqkVQ="


def mailbox(**fields) -> Service:
    service = Service(
        **{"name": "inbox", "host": "mail.example.com", "protocol": "imap", "tls_mode": "implicit"} | fields
    )
    service.options = service.options or {"username": "alice"}
    return service


def stored_token(service: Service) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT login_password_encrypted FROM monitor_service WHERE id = %s", [service.pk])
        return cursor.fetchone()[0]


def test_the_password_is_stored_encrypted_and_reaches_only_the_engine():
    service = mailbox()
    service.set_login_password(PASSWORD)
    service.full_clean()
    service.save()

    token = stored_token(service)
    assert PASSWORD not in token and decrypt(token) == PASSWORD
    options = Service.objects.get(pk=service.pk).probe_options()
    assert (options.username, options.password) == ("alice", PASSWORD)
    assert PASSWORD not in repr(options) and "password" not in options.to_mapping()
    assert "password" not in Service.objects.get(pk=service.pk).options


def test_a_password_in_the_options_is_refused_toward_its_own_field():
    candidate = mailbox(options={"username": "alice", "password": PASSWORD})
    with pytest.raises(Exception) as error:
        candidate.full_clean()
    assert error.value.message_dict == {
        "options": ["options.password: set the login password in its own field, where it is encrypted."]
    }
    assert PASSWORD not in str(error.value)


def test_a_protocol_without_a_login_check_refuses_a_stored_password():
    candidate = Service(name="web", host="example.com", protocol="http")
    candidate.set_login_password(PASSWORD)
    with pytest.raises(Exception) as error:
        candidate.full_clean()
    assert error.value.message_dict == {"__all__": ["HTTP has no login check; remove the login password."]}


def test_a_password_the_key_no_longer_reads_fails_that_service_only(settings):
    service = mailbox()
    service.set_login_password(PASSWORD)
    service.save()
    healthy = Service.objects.create(name="web", host="example.com", protocol="http")

    with override_settings(PORTWATCH_SECRETS_KEY=[OTHER_KEY]):
        loaded = Service.objects.get(pk=service.pk)  # loading never decrypts
        with pytest.raises(OptionsError) as error:
            loaded.probe_options()
        assert error.value.field == "login_password"
        assert "cannot be read" in error.value.message
        assert Service.objects.get(pk=healthy.pk).probe_options().path == "/"
        with pytest.raises(DecryptionError):
            decrypt(stored_token(service))


def test_the_form_takes_a_password_never_shows_it_keeps_it_when_blank_and_removes_it_on_request():
    data = {
        "name": "inbox",
        "enabled": "on",
        "protocol": "imap",
        "host": "mail.example.com",
        "tls_mode": "implicit",
        "interval": "60",
        "timeout": "10",
        "failure_threshold": "1",
        "recovery_threshold": "1",
        "alert_quorum": "0",
        "degraded_checks": "3",
        "certificate_warn_days": "30,14,7,1",
        "options": '{"username": "alice"}',
    }
    form = ServiceForm(data={**data, "login_password": PASSWORD})
    assert form.is_valid(), form.errors
    service = form.save()
    assert Service.objects.get(pk=service.pk).probe_options().password == PASSWORD

    shown = ServiceForm(instance=Service.objects.get(pk=service.pk))
    assert PASSWORD not in str(shown) and stored_token(service) not in str(shown)
    assert "A password is stored (encrypted); leave blank to keep it." in str(shown["login_password"].help_text)

    kept = ServiceForm(data=data, instance=Service.objects.get(pk=service.pk))
    assert kept.is_valid(), kept.errors
    kept.save()
    assert Service.objects.get(pk=service.pk).probe_options().password == PASSWORD

    cleared = ServiceForm(data={**data, "clear_login_password": "on"}, instance=Service.objects.get(pk=service.pk))
    assert cleared.is_valid(), cleared.errors
    cleared.save()
    assert Service.objects.get(pk=service.pk).login_password_encrypted == ""


def run_import(tmp_path, text: str) -> str:
    path = tmp_path / "services.yaml"
    path.write_text(textwrap.dedent(text))
    out = io.StringIO()
    call_command("import_services", str(path), stdout=out)
    return out.getvalue()


def test_the_services_file_reads_the_password_from_the_environment_and_never_exports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("INBOX_PASSWORD", PASSWORD)
    output = run_import(
        tmp_path,
        """
        services:
          - name: inbox
            host: mail.example.com
            protocol: imap
            tls_mode: implicit
            options: {username: alice}
            login_password_env: INBOX_PASSWORD
        """,
    )
    assert PASSWORD not in output
    assert Service.objects.get(name="inbox").probe_options().password == PASSWORD

    exported = io.StringIO()
    call_command("export_services", stdout=exported)
    assert PASSWORD not in exported.getvalue() and "login_password" not in exported.getvalue().split("\n", 3)[-1]

    monkeypatch.setenv("INBOX_PASSWORD", "a new one")
    changed = run_import(tmp_path, (tmp_path / "services.yaml").read_text())
    assert "login_password changed" in changed and "a new one" not in changed
    assert Service.objects.get(name="inbox").probe_options().password == "a new one"
