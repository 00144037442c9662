"""blackbox_exporter modules, in its own YAML shape, mapped onto Portwatch's protocols and options.

Exposes `load(path) -> Modules`, `Module` (its `request(target)` turns a /probe target into the
engine's `Target` and options), `ModuleError`, `ModulesFileError` and `parse_duration()`.

Decisions:
- Only what Portwatch does the same way is mapped. Any other option, and any key blackbox does not
  know, is a `ModuleError` naming it (HTTP 400 at /probe), never silently ignored: a module asking
  for a check Portwatch would skip must not report success.
- Each module is mapped on its own when the file is read, so one module Portwatch cannot map answers
  400 with its reason while the others work. The file is read again when it changes (mtime, size).
- blackbox's preferred_ip_protocol (ip6 by default) with its fallback on maps to "any", where Portwatch
  tries IPv4 first and then IPv6; with the fallback off, to that family only.
- As in blackbox: a target without a scheme is http://; DNS query_type defaults to ANY and valid_rcodes
  to NOERROR; a tcp or dns target is host:port (dns: port 53 by default); an icmp target is a bare host.
- An icmp module sends one echo request, as blackbox does (its #115), with blackbox's 28-byte payload
  unless payload_size says otherwise. What Portwatch's ICMP socket cannot set (dont_fragment true, ttl,
  source_ip_address) is refused: the module would pass without the check it asks for.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from monitor.metrics import query_response
from monitor.metrics.query_response import Expect, ModuleError
from monitor.probecli import UsageError, parse_url
from monitor.probes import ConnectionOptions, OptionsError, Target, parse_options

__all__ = ["Module", "ModuleError", "Modules", "ModulesFileError", "load", "parse_duration"]

PROBERS = ("tcp", "http", "dns", "icmp")  # blackbox's probers that Portwatch speaks
OTHER_PROBERS = ("grpc",)  # blackbox's, not Portwatch's
MODULE_KEYS = ("prober", "timeout", *PROBERS, *OTHER_PROBERS)
TCP_KEYS = ("query_response", "tls", "tls_config", "preferred_ip_protocol", "ip_protocol_fallback")
HTTP_KEYS = (
    "valid_status_codes",
    "method",
    "headers",
    "fail_if_body_not_matches_regexp",
    "no_follow_redirects",
    "follow_redirects",
    "enable_http2",
    "tls_config",
    "preferred_ip_protocol",
    "ip_protocol_fallback",
)
DNS_KEYS = (
    "query_name",
    "query_type",
    "query_class",
    "valid_rcodes",
    "transport_protocol",
    "recursion_desired",
    "preferred_ip_protocol",
    "ip_protocol_fallback",
)
ICMP_KEYS = (
    "preferred_ip_protocol",
    "ip_protocol_fallback",
    "payload_size",
    "dont_fragment",
    "ttl",
    "source_ip_address",
)
BLACKBOX_PAYLOAD_SIZE = 28  # len("Prometheus Blackbox Exporter"), what blackbox sends when payload_size is 0
# icmp options Portwatch's socket cannot honour -> why; refused when set to anything but blackbox's default.
ICMP_REFUSED = {
    "dont_fragment": "Portwatch cannot set the don't-fragment flag, so a path MTU check would pass untested; "
    "leave it out or false",
    "ttl": "Portwatch sends with the system's TTL (hop limit) and cannot set another; leave it out or 0",
    "source_ip_address": "Portwatch sends from the address the system's routing picks and cannot bind another",
}
TLS_CONFIG_KEYS = {"insecure_skip_verify": "tls_verify", "server_name": "tls_server_name", "ca_file": "tls_ca_file"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOST_PORT = re.compile(r"(\[[^\]]+\]|[^:\[\]/?#@\s]+):(\d+)")
_HOST = re.compile(r"\[[^\]]+\]|[^:\[\]/?#@\s]+")


class ModulesFileError(Exception):
    """The modules file cannot be read or is not in blackbox's shape; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Module:
    """One blackbox module as Portwatch runs it."""

    name: str
    prober: str  # blackbox's prober (tcp, http, dns, icmp): it decides which blackbox series an answer has
    protocol: str  # Portwatch's protocol key
    tls_mode: str  # for http the target's scheme decides instead
    options: Mapping[str, Any]  # Portwatch's raw options, already checked with parse_options()
    origins: Mapping[str, str]  # Portwatch option -> the blackbox option it came from, for messages
    timeout: float | None = None  # seconds; None lets the scrape's timeout decide, as in blackbox
    expects: tuple[Expect, ...] = ()  # query_response lines checked against what the dialogue recorded

    def request(self, target: str) -> tuple[Target, ConnectionOptions]:
        """Return the engine's target and options for a /probe `target`; raise ModuleError saying what is wrong."""
        text = target.strip()
        try:
            if self.prober == "http":
                parsed = parse_url(text if "://" in text else f"http://{text}")
                if parsed.protocol != "http":
                    raise UsageError(f"module {self.name!r} probes http, so the target must be an http(s) URL")
                tls_mode = parsed.tls_mode
            elif self.prober == "icmp":
                parsed, tls_mode = parse_url(f"icmp://{_bare_host(text, self.name)}"), "none"
            else:
                if not _HOST_PORT.fullmatch(text) and not (self.prober == "dns" and "/" not in text):
                    raise UsageError(f"module {self.name!r} uses the {self.prober} prober, so the target is host:port")
                parsed = parse_url(f"{self.prober}://{text}")
                if parsed.options:
                    raise UsageError(f"module {self.name!r} uses the {self.prober} prober, so the target is host:port")
                tls_mode = self.tls_mode
        except UsageError as error:
            raise ModuleError(f"target {target!r}: {error}") from None
        raw = {**self.options, **parsed.options}
        return Target(parsed.host, parsed.port, tls_mode), _options(self.name, self.protocol, raw, self.origins)


