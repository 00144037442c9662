"""Settings from the environment: each typed helper's values and exact errors, the secret key, DATABASE_URL, checks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from monitor.config import (
    database_from_url,
    env_base_url,
    env_bool,
    env_int,
    env_list,
    env_path,
    env_secret_key,
    env_str,
    load_secret_key,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = Path("/srv/portwatch")


def settings_in_subprocess(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import monitor.settings in a fresh interpreter with only `env` set, and print what it chose as JSON."""
    program = (
        "import json, monitor.settings as s; "
        "print(json.dumps({'secret': s.SECRET_KEY, 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, "
        "'db': str(s.DATABASES['default']['NAME']), 'engine': s.DATABASES['default']['ENGINE'], "
        "'broker': s.CELERY_BROKER_URL, 'tz': s.TIME_ZONE, 'use_tz': s.USE_TZ}))"
    )
    clean_env = {"PATH": os.environ["PATH"], "PORTWATCH_DATA_DIR": str(tmp_path), **env}
    return subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=30
    )


def security_in_subprocess(tmp_path: Path, **env: str) -> dict:
    """Return the security and proxy settings monitor.settings chose in a fresh interpreter with only `env` set."""
    names = [
        "CSRF_TRUSTED_ORIGINS",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_PROXY_SSL_HEADER",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
    ]
    program = f"import json, monitor.settings as s; print(json.dumps({{n: getattr(s, n) for n in {names!r}}}))"
    clean_env = {"PATH": os.environ["PATH"], "PORTWATCH_DATA_DIR": str(tmp_path), **env}
    run = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_env_str_returns_the_value_or_the_default_when_unset_or_blank():
    assert env_str("NAME", "fallback", environ={"NAME": " value "}) == "value"
    assert env_str("NAME", "fallback", environ={}) == "fallback"
    assert env_str("NAME", "fallback", environ={"NAME": "  "}) == "fallback"


def test_env_str_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("PORTWATCH_TEST_VALUE", "from the environment")
    assert env_str("PORTWATCH_TEST_VALUE") == "from the environment"


@pytest.mark.parametrize("text", ["true", "TRUE", "yes", "on", "1"])
def test_env_bool_accepts_words_for_true(text):
    assert env_bool("PORTWATCH_DEBUG", default=False, environ={"PORTWATCH_DEBUG": text}) is True


@pytest.mark.parametrize("text", ["false", "False", "no", "off", "0"])
def test_env_bool_accepts_words_for_false(text):
    assert env_bool("PORTWATCH_DEBUG", default=True, environ={"PORTWATCH_DEBUG": text}) is False


def test_env_bool_uses_the_default_when_unset():
    assert env_bool("PORTWATCH_DEBUG", default=True, environ={}) is True


def test_env_bool_refuses_anything_else_naming_the_variable():
    with pytest.raises(ImproperlyConfigured) as error:
        env_bool("PORTWATCH_DEBUG", default=False, environ={"PORTWATCH_DEBUG": "maybe"})
    assert str(error.value) == "PORTWATCH_DEBUG must be true or false, got 'maybe'"


def test_env_int_parses_within_bounds():
    assert env_int("PORT", 8000, minimum=1, maximum=65535, environ={"PORT": "8080"}) == 8080
    assert env_int("PORT", 8000, minimum=1, maximum=65535, environ={}) == 8000


def test_env_int_refuses_text_that_is_not_a_whole_number():
    with pytest.raises(ImproperlyConfigured) as error:
        env_int("PORTWATCH_WORKERS", 4, environ={"PORTWATCH_WORKERS": "4.5"})
    assert str(error.value) == "PORTWATCH_WORKERS must be a whole number, got '4.5'"


@pytest.mark.parametrize(
    ("bounds", "value", "message"),
    [
        ({"minimum": 1, "maximum": 65535}, "70000", "PORT must be between 1 and 65535, got 70000"),
        ({"minimum": 1, "maximum": 65535}, "0", "PORT must be between 1 and 65535, got 0"),
        ({"minimum": 1}, "-3", "PORT must be at least 1, got -3"),
        ({"maximum": 10}, "11", "PORT must be at most 10, got 11"),
    ],
)
def test_env_int_refuses_values_out_of_bounds(bounds, value, message):
    with pytest.raises(ImproperlyConfigured) as error:
        env_int("PORT", 8000, environ={"PORT": value}, **bounds)
    assert str(error.value) == message


