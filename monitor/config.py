"""Typed readers for settings from environment variables, failing loudly with the variable's name.

Exposes `env_str`, `env_bool`, `env_int`, `env_list`, `env_path`, `env_base_url`, `env_secret_key`,
`database_from_url` and `load_secret_key`; `monitor/settings.py` is built from them. Every error is ImproperlyConfigured
with a sentence naming the variable, what it holds and what is allowed.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, MultiFernet
from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
SECRET_KEY_BYTES = 50  # token_urlsafe(50) gives 67 characters, above Django's 50-character minimum check
SECRET_KEY_PLACEHOLDER = "CHANGE-ME"  # what deploy/systemd/env.example ships in place of every secret
MAKE_FERNET_KEY = "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
MAKE_SECRET_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
BASE_URL_SCHEMES = ("https", "http")
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")
DEFAULT_POSTGRES_PORT = 5432


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    """Return the variable's value stripped, or None when unset or blank (`FOO=` in a compose file means unset)."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the variable's text, or `default` when it is unset or blank."""
    value = _raw(name, environ)
    return default if value is None else value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    """Return the variable as a boolean: true/false, yes/no, on/off or 1/0, in any case."""
    value = _raw(name, environ)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Return the variable as a whole number within [minimum, maximum] when those are given."""
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None
    too_low = minimum is not None and number < minimum
    too_high = maximum is not None and number > maximum
    if too_low or too_high:
        if minimum is not None and maximum is not None:
            allowed = f"between {minimum} and {maximum}"
        else:
            allowed = f"at least {minimum}" if minimum is not None else f"at most {maximum}"
        raise ImproperlyConfigured(f"{name} must be {allowed}, got {number}")
    return number


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the variable's comma-separated items, stripped; raise when it holds commas and nothing else."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ImproperlyConfigured(f"{name} must be a comma-separated list of values, got {value!r}")
    return items


