"""Secrets at rest: Fernet round trip and rotation, the key file, exact key errors, masking, the model field."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings

from monitor.secrets import DecryptionError, EncryptedTextField, decrypt, encrypt, file_key, masked, parse_keys

ROOT = Path(__file__).resolve().parents[1]
SECRET = "xoxb-1234567890-abcdefghijklmnop"
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
MAKE_KEY = "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


@pytest.fixture
def keys(tmp_path):
    """Run the test with PORTWATCH_SECRETS_KEY set to the given keys, and a fresh DATA_DIR."""

    def use(*values: str):
        return override_settings(PORTWATCH_SECRETS_KEY=list(values), DATA_DIR=tmp_path)

    return use


def test_a_secret_survives_the_round_trip_and_is_not_stored_plain(keys):
    with keys(NEW):
        token = encrypt(SECRET)
        assert SECRET not in token
        assert decrypt(token) == SECRET


def test_a_token_from_the_old_key_still_decrypts_when_it_is_second(keys):
    with keys(OLD):
        token = encrypt(SECRET)
    with keys(NEW, OLD):
        assert decrypt(token) == SECRET
        assert Fernet(NEW.encode()).decrypt(encrypt(SECRET).encode()).decode() == SECRET  # the first key encrypts


def test_a_wrong_key_raises_a_typed_error_without_the_secret(keys):
    with keys(OLD):
        token = encrypt(SECRET)
    with keys(NEW), pytest.raises(DecryptionError) as raised:
        decrypt(token)
    assert str(raised.value) == (
        "a stored secret does not verify with any key in PORTWATCH_SECRETS_KEY (or DATA_DIR/secrets_key): "
        "it was encrypted with another key, or altered"
    )
    assert SECRET not in str(raised.value) and token not in str(raised.value)


def test_a_corrupt_token_raises_a_typed_error(keys):
    with keys(NEW), pytest.raises(DecryptionError, match="not an encrypted token"):
        decrypt(SECRET)


def test_an_altered_token_raises_a_typed_error(keys):
    with keys(NEW):
        token = encrypt(SECRET)
        altered = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
        with pytest.raises(DecryptionError, match="altered"):
            decrypt(altered)


def test_without_the_variable_the_key_file_is_created_0600_and_reused(keys, tmp_path):
    with keys():
        token = encrypt(SECRET)
    path = tmp_path / "secrets_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SECRET not in path.read_text()
    content = path.read_text()
    with keys():
        assert decrypt(token) == SECRET
    assert path.read_text() == content
    with keys(NEW, file_key(path)):  # moving to the variable: the file's key goes last
        assert decrypt(token) == SECRET


def test_an_unreadable_key_file_says_to_set_the_variable(tmp_path):
    (tmp_path / "secrets_key").mkdir()
    with pytest.raises(ImproperlyConfigured) as raised:
        file_key(tmp_path / "secrets_key")
    assert str(raised.value) == (
        f"PORTWATCH_SECRETS_KEY is unset and the key file cannot be used: cannot read {tmp_path / 'secrets_key'}: "
        "Is a directory; set PORTWATCH_SECRETS_KEY instead"
    )


def test_an_empty_key_file_is_refused_not_replaced(tmp_path):
    (tmp_path / "secrets_key").write_text("\n")
    with pytest.raises(ImproperlyConfigured) as raised:
        file_key(tmp_path / "secrets_key")
    assert str(raised.value) == (
        f"PORTWATCH_SECRETS_KEY is unset and the key file cannot be used: {tmp_path / 'secrets_key'} is empty; "
        "set PORTWATCH_SECRETS_KEY instead"
    )
    assert (tmp_path / "secrets_key").read_text() == "\n"


def test_a_malformed_key_is_refused_with_its_position_not_its_value():
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_keys([NEW, "not-a-fernet-key"])
    assert str(raised.value) == (
        "PORTWATCH_SECRETS_KEY: key 2 of 2 is not a Fernet key (32 bytes in URL-safe base64, 44 characters); "
        f"make one with: {MAKE_KEY}"
    )


def test_a_malformed_key_stops_the_settings(tmp_path):
    env = {"PATH": os.environ["PATH"], "PORTWATCH_DATA_DIR": str(tmp_path), "PORTWATCH_SECRETS_KEY": "short"}
    run = subprocess.run(
        [sys.executable, "-c", "import monitor.settings"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode != 0
    assert "ImproperlyConfigured: PORTWATCH_SECRETS_KEY: key 1 of 1 is not a Fernet key" in run.stderr
    assert "short" not in run.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("", ""),
        ("hunter2", "***"),
        ("fifteen-chars-x", "***"),
        ("xoxb-1234567890-abcdefghijklmnop", "***mnop"),
        ("https://hooks.slack.com/services/T000/B000/XXXXXXXX", "https://hooks.slack.com/***"),
        ("https://user:pw@Example.com:8443/hook?token=x#f", "https://***@example.com:8443/***"),
        ("http://example.com", "http://example.com"),
        ("http://example.com/?key=value", "http://example.com/***"),
        ("https://[2001:db8::1]:9000/h", "https://[2001:db8::1]:9000/***"),
        ("tgram://123456789:AAFbotToken/987654", "tgram://***"),
        ("smtps://user:password@mail.example.com:465", "smtps://***@mail.example.com:465"),
        ("https://example.com:notaport/x", "https://***"),
    ],
)
def test_masked_shows_at_most_the_host_or_the_last_four_characters(secret, shown):
    assert masked(secret) == shown


def test_the_field_encrypts_what_it_stores_and_decrypts_what_it_reads(keys):
    field = EncryptedTextField()
    with keys(NEW):
        stored = field.get_prep_value(SECRET)
        assert stored != SECRET and SECRET not in stored
        assert field.from_db_value(stored, None, connection) == SECRET
        assert field.get_prep_value(None) is None
        assert field.from_db_value(None, None, connection) is None


def test_the_field_deconstructs_for_migrations():
    _, path, args, kwargs = EncryptedTextField(blank=True, null=True).deconstruct()
    assert path == "monitor.secrets.EncryptedTextField"
    assert (args, kwargs) == ([], {"blank": True, "null": True})


@pytest.mark.postgres
def test_the_field_round_trips_through_the_database_without_the_plain_secret(db, keys):
    field = EncryptedTextField()
    with keys(NEW), connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE secret_probe (id integer PRIMARY KEY, value text)")
        cursor.execute("INSERT INTO secret_probe (id, value) VALUES (%s, %s)", [1, field.get_prep_value(SECRET)])
        cursor.execute("SELECT value FROM secret_probe WHERE id = %s", [1])
        (stored,) = cursor.fetchone()
        assert SECRET not in stored
        assert field.from_db_value(stored, None, connection) == SECRET
