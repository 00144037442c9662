"""Name resolution for every probe, on the event loop: the hosts file, then DNS through dnspython, cached by TTL.

`resolve(host, port, family, deadline=..., server=None)` returns (family, sockaddr) pairs, IPv4 first;
`configure(nameservers, hosts_file, resolv_conf)` sets the process-wide configuration and `configuration()` reads it.

`loop.getaddrinfo()` runs in the loop's default thread pool, a handful of threads on a small
machine; with thousands of probes in flight, a few names whose DNS is slow filled it and healthy
probes of other names timed out waiting for a thread. Here every query is a coroutine with a
socket of its own, so a slow name costs only its own probes' time.

As with nsswitch "hosts: files dns", a name in the hosts file resolves from it alone (when it
lists an address of the wanted family); other names go to the nameservers of resolv.conf (with
its search domains and ndots), or to those given to `configure()`. Both files are re-read when
they change. A service's own `resolver` option sends its names to that server only, without the
hosts file or search domains.

Answers are cached for their TTL (dnspython's LRU cache, and the resulting addresses per name;
one of each per set of nameservers), so 10,000 services on a few names do not each cost a DNS
round trip and a millisecond or two of CPU: a cache hit shows in the `resolve` phase as near zero,
as on a system with nscd or systemd-resolved, and the first probe after a TTL expires pays for a
real query. Negative answers are cached too, for the SOA minimum (five minutes without an SOA).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from monitor.probes.errors import ProbeTimeout, ResolutionError
from monitor.probes.options import parse_host_port

HOSTS_FILE = "/etc/hosts"
RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_NAMESERVER = "127.0.0.1"  # what glibc asks when resolv.conf is missing or names no nameserver
CACHE_SIZE = 50_000  # answers kept per cache, one per name and record type (A and AAAA of 25,000 names)
MAX_SERVER_RESOLVERS = 256  # distinct per-service `resolver` servers whose caches are kept

# IPv4 first: the connect loop in net.open_connection gives each address an equal share of the
# time left, so a host whose IPv6 is broken (a common fault) is still reached over IPv4 on time,
# while a host whose IPv4 is broken still gets its IPv6 tried after it.
_RECORD_TYPES = {socket.AF_INET: "A", socket.AF_INET6: "AAAA"}
_WANTED = {"any": (socket.AF_INET, socket.AF_INET6), "ipv4": (socket.AF_INET,), "ipv6": (socket.AF_INET6,)}

Address = tuple[int, str, int]  # family, address, IPv6 scope id (0 unless link-local with an interface)


@dataclass(frozen=True)
class Configuration:
    """Where the process-wide resolver reads its configuration; None nameservers means resolv.conf's."""

    nameservers: tuple[str, ...] | None = None  # "IP" or "IP:PORT", in the order asked
    hosts_file: str = HOSTS_FILE
    resolv_conf: str = RESOLV_CONF


OTHER_FAMILY_WAIT = 0.3  # seconds the other family's query may still take once one family has addresses


def configure(
    nameservers: Sequence[str] | None = None, hosts_file: str | None = None, resolv_conf: str | None = None
) -> None:
    """Replace the process-wide resolver; arguments left out (or an empty list) take the system's defaults.

    `nameservers` ("IP" or "IP:PORT") override resolv.conf's nameservers; its search domains and
    ndots still apply. Every cache starts empty, including those of per-service servers.
    Raise OptionsError naming `nameservers` for a server that is not an IP address.
    """
    global _system
    for text in nameservers or ():
        parse_host_port(text, default_port=53, field="nameservers")
    config = Configuration(
        tuple(nameservers) if nameservers else None, hosts_file or HOSTS_FILE, resolv_conf or RESOLV_CONF
    )
    with _servers_lock:
        _system = _System(config)
        _servers.clear()


def configuration() -> Configuration:
    """Return the process-wide configuration, e.g. to restore it after a test."""
    return _system.config