def test_env_list_splits_on_commas_and_strips_items():
    hosts = env_list("ALLOWED_HOSTS", ["localhost"], environ={"ALLOWED_HOSTS": " a.example , b.example,,"})
    assert hosts == ["a.example", "b.example"]
    assert env_list("ALLOWED_HOSTS", ["localhost"], environ={}) == ["localhost"]


def test_env_list_refuses_commas_without_values():
    with pytest.raises(ImproperlyConfigured) as error:
        env_list("ALLOWED_HOSTS", ["localhost"], environ={"ALLOWED_HOSTS": " , ,"})
    assert str(error.value) == "ALLOWED_HOSTS must be a comma-separated list of values, got ', ,'"


def test_env_path_takes_relative_paths_from_the_base_not_the_working_directory():
    assert (
        env_path("PORTWATCH_DATA_DIR", BASE / "var", base=BASE, environ={"PORTWATCH_DATA_DIR": "data"}) == BASE / "data"
    )
    assert env_path("PORTWATCH_DATA_DIR", BASE / "var", base=BASE, environ={"PORTWATCH_DATA_DIR": "/d"}) == Path("/d")
    assert env_path("PORTWATCH_DATA_DIR", BASE / "var", base=BASE, environ={}) == BASE / "var"


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://portwatch.example.com", "https://portwatch.example.com"),
        (" HTTPS://Portwatch.Example.COM/ ", "https://portwatch.example.com"),
        ("https://portwatch.example.com:8443", "https://portwatch.example.com:8443"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_env_base_url_returns_the_origin_in_lower_case_without_a_slash(value, origin):
    assert env_base_url("PORTWATCH_BASE_URL", environ={"PORTWATCH_BASE_URL": value}) == origin


def test_env_base_url_is_none_when_unset():
    assert env_base_url("PORTWATCH_BASE_URL", environ={}) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "portwatch.example.com",
            "PORTWATCH_BASE_URL must be https://host or http://host (e.g. https://portwatch.example.com), "
            "got 'portwatch.example.com'",
        ),
        (
            "ftp://portwatch.example.com",
            "PORTWATCH_BASE_URL must be https://host or http://host (e.g. https://portwatch.example.com), "
            "got 'ftp://portwatch.example.com'",
        ),
        (
            "https://portwatch.example.com/monitor/",
            "PORTWATCH_BASE_URL must be the site's address without a path or anything else "
            "(e.g. https://portwatch.example.com), got 'https://portwatch.example.com/monitor/'",
        ),
        (
            "https://admin@portwatch.example.com",
            "PORTWATCH_BASE_URL must be the site's address without a path or anything else "
            "(e.g. https://portwatch.example.com), got 'https://admin@portwatch.example.com'",
        ),
        (
            "https://portwatch.example.com:99999",
            "PORTWATCH_BASE_URL has a port that is not a number from 1 to 65535, "
            "got 'https://portwatch.example.com:99999'",
        ),
    ],
)
def test_env_base_url_refuses_anything_but_an_origin(value, message):
    with pytest.raises(ImproperlyConfigured) as error:
        env_base_url("PORTWATCH_BASE_URL", environ={"PORTWATCH_BASE_URL": value})
    assert str(error.value) == message


PLACEHOLDER_MESSAGE = (
    "DJANGO_SECRET_KEY still holds the placeholder CHANGE-ME; set it to a long random value, "
    "e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
)


@pytest.mark.parametrize("value", ["CHANGE-ME", "change-me", "Change_Me", "my-CHANGE-ME-key-0123456789"])
def test_a_placeholder_secret_key_is_refused_saying_how_to_make_one(value):
    with pytest.raises(ImproperlyConfigured) as error:
        env_secret_key("DJANGO_SECRET_KEY", environ={"DJANGO_SECRET_KEY": value})
    assert str(error.value) == PLACEHOLDER_MESSAGE


def test_a_real_secret_key_is_returned_as_it_is():
    key = "Zq3-7u_kH1vTxN0pLw8sYc2bRf5dGj9mEaKo4iU6tP-QrS1wVx7yZ0aB3cD5eF8g"
    assert env_secret_key("DJANGO_SECRET_KEY", environ={"DJANGO_SECRET_KEY": key}) == key


def test_the_placeholder_secret_key_of_env_example_stops_the_start(tmp_path):
    run = settings_in_subprocess(tmp_path, DJANGO_SECRET_KEY="CHANGE-ME")
    assert run.returncode != 0
    assert run.stderr.strip().endswith(f"ImproperlyConfigured: {PLACEHOLDER_MESSAGE}")


