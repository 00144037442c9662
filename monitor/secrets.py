"""Secrets encrypted at rest: `encrypt`, `decrypt`, `rotate`, `masked` and the model field `EncryptedTextField`.

Keys: PORTWATCH_SECRETS_KEY holds one or more comma-separated Fernet keys; the first encrypts, all decrypt,
so a key is rotated by putting the new one first and running `manage.py rotate_secrets` (MultiFernet.rotate
on every stored token) before dropping the old one. Unset, the key comes from DATA_DIR/secrets_key, made on
first use by the same `load_secret_key` that keeps Django's SECRET_KEY (0600, atomic when web and worker
start together). That file holds a random text, not a Fernet key; `file_key()` derives the Fernet key from it
with HKDF, and its output is what to put last in PORTWATCH_SECRETS_KEY when moving from the file to the
variable.

A decrypted secret is a plain `str`: nothing here stops it from being logged, so callers show `masked(...)`
(monitor/masking.py, which holds the rule) and never the value or a model instance's repr holding it.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from monitor.config import load_secret_key, parse_keys
from monitor.masking import masked

__all__ = [
    "DecryptionError",
    "EncryptedTextField",
    "decrypt",
    "encrypt",
    "file_key",
    "masked",
    "parse_keys",
    "rotate",
    "under_first_key",
]

KEY_FILE = "secrets_key"  # under DATA_DIR
HKDF_INFO = b"portwatch secrets_key"  # binds the derived key to this use of the file
FERNET_VERSION = 0x80  # the first byte of every Fernet token


class DecryptionError(Exception):
    """A stored secret cannot be decrypted; the message names the problem, never the token or the secret."""


def file_key(path: Path) -> str:
    """Return the Fernet key derived from the key file at `path`, creating the file (0600) on first use."""
    try:
        material = load_secret_key(path)
    except ImproperlyConfigured as error:  # it could not store a new key, or found an empty file
        reason = str(error).split(";")[0]  # its advice after the ";" is about DJANGO_SECRET_KEY
    except OSError as error:  # load_secret_key lets a read error other than "no such file" through
        reason = f"cannot read {path}: {error.strerror}"
    else:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(material.encode())
        return base64.urlsafe_b64encode(derived).decode("ascii")
    raise ImproperlyConfigured(
        f"PORTWATCH_SECRETS_KEY is unset and the key file cannot be used: {reason}; set PORTWATCH_SECRETS_KEY instead"
    )


def encrypt(text: str) -> str:
    """Return `text` encrypted with the first key, as a Fernet token (URL-safe ASCII)."""
    return _fernet().encrypt(text.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    """Return the text in `token`; raise DecryptionError when it is corrupt or made with a key we do not hold."""
    return _open(_fernet().decrypt, token).decode("utf-8")


def rotate(token: str) -> str:
    """Return `token` re-encrypted with the first key (same text and timestamp); raise DecryptionError as decrypt.

    For `manage.py rotate_secrets`, which works on the stored tokens without ever holding the plain text.
    """
    return _open(_fernet().rotate, token).decode("ascii")


def under_first_key(token: str) -> bool:
    """Return True when the first key alone decrypts `token`, so rotating it would change nothing.

    Raise DecryptionError when no key decrypts it: a token to report, not one to rotate.
    """
    try:
        _fernet(first_only=True).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError):
        decrypt(token)  # raises the typed error when no other key reads it either
        return False
    return True


def _open(operation: Callable[[bytes], bytes], token: str) -> bytes:
    """Return `operation(token)`, turning a non-token or a token no key verifies into DecryptionError."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if not raw or raw[0] != FERNET_VERSION:
        raise DecryptionError("a stored secret is not an encrypted token: it is corrupt, or was stored unencrypted")
    try:
        return operation(token.encode("ascii"))
    except InvalidToken:
        raise DecryptionError(
            "a stored secret does not verify with any key in PORTWATCH_SECRETS_KEY (or DATA_DIR/secrets_key): "
            "it was encrypted with another key, or altered"
        ) from None


def _fernet(*, first_only: bool = False) -> MultiFernet:
    return _cached_fernet(tuple(settings.PORTWATCH_SECRETS_KEY), str(settings.DATA_DIR), first_only)


@functools.lru_cache(maxsize=8)  # keyed on the settings, so override_settings in tests takes effect
def _cached_fernet(keys: tuple[str, ...], data_dir: str, first_only: bool = False) -> MultiFernet:
    held = list(keys) or [file_key(Path(data_dir) / KEY_FILE)]
    return parse_keys(held[:1] if first_only else held)


class EncryptedTextField(models.TextField):
    """A TextField stored as a Fernet token and read back as plain text.

    The value on a model instance is the plain secret: show `masked(value)`, and keep the instance out of
    log lines and exception messages (its repr would be harmless, but a field's value is not).
    Lookups other than isnull cannot work on it: every encryption of a text differs.
    """

    description = "Text encrypted at rest (Fernet)"

    def from_db_value(self, value: str | None, expression, connection) -> str | None:
        return None if value is None else decrypt(value)

    def get_prep_value(self, value: object) -> str | None:
        value = super().get_prep_value(value)
        return None if value is None else encrypt(value)