async def resolve(
    host: str, port: int, family: str = "any", *, deadline: float, server: str | None = None
) -> list[tuple[int, tuple]]:
    """Return (family, sockaddr) pairs for the name `host` (not an IP literal), IPv4 first, before `deadline`.

    1. Without `server`, a name the hosts file lists with an address of the wanted family
       resolves from it, without a query.
    2. Otherwise ask A and AAAA (only those of `family`: "any", "ipv4" or "ipv6") concurrently,
       each within the time left to `deadline` (a loop.time() value), through `server` ("IP" or
       "IP:PORT") or the configured nameservers, answering from cache while the TTL lasts.

    Raise ProbeTimeout when the deadline passes and ResolutionError when the name has no address.
    """
    families = _WANTED[family]
    if server is None:
        system = _system
        listed = [entry for entry in system.hosts().get(_hosts_key(host), ()) if entry[0] in families]
        if listed:
            return _sockaddrs(listed, port)
        upstream = system.upstream()
    else:
        upstream = _server_upstream(server)
    key = (host.lower(), families)
    addresses = upstream.recall(key)
    if addresses is None:
        addresses, expires = await _ask(upstream.resolver, host, families, deadline=deadline, server=server)
        upstream.remember(key, addresses, expires)
    return _sockaddrs(addresses, port)


def sockaddr(family: int, address: str, port: int, scope_id: int = 0) -> tuple:
    """Return the socket address `connect()` takes for `address` and `port`."""
    return (address, port) if family == socket.AF_INET else (address, port, 0, scope_id)


async def _ask(
    resolver: Any, host: str, families: tuple[int, ...], *, deadline: float, server: str | None
) -> tuple[list[Address], float]:
    """Return the addresses of `host` from A and AAAA queries run concurrently, and when the first answer expires.

    One family's failure (a server that refuses AAAA, a lost query) does not sink the other's
    answer; only NXDOMAIN, which is about the name, ends the lookup at once. Once one family has
    addresses, the others get `OTHER_FAMILY_WAIT` more, not the whole deadline (RFC 8305's idea).
    """
    through = f" through {server}" if server else ""
    queries = [_query(resolver, host, _RECORD_TYPES[kind], deadline, search=server is None) for kind in families]
    try:
        async with asyncio.timeout_at(deadline):
            outcomes = await _gather_answers(queries)
    except TimeoutError:
        raise ProbeTimeout(f"timed out resolving {host}{through}") from None
    except dns.resolver.NXDOMAIN:
        source = f" from {server}" if server else ""
        raise ResolutionError(f"cannot resolve {host}: no such domain (NXDOMAIN{source})") from None
    found: list[Address] = []
    missing: list[str] = []
    answers = []
    for kind, outcome in zip(families, outcomes, strict=True):
        if isinstance(outcome, BaseException) or outcome is None:
            continue
        answers.append(outcome)
        if outcome.rrset is None:
            missing.append(f"no {_RECORD_TYPES[kind]} record")
        else:
            found += [(kind, record.address, 0) for record in outcome.rrset]
    if not found:
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if errors and isinstance(errors[0], (TimeoutError, dns.exception.Timeout)):
            raise ProbeTimeout(f"timed out resolving {host}{through}")
        if errors:
            raise ResolutionError(f"cannot resolve {host}{through}: {errors[0]}")
        raise ResolutionError(f"cannot resolve {host}: {' and '.join(missing)}")
    return found, min(answer.expiration for answer in answers)


async def _query(resolver: Any, host: str, rdtype: str, deadline: float, *, search: bool):
    lifetime = deadline - asyncio.get_running_loop().time()
    if lifetime <= 0:
        raise TimeoutError
    return await resolver.resolve(host, rdtype, lifetime=lifetime, search=search, raise_on_no_answer=False)