@dataclasses.dataclass(frozen=True)
class Modules:
    path: Path
    modules: Mapping[str, Module | ModuleError]

    def get(self, name: str) -> Module:
        """Return the module `name`; raise ModuleError for one the file lacks or Portwatch cannot map."""
        module = self.modules.get(name)
        if module is None:
            known = ", ".join(sorted(self.modules)) or "none"
            raise ModuleError(f"unknown module {name!r}; {self.path} has: {known}")
        if isinstance(module, ModuleError):
            raise module
        return module


def load(path: Path | str) -> Modules:
    """Return the modules of the file at `path`, read again only when it changed; raise ModulesFileError."""
    try:
        stat = os.stat(path)
    except OSError as error:
        raise ModulesFileError(f"cannot read the probe modules file {path}: {error.strerror}") from None
    return _load(Path(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load(path: Path, _mtime: int, _size: int) -> Modules:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModulesFileError(f"cannot read the probe modules file {path}: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ModulesFileError(f"the probe modules file {path} is not valid YAML: {error}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("modules"), Mapping):
        raise ModulesFileError(f"the probe modules file {path} must have a mapping `modules:`, as blackbox.yml does")
    modules: dict[str, Module | ModuleError] = {}
    for name, raw in data["modules"].items():
        try:
            modules[str(name)] = map_module(str(name), raw)
        except ModuleError as error:
            modules[str(name)] = error
    return Modules(path, modules)


def map_module(name: str, raw: Any) -> Module:
    """Return the Portwatch form of one blackbox module; raise ModuleError naming what cannot be mapped."""
    where = f"module {name!r}"
    section = _mapping(raw, where)
    _known(section, MODULE_KEYS, f"{where}: ", "a blackbox module has")
    prober = section.get("prober")
    if prober in OTHER_PROBERS:
        raise ModuleError(f"{where}: prober {prober} is not one Portwatch has; it probes with {', '.join(PROBERS)}")
    if prober not in PROBERS:
        raise ModuleError(f"{where}: prober must be one of {', '.join(PROBERS + OTHER_PROBERS)}, not {prober!r}")
    for other in (*PROBERS, *OTHER_PROBERS):
        if other != prober and other in section:
            raise ModuleError(f"{where}: has {other} options, but its prober is {prober}")
    timeout = parse_duration(section["timeout"], f"{where}: timeout") if "timeout" in section else None
    where = f"{where}: {prober}"
    options, origins = {}, {}
    body = _mapping(section.get(prober) or {}, where)
    if prober == "http":
        protocol, tls_mode, expects = "http", "none", ()
        _http(body, where, options, origins)
    elif prober == "dns":
        protocol, tls_mode, expects = "dns", "none", ()
        _dns(body, where, options, origins)
    elif prober == "icmp":
        protocol, tls_mode, expects = "icmp", "none", ()
        _icmp(body, where, options, origins)
    else:
        protocol, tls_mode, expects = _tcp(body, where, options, origins)
    _options(name, protocol, options, origins)  # refused now, not at the first scrape
    return Module(name, prober, protocol, tls_mode, options, origins, timeout, expects)


def parse_duration(value: Any, where: str) -> float:
    """Return the seconds in a Go duration such as "5s", "1m30s" or "500ms" (a bare number is seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ModuleError(f"{where}: must be a duration such as 5s, 1m30s or 500ms, not {value!r}")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ModuleError(f"{where}: must be longer than 0s, not {value!r}")
    return seconds


def _tcp(body: Mapping, where: str, options: dict, origins: dict) -> tuple[str, str, tuple[Expect, ...]]:
    _known(body, TCP_KEYS, f"{where}.", "Portwatch maps")
    _ip_family(body, where, options, origins)
    tls = _bool(body.get("tls", False), f"{where}.tls")
    _tls_config(body.get("tls_config"), f"{where}.tls_config", options, origins)
    steps = body.get("query_response") or []
    if not isinstance(steps, list):
        raise ModuleError(f"{where}.query_response: must be a list of steps")
    script = query_response.map_steps(steps, f"{where}.query_response", tls=tls)
    options.update(script.options)
    origins.update(dict.fromkeys(script.options, f"{where}.query_response"))
    return script.protocol, script.tls_mode, script.expects


def _http(body: Mapping, where: str, options: dict, origins: dict) -> None:
    _known(body, HTTP_KEYS, f"{where}.", "Portwatch maps")
    _ip_family(body, where, options, origins)
    _tls_config(body.get("tls_config"), f"{where}.tls_config", options, origins)
    codes = body.get("valid_status_codes") or []
    if not isinstance(codes, list) or not all(isinstance(code, int) and not isinstance(code, bool) for code in codes):
        raise ModuleError(f"{where}.valid_status_codes: must be a list of status codes, e.g. [200, 301]")
    if codes:
        _set(options, origins, "expect_status", ",".join(map(str, codes)), f"{where}.valid_status_codes")
    if "method" in body:
        _set(options, origins, "method", str(body["method"]).upper(), f"{where}.method")
    for header, value in _mapping(body.get("headers") or {}, f"{where}.headers").items():
        if str(header).lower() != "host":
            raise ModuleError(
                f"{where}.headers.{header}: Portwatch sends no custom request headers; only Host maps "
                "(to the Host header and TLS server name)"
            )
        _set(options, origins, "tls_server_name", str(value), f"{where}.headers.{header}")
    patterns = body.get("fail_if_body_not_matches_regexp") or []
    if not isinstance(patterns, list) or not all(isinstance(item, str) for item in patterns):
        raise ModuleError(f"{where}.fail_if_body_not_matches_regexp: must be a list of regular expressions")
    for index, pattern in enumerate(patterns):
        query_response.compile_pattern(pattern, f"{where}.fail_if_body_not_matches_regexp[{index}]")
    if len(patterns) == 1:
        _set(options, origins, "regex", patterns[0], f"{where}.fail_if_body_not_matches_regexp")
    elif patterns:  # every one must match: lookaheads from the start of the body, tried once (\A)
        combined = r"\A" + "".join(rf"(?=[\s\S]*?(?:{pattern}))" for pattern in patterns)
        _set(options, origins, "regex", combined, f"{where}.fail_if_body_not_matches_regexp")
    follow = _bool(body.get("follow_redirects", True), f"{where}.follow_redirects")
    if not follow or _bool(body.get("no_follow_redirects", False), f"{where}.no_follow_redirects"):
        _set(options, origins, "follow_redirects", False, f"{where}.follow_redirects")
    if _bool(body.get("enable_http2", False), f"{where}.enable_http2"):
        raise ModuleError(f"{where}.enable_http2: Portwatch speaks HTTP/1.1 only; leave it out or set it false")


def _dns(body: Mapping, where: str, options: dict, origins: dict) -> None:
    _known(body, DNS_KEYS, f"{where}.", "Portwatch maps")
    _ip_family(body, where, options, origins)
    name = body.get("query_name")
    if not isinstance(name, str) or not name.strip():
        raise ModuleError(f"{where}.query_name: is required, as blackbox requires it")
    _set(options, origins, "query_name", name, f"{where}.query_name")
    _set(options, origins, "record_type", str(body.get("query_type") or "ANY"), f"{where}.query_type")
    if str(body.get("query_class", "IN")).upper() != "IN":
        raise ModuleError(f"{where}.query_class: Portwatch asks class IN only, not {body['query_class']!r}")
    codes = body.get("valid_rcodes") or ["NOERROR"]
    if not isinstance(codes, list) or len(codes) != 1:
        raise ModuleError(f"{where}.valid_rcodes: Portwatch expects exactly one response code, not {codes!r}")
    _set(options, origins, "expected_rcode", str(codes[0]), f"{where}.valid_rcodes")
    transport = body.get("transport_protocol", "udp")
    _set(options, origins, "transport", str(transport), f"{where}.transport_protocol")
    if not _bool(body.get("recursion_desired", True), f"{where}.recursion_desired"):
        raise ModuleError(f"{where}.recursion_desired: Portwatch always asks for recursion; leave it out or true")


def _icmp(body: Mapping, where: str, options: dict, origins: dict) -> None:
    if "hop_limit" in body:  # a name people try: blackbox's ttl is the IPv6 hop limit too
        raise ModuleError(f"{where}.hop_limit: not a blackbox option (its ttl sets the hop limit); Portwatch sets none")
    _known(body, ICMP_KEYS, f"{where}.", "Portwatch maps")
    for key, reason in ICMP_REFUSED.items():
        if body.get(key) not in (None, False, 0, ""):  # blackbox's defaults: not set
            raise ModuleError(f"{where}.{key}: {reason}")
    _ip_family(body, where, options, origins)
    size = body.get("payload_size") or BLACKBOX_PAYLOAD_SIZE
    if not isinstance(size, int) or isinstance(size, bool):
        raise ModuleError(f"{where}.payload_size: must be a number of bytes, not {size!r}")
    _set(options, origins, "payload_size", size, f"{where}.payload_size")
    _set(options, origins, "count", 1, where)  # one echo request, as blackbox sends (its #115)


def _bare_host(text: str, module: str) -> str:
    """Return an icmp target as a URL's host part (an IPv6 literal in brackets); raise UsageError for host:port."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        if _HOST.fullmatch(text):
            return text
        raise UsageError(f"module {module!r} uses the icmp prober, so the target is a host without a port") from None
    return f"[{text}]"


def _ip_family(body: Mapping, where: str, options: dict, origins: dict) -> None:
    preferred = body.get("preferred_ip_protocol") or "ip6"
    if preferred not in ("ip4", "ip6"):
        raise ModuleError(f"{where}.preferred_ip_protocol: must be ip4 or ip6, not {preferred!r}")
    if not _bool(body.get("ip_protocol_fallback", True), f"{where}.ip_protocol_fallback"):
        family = "ipv4" if preferred == "ip4" else "ipv6"
        _set(options, origins, "ip_family", family, f"{where}.preferred_ip_protocol")


def _tls_config(raw: Any, where: str, options: dict, origins: dict) -> None:
    config = _mapping(raw or {}, where)
    for key, value in config.items():
        if key not in TLS_CONFIG_KEYS:
            raise ModuleError(f"{where}.{key}: Portwatch cannot map this option; it maps {', '.join(TLS_CONFIG_KEYS)}")
        if key == "insecure_skip_verify":
            if _bool(value, f"{where}.{key}"):
                _set(options, origins, "tls_verify", False, f"{where}.{key}")
        else:
            _set(options, origins, TLS_CONFIG_KEYS[key], str(value), f"{where}.{key}")


def _options(name: str, protocol: str, raw: Mapping[str, Any], origins: Mapping[str, str]) -> ConnectionOptions:
    try:
        return parse_options(protocol, raw)
    except OptionsError as error:
        raise ModuleError(f"{origins.get(error.field, f'module {name!r}: {error.field}')}: {error.message}") from None


def _set(options: dict, origins: dict, option: str, value: Any, origin: str) -> None:
    options[option] = value
    origins[option] = origin


def _known(section: Mapping, keys: tuple[str, ...], prefix: str, what: str) -> None:
    for key in section:
        if key not in keys:
            raise ModuleError(f"{prefix}{key}: Portwatch cannot map this option; {what} {', '.join(keys)}")


def _mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ModuleError(f"{where}: must be a mapping of options, not {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ModuleError(f"{where}: must be true or false, not {value!r}")
    return value