def test_database_url_for_an_absolute_sqlite_file():
    database = database_from_url("sqlite:////srv/db/portwatch.sqlite3", base=BASE)
    assert (database["ENGINE"], database["NAME"]) == ("django.db.backends.sqlite3", "/srv/db/portwatch.sqlite3")


def test_sqlite_takes_the_write_lock_up_front_and_lets_readers_in_while_writing():
    options = database_from_url("sqlite:///var/pw.sqlite3", base=BASE)["OPTIONS"]
    assert (options["transaction_mode"], options["init_command"]) == ("IMMEDIATE", "PRAGMA journal_mode=WAL;")


def test_database_url_for_a_relative_sqlite_file_is_relative_to_the_project():
    assert database_from_url("sqlite:///var/pw.sqlite3", base=BASE)["NAME"] == "/srv/portwatch/var/pw.sqlite3"


def test_database_url_for_postgres_decodes_credentials_and_keeps_query_options():
    url = "postgres://port%40watch:p%3Ass%2Fword@db.internal:6543/portwatch?sslmode=require"
    assert database_from_url(url, base=BASE) == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "portwatch",
        "USER": "port@watch",
        "PASSWORD": "p:ss/word",
        "HOST": "db.internal",
        "PORT": "6543",
        "OPTIONS": {"sslmode": "require"},
    }


def test_database_url_for_postgresql_scheme_defaults_the_port():
    assert database_from_url("postgresql://pw@localhost/portwatch", base=BASE)["PORT"] == "5432"


def test_database_url_with_an_unknown_scheme_is_refused_without_echoing_the_password():
    with pytest.raises(ImproperlyConfigured) as error:
        database_from_url("mysql://root:hunter2@localhost/portwatch", base=BASE)
    assert str(error.value) == (
        "DATABASE_URL must start with sqlite:// or postgres://, got 'mysql' "
        "(e.g. sqlite:///var/portwatch.sqlite3 or postgres://user:password@localhost:5432/portwatch)"
    )


def test_database_url_for_postgres_without_a_database_name_is_refused():
    with pytest.raises(ImproperlyConfigured) as error:
        database_from_url("postgres://user:secret@localhost:5432/", base=BASE)
    assert (
        str(error.value)
        == "DATABASE_URL must name one database, e.g. postgres://user:password@localhost:5432/portwatch"
    )


def test_database_url_for_sqlite_without_a_path_is_refused():
    with pytest.raises(ImproperlyConfigured) as error:
        database_from_url("sqlite://", base=BASE)
    assert str(error.value).startswith("DATABASE_URL must name a SQLite file after three slashes")