def env_path(name: str, default: Path, *, base: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Return the variable as a path; a relative one is taken from `base` (the repository root), not the cwd."""
    value = _raw(name, environ)
    if value is None:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def env_base_url(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the site's public origin (`https://host[:port]`, lower case, no trailing slash), or None when unset.

    Only an origin is accepted: Portwatch is served at the root of its host, and CSRF compares origins.
    """
    value = _raw(name, environ)
    if value is None:
        return None
    example = "e.g. https://portwatch.example.com"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in BASE_URL_SCHEMES or not parts.hostname:
        raise ImproperlyConfigured(f"{name} must be https://host or http://host ({example}), got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
        raise ImproperlyConfigured(
            f"{name} must be the site's address without a path or anything else ({example}), got {value!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has a port that is not a number from 1 to 65535, got {value!r}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # urlsplit drops an IPv6 host's brackets
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def env_secret_key(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the secret key the variable holds, or None when unset; refuse env.example's placeholder.

    Anyone who has read env.example knows a key containing CHANGE-ME, and with it can forge
    sessions: so it stops the start instead of running with it. Dashes, underscores and spaces are
    ignored in the comparison ("change_me" counts too); the value is never echoed.
    """
    value = _raw(name, environ)
    if value is not None and _squash(SECRET_KEY_PLACEHOLDER) in _squash(value):
        raise ImproperlyConfigured(
            f"{name} still holds the placeholder {SECRET_KEY_PLACEHOLDER}; set it to a long random value, "
            f"e.g. the output of: {MAKE_SECRET_KEY}"
        )
    return value


def _squash(text: str) -> str:
    return re.sub(r"[-_\s]", "", text).lower()


def database_from_url(url: str, *, name: str = "DATABASE_URL", base: Path) -> dict[str, Any]:
    """Return a Django DATABASES entry for `sqlite:///path` or `postgres://user:pass@host:port/db`.

    As in SQLAlchemy and dj-database-url, `sqlite:///relative.db` is relative (here, to `base`) and
    `sqlite:////abs/path.db` absolute. Query parameters of a PostgreSQL URL (e.g. `sslmode=require`)
    become connection OPTIONS. Errors never echo the URL, which may hold a password.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return _sqlite(parts, name, base)
    if scheme in POSTGRES_SCHEMES:
        return _postgres(parts, name)
    shown = repr(scheme) if scheme else "no scheme"
    raise ImproperlyConfigured(
        f"{name} must start with sqlite:// or postgres://, got {shown} "
        "(e.g. sqlite:///var/portwatch.sqlite3 or postgres://user:password@localhost:5432/portwatch)"
    )


def _sqlite(parts: urllib.parse.SplitResult, name: str, base: Path) -> dict[str, Any]:
    path = urllib.parse.unquote(parts.path)[1:]  # drop the slash that separates the empty host from the path
    if parts.netloc or not path:
        raise ImproperlyConfigured(
            f"{name} must name a SQLite file after three slashes, e.g. sqlite:///var/portwatch.sqlite3 "
            "(relative to the project) or sqlite:////srv/portwatch.sqlite3 (absolute)"
        )
    if path != ":memory:" and not Path(path).is_absolute():
        path = str(base / path)
    return sqlite_database(path)


def sqlite_database(path: str | Path) -> dict[str, Any]:
    """Return a DATABASES entry for SQLite set up for one web process and several workers writing at once.

    WAL lets the dashboard read while a worker writes; IMMEDIATE transactions take the write lock
    up front, so two writers queue for `timeout` seconds instead of one failing with "database is
    locked" halfway through its transaction.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
    }


def _postgres(parts: urllib.parse.SplitResult, name: str) -> dict[str, Any]:
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ImproperlyConfigured(
            f"{name} must name one database, e.g. postgres://user:password@localhost:5432/portwatch"
        )
    try:
        port = parts.port or DEFAULT_POSTGRES_PORT
    except ValueError:
        raise ImproperlyConfigured(f"{name} has a port that is not a number from 1 to 65535") from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": database,
        "USER": urllib.parse.unquote(parts.username or ""),
        "PASSWORD": urllib.parse.unquote(parts.password or ""),
        "HOST": parts.hostname or "",  # empty means the local Unix socket
        "PORT": str(port),
        "OPTIONS": dict(urllib.parse.parse_qsl(parts.query)),
    }


def load_secret_key(path: Path) -> str:
    """Return the secret key kept in `path`, generating it on first use, readable by the owner only.

    The key is written to a private temporary file and hard-linked into place, so two processes
    starting together (web and worker) cannot both win or read a half-written file.
    """
    try:
        return _read_secret_key(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")  # mkstemp creates it mode 0600
        try:
            with os.fdopen(fd, "w") as stream:
                stream.write(secrets.token_urlsafe(SECRET_KEY_BYTES) + "\n")
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process stored its key first; use that one
        finally:
            os.unlink(temporary)
    except OSError as error:
        raise ImproperlyConfigured(
            f"cannot store a generated secret key in {path}: {error.strerror}; "
            "make PORTWATCH_DATA_DIR writable or set DJANGO_SECRET_KEY"
        ) from None
    return _read_secret_key(path)


def _read_secret_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty; delete it to generate a new secret key, or set DJANGO_SECRET_KEY")
    return key


def parse_keys(keys: list[str], *, name: str = "PORTWATCH_SECRETS_KEY") -> MultiFernet:
    """Return a MultiFernet of `keys` (the first encrypts); raise ImproperlyConfigured naming a malformed one.

    The message gives the key's position, never the key: a near-miss is still mostly secret.
    """
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode("ascii")))
        except (ValueError, UnicodeEncodeError):  # binascii.Error is a ValueError
            raise ImproperlyConfigured(
                f"{name}: key {position} of {len(keys)} is not a Fernet key (32 bytes in URL-safe base64, "
                f"44 characters); make one with: {MAKE_FERNET_KEY}"
            ) from None
    if not fernets:
        raise ImproperlyConfigured(f"{name} holds no key; make one with: {MAKE_FERNET_KEY}")
    return MultiFernet(fernets)
