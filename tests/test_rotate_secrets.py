"""`manage.py rotate_secrets` over real rows: every stored token moves to the first key, unreadable ones are named and
left alone, `--check` counts, and nothing it prints holds a secret."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import models
from django.test import override_settings

from monitor.management.commands import rotate_secrets
from monitor.models import Channel, Service

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

OLD, NEW, STRANGER = (Fernet.generate_key().decode() for _ in range(3))
CHANNELS = {  # name: (kind, url, signing secret)
    "hook": ("webhook", "https://hooks.example.com/services/T000/B000/XXXXXXXXsecretpath", "whsec-0123456789abcdef"),
    "mail": ("email", "ops-private@example.com,oncall-private@example.com", ""),
    "chat": ("apprise", "tgram://123456789:AAFbotTokenSecret/987654", "apprise-signing-s3cret"),
}
PASSWORD = "pop3-login-pa55word"
STORED = 2 * len(CHANNELS) + 1  # url and secret (an empty secret is still a token) per channel, one password
PLAIN_SECRETS = [PASSWORD, *(text for _, url, secret in CHANNELS.values() for text in (url, secret) if text)]


@pytest.fixture
def keys(tmp_path):
    """Use PORTWATCH_SECRETS_KEY = the given keys (and a fresh DATA_DIR): `with keys(NEW, OLD): ...`."""

    def use(*values: str):
        return override_settings(PORTWATCH_SECRETS_KEY=list(values), DATA_DIR=tmp_path)

    return use


@pytest.fixture
def rows(keys) -> dict[str, models.Model]:
    """A channel of each kind and a service with a login password, all encrypted under OLD; one service without."""
    with keys(OLD):
        made: dict[str, models.Model] = {
            name: Channel.objects.create(name=name, kind=kind, url=url, secret=secret)
            for name, (kind, url, secret) in CHANNELS.items()
        }
        service = Service(name="mailbox", host="127.0.0.1", port=110, protocol="pop3")
        service.set_login_password(PASSWORD)
        service.save()
        made["mailbox"] = service
        made["no password"] = Service.objects.create(name="no password", host="127.0.0.1", port=25, protocol="smtp")
    return made


def raw_tokens() -> dict[tuple[str, int, str], str]:
    """Return every stored token as it is in the database, keyed by (model, id, field)."""
    tokens = {}
    for model, name in [(Channel, "url"), (Channel, "secret"), (Service, "login_password_encrypted")]:
        rows = model.objects.annotate(raw=rotate_secrets._raw(name)).values_list("pk", "raw")
        tokens |= {(model.__name__, pk, name): raw for pk, raw in rows if raw}
    return tokens


def store_raw(model: type[models.Model], pk: int, name: str, token: str) -> None:
    model.objects.filter(pk=pk).update(**{name: models.Value(token, output_field=models.TextField())})


def run(*args: str) -> tuple[int, str, str]:
    """Run the command; return its exit status, stdout and stderr (a CommandError's message appended)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("rotate_secrets", *args, stdout=out, stderr=err)
    except SystemExit as exit_:
        return int(exit_.code), out.getvalue(), err.getvalue()
    except CommandError as error:
        return error.returncode, out.getvalue(), err.getvalue() + str(error)
    return 0, out.getvalue(), err.getvalue()


def assert_no_secret_in(*texts: str, tokens: dict) -> None:
    for text in texts:
        for secret in [*PLAIN_SECRETS, *tokens.values()]:
            assert secret not in text


@pytest.mark.parametrize("batch_size", [2, 500])
def test_every_secret_moves_to_the_first_key_and_reads_back_with_it_alone(rows, keys, monkeypatch, batch_size):
    monkeypatch.setattr(rotate_secrets, "BATCH_SIZE", batch_size)
    before = raw_tokens()
    with keys(NEW, OLD):
        status, out, err = run()
    assert (status, err) == (0, "")
    assert out.splitlines()[-1] == f"Rotated {STORED} stored secrets; 0 were already under the first key."
    assert "monitor.channel.url: 3 rotated, 0 already under the first key of 3" in out
    after = raw_tokens()
    assert after.keys() == before.keys() and len(after) == STORED
    for place, token in after.items():  # the raw column holds one encryption under NEW, not a token of a token
        assert token != before[place]
        assert Fernet(NEW.encode()).decrypt(token.encode()) == Fernet(OLD.encode()).decrypt(before[place].encode())
    with keys(NEW):
        for name, (_, url, secret) in CHANNELS.items():
            channel = Channel.objects.get(pk=rows[name].pk)
            assert (channel.url, channel.secret) == (url, secret)
        assert Service.objects.get(pk=rows["mailbox"].pk).login_password == PASSWORD
    assert_no_secret_in(out, err, tokens=before | after)


def test_a_second_run_finds_everything_under_the_first_key_and_changes_nothing(rows, keys):
    with keys(NEW, OLD):
        run()
        rotated = raw_tokens()
        status, out, _ = run()
    assert status == 0
    assert out.splitlines()[-1] == f"Rotated 0 stored secrets; {STORED} were already under the first key."
    assert raw_tokens() == rotated


def test_check_counts_the_secrets_not_under_the_first_key_and_exits_1(rows, keys):
    with keys(NEW, OLD):
        Channel.objects.get(pk=rows["hook"].pk).save()  # re-saved by the app: both its fields now under NEW
        before = raw_tokens()
        status, out, err = run("--check")
    assert (status, err) == (1, "")
    assert out.splitlines() == [
        "monitor.channel.url: 2 of 3 not under the first key",
        "monitor.channel.secret: 2 of 3 not under the first key",
        "monitor.service.login_password_encrypted: 1 of 1 not under the first key",
        f"{STORED - 2} stored secrets are not yet under the first key.",
    ]
    assert raw_tokens() == before  # --check writes nothing
    assert_no_secret_in(out, err, tokens=before)


def test_check_exits_0_once_rotated(rows, keys):
    with keys(NEW, OLD):
        run()
        status, out, _ = run("--check")
    assert status == 0
    assert out.splitlines()[-1] == "0 stored secrets are not yet under the first key."


def test_a_token_no_key_decrypts_is_named_and_left_alone_while_the_rest_rotate(rows, keys):
    foreign = Fernet(STRANGER.encode()).encrypt(b"signed-with-a-lost-key").decode()
    store_raw(Channel, rows["chat"].pk, "secret", foreign)
    store_raw(Service, rows["mailbox"].pk, "login_password_encrypted", PASSWORD)  # stored unencrypted by mistake
    before = raw_tokens()
    with keys(NEW, OLD):
        status, out, err = run()
    assert status == rotate_secrets.UNREADABLE_EXIT == 2
    assert err.splitlines()[:2] == [
        f"monitor.channel id {rows['chat'].pk} field secret: a stored secret does not verify with any key in "
        "PORTWATCH_SECRETS_KEY (or DATA_DIR/secrets_key): it was encrypted with another key, or altered; "
        "left unchanged",
        f"monitor.service id {rows['mailbox'].pk} field login_password_encrypted: a stored secret is not an "
        "encrypted token: it is corrupt, or was stored unencrypted; left unchanged",
    ]
    assert "2 stored secrets cannot be decrypted with any key in PORTWATCH_SECRETS_KEY" in err
    assert out.splitlines()[-1] == f"Rotated {STORED - 2} stored secrets; 0 were already under the first key."
    after = raw_tokens()
    assert after[("Channel", rows["chat"].pk, "secret")] == foreign
    assert after[("Service", rows["mailbox"].pk, "login_password_encrypted")] == PASSWORD
    with keys(NEW):
        assert Channel.objects.values_list("url", flat=True).get(pk=rows["chat"].pk) == CHANNELS["chat"][1]
    assert_no_secret_in(out, err, tokens=before | after)


def test_check_names_an_unreadable_token_too(rows, keys):
    store_raw(Channel, rows["hook"].pk, "url", Fernet(STRANGER.encode()).encrypt(b"x").decode())
    with keys(NEW, OLD):
        status, out, err = run("--check")
    assert status == 2
    assert err.startswith(f"monitor.channel id {rows['hook'].pk} field url: a stored secret does not verify")
    assert "monitor.channel.url: 2 of 3 not under the first key, 1 cannot be decrypted" in out


def test_a_secret_saved_while_rotating_is_not_overwritten_with_the_old_one(rows, keys, monkeypatch):
    rotate = rotate_secrets.secrets.rotate
    replaced = "https://hooks.example.com/entered-meanwhile"

    def rotate_while_a_user_saves(token: str) -> str:
        if token == before[("Channel", rows["hook"].pk, "url")]:
            Channel.objects.filter(pk=rows["hook"].pk).update(url=replaced)  # through the field: encrypted under NEW
        return rotate(token)

    before = raw_tokens()
    monkeypatch.setattr(rotate_secrets.secrets, "rotate", rotate_while_a_user_saves)
    with keys(NEW, OLD):
        status, out, _ = run()
    assert status == 0
    assert "monitor.channel.url: 2 rotated, 0 already under the first key of 3, 1 changed meanwhile (run again)" in out
    with keys(NEW):
        assert Channel.objects.get(pk=rows["hook"].pk).url == replaced