async def _gather_answers(coroutines: list[Awaitable[Any]]) -> list[Any]:
    """Return each query's answer, exception, or None when it was given up on; raise NXDOMAIN at once.

    When a query comes back with addresses, the ones still running get OTHER_FAMILY_WAIT seconds.
    """
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        pending = set(tasks)
        limit = None
        while pending:
            done, pending = await asyncio.wait(pending, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break  # the others had their extra time
            for task in done:
                error = task.exception()
                if isinstance(error, dns.resolver.NXDOMAIN):
                    raise error
                if error is None and task.result().rrset is not None and limit is None:
                    limit = OTHER_FAMILY_WAIT
        return [_outcome(task) for task in tasks]
    finally:
        for task in tasks:
            task.cancel()


def _outcome(task: asyncio.Future) -> Any:
    if not task.done() or task.cancelled():
        return None
    return task.exception() or task.result()


def _sockaddrs(addresses: list[Address], port: int) -> list[tuple[int, tuple]]:
    ordered = sorted(dict.fromkeys(addresses), key=lambda entry: entry[0] != socket.AF_INET)  # stable: IPv4 first
    return [(kind, sockaddr(kind, address, port, scope_id)) for kind, address, scope_id in ordered]


class _Watched:
    """The parsed contents of a file, parsed again when its modification time, size or inode changes."""

    def __init__(self, path: str, parse: Callable[[str], Any]) -> None:
        self.path = path
        self._parse = parse
        self._stamp: object = object()  # matches no real stamp, so the first get() parses
        self._value: Any = None

    def get(self) -> Any:
        try:
            status = os.stat(self.path)
            stamp: tuple | None = (status.st_mtime_ns, status.st_size, status.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:  # stat before reading: a change in between is caught by the next stat
            self._value, self._stamp = self._parse(self.path), stamp
        return self._value


class _Upstream:
    """A dnspython resolver with its cache of answers, and the addresses of names it answered recently.

    dnspython's cache keeps every answer, negative ones included, but a hit there still cost
    ~70 us of CPU per record type on the 2-core test machine (parsing the name, a _Resolution, a
    task each for A and AAAA: ~170 us for both); `recall()` serves a name answered recently for
    a dict lookup (~10 us with the two stat() calls), until the shortest TTL of its answers ends.
    """

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver
        self.resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)
        self._recent: dict[tuple[str, tuple[int, ...]], tuple[float, list[Address]]] = {}

    def recall(self, key: tuple[str, tuple[int, ...]]) -> list[Address] | None:
        entry = self._recent.get(key)
        return entry[1] if entry is not None and entry[0] > time.time() else None

    def remember(self, key: tuple[str, tuple[int, ...]], addresses: list[Address], expires: float) -> None:
        if len(self._recent) >= CACHE_SIZE:  # crude but bounded; dnspython's LRU cache still holds the answers
            self._recent.clear()
        self._recent[key] = (expires, addresses)


class _System:
    """The process-wide resolver: a hosts file and a resolv.conf, each re-read when it changes."""

    def __init__(self, config: Configuration) -> None:
        self.config = config
        self._hosts = _Watched(config.hosts_file, _read_hosts)
        self._resolv_conf = _Watched(config.resolv_conf, self._build)

    def hosts(self) -> dict[str, list[Address]]:
        return self._hosts.get()

    def upstream(self) -> _Upstream:
        return self._resolv_conf.get()

    def _build(self, path: str) -> _Upstream:
        """Return a resolver configured from `path`, with empty caches (a changed file may name other servers)."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        try:
            resolver.read_resolv_conf(path)  # nameservers, search or domain, ndots, timeout, rotate
        except dns.resolver.NoResolverConfiguration:  # missing, or no nameserver line: glibc asks the local host
            resolver.nameservers = [DEFAULT_NAMESERVER]
        if self.config.nameservers:
            resolver.nameservers = [_nameserver(text) for text in self.config.nameservers]
        return _Upstream(resolver)


def _server_upstream(server: str) -> _Upstream:
    """Return the resolver, with caches of its own, for a per-service `resolver` option."""
    with _servers_lock:
        upstream = _servers.get(server)
        if upstream is not None:
            _servers.move_to_end(server)
            return upstream
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [_nameserver(server)]
        upstream = _servers[server] = _Upstream(resolver)
        if len(_servers) > MAX_SERVER_RESOLVERS:
            _servers.popitem(last=False)
        return upstream


def _nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    address, port = parse_host_port(text, default_port=53, field="nameservers")
    return dns.nameserver.Do53Nameserver(address, port)


def _read_hosts(path: str) -> dict[str, list[Address]]:
    """Return {name: addresses in file order} from a hosts file ("address name alias ..." lines, # comments)."""
    names: dict[str, list[Address]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.readlines()
    except OSError:  # no hosts file: every name goes to DNS, as with glibc
        return names
    for line in lines:
        fields = line.split("#", 1)[0].split()
        entry = _hosts_address(fields[0]) if len(fields) >= 2 else None
        if entry is None:
            continue
        for name in fields[1:]:
            names.setdefault(_hosts_key(name), []).append(entry)
    return names


def _hosts_address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 4:
        return (socket.AF_INET, str(address), 0)
    scope = address.scope_id or ""  # "fe80::1%eth0": connect() needs the interface's index
    try:
        scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope) if scope else 0
    except OSError:
        return None
    return (socket.AF_INET6, str(ipaddress.IPv6Address(text.split("%", 1)[0])), scope_id)


def _hosts_key(name: str) -> str:
    return name.rstrip(".").lower()


_servers: collections.OrderedDict[str, _Upstream] = collections.OrderedDict()
_servers_lock = threading.Lock()  # the web layer may run probes in threads of its own
_system = _System(Configuration())
