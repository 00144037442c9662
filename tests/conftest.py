"""Shared fixtures: certificates from a throwaway CA, and `need()` for tests that depend on a local service."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(available: bool, reason: str) -> None:
    """Skip the test when something it needs is missing, except under CI=true, where that fails it."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Certificates:
    """A trusted CA's bundle and server certificates for each case a TLS check must tell apart."""

    ca_file: str  # PEM bundle of the trusted CA
    good: trustme.LeafCert  # valid for localhost and 127.0.0.1
    expired: trustme.LeafCert
    expiring: trustme.LeafCert  # valid, but for five more days only
    wrong_host: trustme.LeafCert  # valid, for another name
    unknown_ca: trustme.LeafCert  # issued by a CA the client does not trust


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    ca, stranger = trustme.CA(), trustme.CA()
    now = dt.datetime.now(dt.UTC)
    ca_file = Path(tmp_path_factory.mktemp("ca")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certificates(
        ca_file=str(ca_file),
        good=ca.issue_cert("localhost", "127.0.0.1", "::1"),
        expired=ca.issue_cert("localhost", "127.0.0.1", not_after=now - dt.timedelta(days=3)),
        expiring=ca.issue_cert("localhost", "127.0.0.1", not_after=now + dt.timedelta(days=5)),
        wrong_host=ca.issue_cert("elsewhere.test"),
        unknown_ca=stranger.issue_cert("localhost", "127.0.0.1"),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a PostgreSQL run (DATABASE_URL set, as `make test`'s second pass does), check the server once.

    Unreachable: skip every test with the reason, or under CI=true stop the run as failed.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if "postgresql" not in database["ENGINE"]:
        return
    reason = _postgres_problem(database)
    if reason is None:
        return
    if IN_CI:
        pytest.exit(f"CI=true and PostgreSQL is unreachable: {reason}", returncode=1)
    skip = pytest.mark.skip(reason=f"PostgreSQL is unreachable: {reason}")
    for item in items:
        item.add_marker(skip)


def _postgres_problem(database: dict) -> str | None:
    import psycopg

    try:
        psycopg.connect(
            host=database.get("HOST") or "127.0.0.1",
            port=database.get("PORT") or 5432,
            user=database.get("USER") or "postgres",
            password=database.get("PASSWORD") or None,
            dbname=database.get("NAME") or "postgres",
            connect_timeout=3,
        ).close()
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]
    return None
