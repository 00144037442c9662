"""The /probe guard's rules, on addresses: own services by host and port, loopback alike, the allow-list."""

from __future__ import annotations

import pytest

from monitor.metrics.guard import Service, address, own_services, parse_allow_list, refusal

LOOPBACK = [address("127.0.0.1")]
BROKER = Service("broker", "REDIS_URL", "localhost", 6379, (address("127.0.0.1"), address("::1")))
NO_LIST = parse_allow_list([])


def test_the_broker_port_is_refused_on_any_loopback_or_unspecified_address():
    for text in ("127.0.0.1", "127.0.0.2", "0.0.0.0", "::", "::ffff:127.0.0.1"):
        assert refusal("h", 6379, [address(text)], allow=NO_LIST, own=[BROKER]) is not None, text
    assert refusal("h", 6380, LOOPBACK, allow=NO_LIST, own=[BROKER]) is None
    assert refusal("h", 6379, [address("192.0.2.1")], allow=NO_LIST, own=[BROKER]) is None


def test_own_services_come_from_redis_url_and_a_postgresql_database():
    database = {"ENGINE": "django.db.backends.postgresql", "HOST": "db.internal", "PORT": "5433"}
    services = own_services("redis://:pw@redis.internal/0", database)
    assert [(s.label, s.setting, s.host, s.port) for s in services] == [
        ("broker", "REDIS_URL", "redis.internal", 6379),
        ("database", "DATABASE_URL", "db.internal", 5433),
    ]
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}
    socket = {"ENGINE": "django.db.backends.postgresql", "HOST": "/run/postgresql"}
    assert own_services(None, sqlite) == own_services("unix:///run/redis.sock", socket) == ()


def test_the_allow_list_passes_by_name_or_when_every_address_is_inside():
    allow = parse_allow_list(["192.0.2.0/24", "*.example.com", "db.test"])
    inside, outside = address("192.0.2.9"), address("198.51.100.1")

    assert refusal("www.example.com", 443, [outside], allow=allow, own=[]) is None
    assert refusal("DB.test.", 5432, [outside], allow=allow, own=[]) is None
    assert refusal("other.test", 80, [inside], allow=allow, own=[]) is None
    assert refusal("mixed.test", 80, [inside, outside], allow=allow, own=[]) == (
        "mixed.test (192.0.2.9, 198.51.100.1) is not in PORTWATCH_PROBE_ALLOW"
    )
    assert refusal("example.com", 80, [outside], allow=allow, own=[]) is not None  # *. means the names under it


def test_an_allow_list_item_that_is_neither_network_nor_name_is_refused():
    with pytest.raises(ValueError, match=r"^'10\.0\.0\.0/33' is neither a network"):
        parse_allow_list(["10.0.0.0/33"])