def test_secret_key_is_generated_once_private_and_reused(tmp_path):
    path = tmp_path / "data" / "secret_key"
    first = load_secret_key(path)
    assert len(first) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret_key(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left behind


def test_an_empty_secret_key_file_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "secret_key"
    path.write_text("\n")
    with pytest.raises(ImproperlyConfigured) as error:
        load_secret_key(path)
    assert str(error.value) == f"{path} is empty; delete it to generate a new secret key, or set DJANGO_SECRET_KEY"


def test_settings_with_nothing_set_run_embedded(tmp_path):
    run = settings_in_subprocess(tmp_path)
    assert run.returncode == 0, run.stderr
    chosen = json.loads(run.stdout)
    assert chosen["secret"] == (tmp_path / "secret_key").read_text().strip()
    assert chosen["debug"] is False
    assert chosen["hosts"] == ["localhost", "127.0.0.1", "[::1]"]
    assert (chosen["engine"], chosen["db"]) == ("django.db.backends.sqlite3", str(tmp_path / "portwatch.sqlite3"))
    assert chosen["broker"] == "filesystem://"
    assert (chosen["tz"], chosen["use_tz"]) == ("UTC", True)


def test_settings_reuse_the_stored_secret_key_across_processes(tmp_path):
    first, second = settings_in_subprocess(tmp_path), settings_in_subprocess(tmp_path)
    assert json.loads(first.stdout)["secret"] == json.loads(second.stdout)["secret"]


def test_django_secret_key_overrides_the_stored_one(tmp_path):
    run = settings_in_subprocess(tmp_path, DJANGO_SECRET_KEY="k" * 60)
    assert json.loads(run.stdout)["secret"] == "k" * 60
    assert not (tmp_path / "secret_key").exists()


def test_settings_take_database_redis_and_hosts_from_the_environment(tmp_path):
    run = settings_in_subprocess(
        tmp_path,
        DATABASE_URL="postgres://pw:pw@127.0.0.1:5432/portwatch",
        REDIS_URL="redis://127.0.0.1:6379/0",
        ALLOWED_HOSTS="watch.example.org",
        PORTWATCH_DEBUG="yes",
    )
    chosen = json.loads(run.stdout)
    assert (chosen["engine"], chosen["db"]) == ("django.db.backends.postgresql", "portwatch")
    assert chosen["broker"] == "redis://127.0.0.1:6379/0"
    assert (chosen["hosts"], chosen["debug"]) == (["watch.example.org"], True)


def test_the_embedded_mode_trusts_no_proxy_and_sets_no_https_only_cookies(tmp_path):
    assert security_in_subprocess(tmp_path) == {
        "CSRF_TRUSTED_ORIGINS": [],
        "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
    }


def test_an_https_base_url_behind_a_proxy_trusts_its_origin_and_its_scheme_header(tmp_path):
    chosen = security_in_subprocess(
        tmp_path,
        PORTWATCH_BASE_URL="https://watch.example.org",
        PORTWATCH_BEHIND_PROXY="true",
        PORTWATCH_HSTS_SECONDS="3600",
        PORTWATCH_HSTS_INCLUDE_SUBDOMAINS="yes",
        PORTWATCH_HSTS_PRELOAD="no",
    )
    assert chosen == {
        "CSRF_TRUSTED_ORIGINS": ["https://watch.example.org"],
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_HSTS_SECONDS": 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": False,
    }


def test_an_http_base_url_is_trusted_but_neither_redirected_nor_given_https_only_cookies(tmp_path):
    chosen = security_in_subprocess(tmp_path, PORTWATCH_BASE_URL="http://watch.internal:8000")
    assert chosen["CSRF_TRUSTED_ORIGINS"] == ["http://watch.internal:8000"]
    assert (chosen["SECURE_SSL_REDIRECT"], chosen["SESSION_COOKIE_SECURE"], chosen["CSRF_COOKIE_SECURE"]) == (
        False,
        False,
        False,
    )


def test_hsts_longer_than_two_years_is_refused(tmp_path):
    run = settings_in_subprocess(tmp_path, PORTWATCH_HSTS_SECONDS="63072001")
    assert run.returncode != 0
    assert "PORTWATCH_HSTS_SECONDS must be between 0 and 63072000, got 63072001" in run.stderr


def test_a_bad_setting_stops_the_process_with_its_message(tmp_path):
    run = settings_in_subprocess(tmp_path, PORTWATCH_DEBUG="maybe")
    assert run.returncode != 0
    assert "PORTWATCH_DEBUG must be true or false, got 'maybe'" in run.stderr


def test_check_reports_a_data_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with override_settings(DATA_DIR=blocker / "data"):
        errors = [message for message in run_checks() if message.id == "portwatch.E001"]
    assert len(errors) == 1
    assert errors[0].msg.startswith(f"The data directory {blocker / 'data'} is not writable")
    assert (
        errors[0].hint == "Set PORTWATCH_DATA_DIR to a directory the Portwatch user can write, or fix its permissions."
    )


def test_check_accepts_a_writable_data_directory(tmp_path):
    with override_settings(DATA_DIR=tmp_path / "new"):
        assert [message for message in run_checks() if message.id.startswith("portwatch.")] == []
    assert (tmp_path / "new").is_dir()


def test_check_reports_a_base_url_whose_host_is_not_allowed():
    with override_settings(PORTWATCH_BASE_URL="https://watch.example.org", ALLOWED_HOSTS=["other.example.org"]):
        errors = [message for message in run_checks() if message.id == "portwatch.E002"]
    assert [(error.msg, error.hint) for error in errors] == [
        (
            "PORTWATCH_BASE_URL is https://watch.example.org, but its host watch.example.org is not in "
            "ALLOWED_HOSTS, so the site would answer every request there with 400 Bad Request.",
            "Add watch.example.org to ALLOWED_HOSTS (comma-separated).",
        )
    ]


def test_check_accepts_a_base_url_whose_host_an_allowed_pattern_matches():
    with override_settings(PORTWATCH_BASE_URL="https://watch.example.org:8443", ALLOWED_HOSTS=[".example.org"]):
        assert [message for message in run_checks() if message.id == "portwatch.E002"] == []
