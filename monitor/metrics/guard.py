"""Where /probe may connect: the operator's allow-list, and never Portwatch's own broker or database by default.

Exposes `parse_allow_list(items) -> AllowList`, `own_services(redis_url, database) -> tuple[Service, ...]`
and `refusal(host, port, addresses, allow=..., own=...) -> str | None`. Plain Python: the caller resolves.

Decisions:
- `/probe` makes the server connect wherever a caller says, from inside the network: the broker and the
  database are the first things such a caller would aim at, so their host:port (from REDIS_URL and
  DATABASE_URL) is refused unless PORTWATCH_PROBE_ALLOW_OWN_SERVICES=true. A loopback or unspecified
  address (0.0.0.0 reaches localhost too) counts as any loopback address at that port.
- Every address the target resolves to is checked, not just the first, and the engine resolves through
  the same TTL cache right after, so it connects to an address that was checked. An HTTP redirect to
  another host is followed as blackbox follows it, unchecked; that is the limit of this guard.
- An allow-list entry is a network (10.0.0.0/8, 192.0.2.7), a host name, or *.example.com for the
  names under a domain. A target passes by its name, or when all of its addresses are in the networks.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAME = re.compile(r"(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.?", re.IGNORECASE)
REDIS_SCHEMES = ("redis", "rediss")
DEFAULT_REDIS_PORT = 6379
DEFAULT_POSTGRES_PORT = 5432


@dataclasses.dataclass(frozen=True)
class AllowList:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    names: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()  # ".example.com" for *.example.com

    def __bool__(self) -> bool:
        return bool(self.networks or self.names or self.domains)

    def permits(self, host: str, addresses: Sequence[Address]) -> bool:
        """Return whether the list names `host`, or holds every one of its addresses."""
        name = host.lower().rstrip(".")
        if name in self.names or any(name.endswith(domain) for domain in self.domains):
            return True
        return bool(addresses) and all(any(ip in net for net in self.networks) for ip in addresses)


@dataclasses.dataclass(frozen=True)
class Service:
    """One of Portwatch's own services: what it is, the setting it comes from, and where it listens."""

    label: str  # "broker" or "database"
    setting: str  # REDIS_URL or DATABASE_URL
    host: str
    port: int
    addresses: tuple[Address, ...] = ()  # filled in by the caller, who resolves `host`


def parse_allow_list(items: Iterable[str]) -> AllowList:
    """Return the allow-list the items of PORTWATCH_PROBE_ALLOW make; raise ValueError naming a bad item."""
    networks, names, domains = [], set(), []
    for item in (entry.strip() for entry in items):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        if not _NAME.fullmatch(item):
            raise ValueError(
                f"{item!r} is neither a network (10.0.0.0/8, 192.0.2.7) "
                "nor a host name (mail.example.com, *.example.com)"
            )
        name = item.lower().rstrip(".")
        if name.startswith("*."):
            domains.append(name[1:])
        else:
            names.add(name)
    return AllowList(tuple(networks), frozenset(names), tuple(domains))


def own_services(redis_url: str | None, database: Mapping[str, Any]) -> tuple[Service, ...]:
    """Return the broker and the database as host and port, when they are network servers."""
    services = []
    if redis_url:
        parts = urllib.parse.urlsplit(redis_url)
        if parts.scheme.lower() in REDIS_SCHEMES:
            services.append(
                Service("broker", "REDIS_URL", parts.hostname or "localhost", parts.port or DEFAULT_REDIS_PORT)
            )
    host = str(database.get("HOST") or "")
    if database.get("ENGINE", "").endswith("postgresql") and host and not host.startswith("/"):
        port = int(database.get("PORT") or DEFAULT_POSTGRES_PORT)
        services.append(Service("database", "DATABASE_URL", host, port))
    return tuple(services)


def address(text: str) -> Address:
    """Return an address as compared here: an IPv4-mapped IPv6 address is its IPv4 address."""
    ip = ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def refusal(
    host: str, port: int, addresses: Sequence[Address], *, allow: AllowList, own: Sequence[Service]
) -> str | None:
    """Return why /probe must not connect to `host` port `port` at `addresses`, or None when it may."""
    for service in own:
        if port == service.port and any(_same(ip, service.addresses) for ip in addresses):
            return (
                f"{host} port {port} is Portwatch's own {service.label} ({service.setting}); /probe does not "
                "connect to it unless PORTWATCH_PROBE_ALLOW_OWN_SERVICES=true"
            )
    if allow and not allow.permits(host, addresses):
        shown = ", ".join(map(str, addresses)) or "no address"
        return f"{host} ({shown}) is not in PORTWATCH_PROBE_ALLOW"
    return None


def _same(ip: Address, service: Sequence[Address]) -> bool:
    return ip in service or (_local(ip) and any(_local(other) for other in service))


def _local(ip: Address) -> bool:
    return ip.is_loopback or ip.is_unspecified
