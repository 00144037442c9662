"""Dashboard fixtures: a signed-in client per role, services, and history recorded through the daemon's own writer."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from dashboard import roles
from monitor.daemon.recording import Outcome, record
from monitor.models import Service
from monitor.probes import Failure, Phases, Result, Status, TLSFacts

PASSWORD = "a long test password 7"


@pytest.fixture(autouse=True)
def quick_hashing(settings):
    """Hash test passwords with a fast hasher: the default takes about a second per user on a busy machine."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def user_with_role(username: str, role: str | None) -> User:
    user = User.objects.create_user(username, password=PASSWORD)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(db) -> Client:
    return client_for(user_with_role("vera", roles.VIEWER))


@pytest.fixture
def editor(db) -> Client:
    return client_for(user_with_role("eddie", roles.EDITOR))


@pytest.fixture
def admin_client_(db) -> Client:
    """A user in the admins group (not a superuser: the role alone must be enough)."""
    return client_for(user_with_role("ada", roles.ADMIN))


@pytest.fixture
def nobody(db) -> Client:
    """Signed in, but in no group: sees nothing."""
    return client_for(user_with_role("nemo", None))


def make_service(name: str = "mail", **fields) -> Service:
    fields = {"host": "127.0.0.1", "port": 25, "protocol": "smtp", "interval": 60, "timeout": 5.0} | fields
    service = Service(name=name, **fields)
    service.full_clean()
    service.save()
    return service


UP = Result(Status.UP, None, "220 mail ready", Phases(resolve=0.001, connect=0.002, processing=0.01, total=0.015))
DOWN = Result(Status.DOWN, Failure.REFUSED, "connection refused", Phases(connect=0.001, total=0.001))


def tls_facts(days_left: float = 40.0, subject: str = "CN=mail.test") -> TLSFacts:
    now = dt.datetime.now(dt.UTC)
    return TLSFacts(
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        server_name="mail.test",
        subject=subject,
        issuer="CN=Test CA",
        sans=("mail.test",),
        not_before=now - dt.timedelta(days=10),
        not_after=now + dt.timedelta(days=days_left),
        days_left=days_left,
        earliest_expiry=now + dt.timedelta(days=days_left),
        fingerprint_sha256="ab" * 32,
        verified=True,
        verify_error=None,
    )


def probes(service: Service, results: Iterable[Result], *, until: dt.datetime | None = None, location: str = "default"):
    """Record `results` as consecutive slots of `service` ending at `until` (now), through the daemon's writer."""
    results = list(results)
    until = until or dt.datetime.now(dt.UTC)
    step = dt.timedelta(seconds=service.interval)
    outcomes = []
    for index, result in enumerate(results):
        slot = until - (len(results) - index) * step
        outcomes.append(Outcome(service.id, location, slot, slot, result))
    return record(outcomes)
