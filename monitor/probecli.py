"""The `probe` command without Django: parse a probe URL and flags, run one probe, print it three ways.

`parse_url()` is the one parser of probe URLs (also used by the dashboard's "add by URL").

`python manage.py probe URL` is a thin wrapper around `add_arguments()` and `run()`. Exit codes
follow the Nagios plugin convention in every output mode: 0 up, 1 warning, 2 down, 3 unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any, TextIO

import idna

from monitor.probes import PROTOCOLS, SCHEMES, OptionsError, Protocol, Result, Status, Target, run_probe
from monitor.probes.options import LoginOptions, TLSOptions
from monitor.probes.protocol import Flag

EXIT_CODES = {Status.UP: 0, Status.WARNING: 1, Status.DOWN: 2, Status.UNKNOWN: 3}
UNKNOWN = 3
NAGIOS_LABELS = {Status.UP: "OK", Status.WARNING: "WARNING", Status.DOWN: "CRITICAL", Status.UNKNOWN: "UNKNOWN"}

# Flags every protocol that reaches a host takes; the TLS and login ones only where the options have them.
CONNECTION_FLAGS = (
    Flag("--ip-family", "ip_family", "connect over this IP version only: any, ipv4 or ipv6", metavar="FAMILY"),
    Flag("--resolver", "resolver", "resolve the host through this DNS server", metavar="IP[:PORT]"),
)
TLS_FLAGS = (
    Flag("--sni", "tls_server_name", "TLS server name and the name verified; for HTTP also the Host", metavar="NAME"),
    Flag("--ca-file", "tls_ca_file", "trust the CAs in this PEM file instead of the system's", metavar="PATH"),
    Flag("--insecure", "tls_verify", "do not verify the certificate (facts still shown)", value=False),
    Flag("--warn-days", "tls_warn_days", "warn when the certificate expires within N days", metavar="N"),
)
LOGIN_FLAGS = (
    Flag("--username", "username", "log in as this user (the password comes from --password-env)", metavar="USER"),
    Flag("--plaintext-login", "allow_plaintext_login", "allow sending the password without TLS", value=True),
)
PASSWORD_ENV = "--password-env"  # the password is read from an environment variable, never from the command line


class UsageError(ValueError):
    """The URL or a flag cannot make a probe; the message says what is wrong."""


@dataclass(frozen=True)
class ParsedURL:
    """What a probe URL names: smtps://mail.example.com is smtp, implicit TLS, mail.example.com, port 465."""

    scheme: str
    protocol: str
    tls_mode: str
    host: str
    port: int  # the URL's port, else the scheme's standard one
    options: dict[str, Any]  # raw options from the URL's path and query (http path, dns query name and type)


@dataclass(frozen=True)
class ProbeRequest:
    url: str
    protocol: str
    target: Target
    options: Any
    timeout: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's flags: the common ones, then each protocol's own, read from the registry."""
    parser.add_argument(
        "url",
        help=f"what to probe, e.g. smtp://mail.example.com:587, imaps://host, https://host/health; "
        f"schemes: {', '.join(SCHEMES)}",
    )
    parser.add_argument("--starttls", action="store_true", help="upgrade to TLS with STARTTLS where the protocol can")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole probe (default 10)")
    for flag, help_text in _all_flags().values():
        if flag.is_switch:
            parser.add_argument(flag.name, dest=flag.dest, action="store_true", help=help_text)
        else:
            parser.add_argument(flag.name, dest=flag.dest, metavar=flag.metavar, help=help_text)
    parser.add_argument(
        PASSWORD_ENV, metavar="VAR", help="read the login password from this environment variable (never a flag)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the result as one JSON object")
    output.add_argument("--nagios", action="store_true", help="print a Nagios plugin line with perfdata")


def _all_flags() -> dict[str, tuple[Flag, str]]:
    """Return each flag name's flag and help, which names the protocols it applies to and what it means for each.

    Protocols may share a flag name only for the same option (`--expect` sets `expect` for udp and telnet alike).
    """
    flags: dict[str, tuple[Flag, str]] = {flag.name: (flag, flag.help) for flag in CONNECTION_FLAGS}
    owners: dict[str, dict[str, list[str]]] = {}  # flag name -> help -> protocols
    first: dict[str, tuple[Flag, str]] = {}
    for key, protocol in PROTOCOLS.items():
        for flag in _flags_of(protocol):
            if flag.name in flags:
                continue
            known, declared_by = first.setdefault(flag.name, (flag, key))
            if (known.option, known.value) != (flag.option, flag.value):
                raise ValueError(f"{key} declares {flag.name} for {flag.option}, {declared_by} for {known.option}")
            owners.setdefault(flag.name, {}).setdefault(flag.help, []).append(key)
    for name, (flag, _) in first.items():
        flags[name] = (flag, "; ".join(f"{', '.join(keys)}: {text}" for text, keys in owners[name].items()))
    return flags


def _flags_of(protocol: Protocol) -> tuple[Flag, ...]:
    """Return the flags that set an option of `protocol`."""
    flags = CONNECTION_FLAGS + protocol.flags
    if issubclass(protocol.options, TLSOptions):
        flags += TLS_FLAGS
    if issubclass(protocol.options, LoginOptions):
        flags += LOGIN_FLAGS
    return flags


def parse_url(url: str) -> ParsedURL:
    """Return the protocol, TLS mode, host, port and options a probe URL names; raise UsageError saying what is wrong.

    The one parser of probe URLs: the `probe` command and the dashboard's "add by URL" both use it.
    """
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"unknown URL scheme {scheme + ':' if scheme else 'in ' + repr(url)}; use one of: {', '.join(SCHEMES)}"
        )
    protocol, declared = SCHEMES[scheme]
    host = _host(parts, url)
    try:
        port = parts.port or declared.port or 0
    except ValueError:
        raise UsageError(f"the port in {url!r} must be a number from 1 to 65535") from None
    if not port and protocol.needs_port:
        raise UsageError(f"{scheme} URLs need a port, e.g. {scheme}://{host}:1234")
    try:
        options = protocol.url_options(parts)
        protocol.parse_options(options)
    except OptionsError as error:
        # A DNS URL's ?type=BOGUS is the URL's fault, whatever flags or form fields come with it; an option
        # the URL cannot give (udp's send) may still come from them.
        if error.field == "url":
            raise UsageError(f"{_without_password(parts)}: {error.message}") from None
        if error.field in options:
            raise UsageError(f"{error.field}: {error.message}") from None
    return ParsedURL(scheme, protocol.key, declared.tls_mode, host, port, options)


def build_request(args: argparse.Namespace) -> ProbeRequest:
    """Return the probe the URL and flags describe; raise UsageError saying what is wrong."""
    parsed = parse_url(args.url)
    scheme, tls_mode = parsed.scheme, parsed.tls_mode
    protocol = PROTOCOLS[parsed.protocol]
    if args.starttls:
        if "starttls" not in protocol.tls_modes:
            with_starttls = ", ".join(key for key, known in PROTOCOLS.items() if "starttls" in known.tls_modes)
            raise UsageError(f"--starttls applies to {with_starttls} URLs, not {scheme}")
        if tls_mode == "implicit":
            raise UsageError(f"--starttls cannot be combined with {scheme}, which is already TLS from the start")
        tls_mode = "starttls"
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    own = _flags_of(protocol)
    names = {flag.name for flag in own}
    for flag, _ in _all_flags().values():
        given = getattr(args, flag.dest, None)
        if given not in (None, False) and flag.name not in names:
            raise UsageError(f"{flag.name} does not apply to {scheme} URLs")
    raw = dict(parsed.options)
    for flag in own:
        given = getattr(args, flag.dest, None)
        if flag.is_switch and given:
            raw[flag.option] = flag.value
        elif not flag.is_switch and given is not None:
            raw[flag.option] = given
    if getattr(args, "ca_file", None) is not None and not os.path.isfile(args.ca_file):
        raise UsageError(f"--ca-file {args.ca_file}: no such file")
    password_env = getattr(args, "password_env", None)
    if password_env is not None:
        if not issubclass(protocol.options, LoginOptions):
            raise UsageError(f"{PASSWORD_ENV} does not apply to {scheme} URLs")
        if password_env not in os.environ:
            raise UsageError(f"{PASSWORD_ENV} {password_env}: no such environment variable")
        raw["password"] = os.environ[password_env]
    try:
        options = protocol.parse_options(raw)
    except OptionsError as error:
        flag = next((flag.name for flag in own if flag.option == error.field), error.field)
        if error.field == "password":
            flag = PASSWORD_ENV
        raise UsageError(f"{flag}: {error.message}") from None
    return ProbeRequest(args.url, protocol.key, Target(parsed.host, parsed.port, tls_mode), options, args.timeout)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the probe the arguments describe, print it, and return the Nagios exit code."""
    try:
        request = build_request(args)
    except UsageError as error:
        if args.nagios:
            out.write(f"PORTWATCH UNKNOWN - {error}\n")
        else:
            out.write(f"error: {error}\n")
        return UNKNOWN
    result = asyncio.run(run_probe(request.protocol, request.target, request.options, timeout=request.timeout))
    if args.json:
        out.write(json.dumps(result.to_dict()) + "\n")
    elif args.nagios:
        out.write(nagios_line(request, result) + "\n")
    else:
        out.write(human_summary(request, result))
    return EXIT_CODES[result.status]


def nagios_line(request: ProbeRequest, result: Result) -> str:
    """Return `SERVICE STATE - text | perfdata`, with every phase and the days left of the earliest certificate."""
    label = request.protocol.upper()
    where = result.address or request.target.host
    where += f" port {request.target.port}" if request.target.port else ""
    text = result.reason if result.status is not Status.UP else f"{result.phases.total:.3f} s response time on {where}"
    perf = [f"time={result.phases.total:.6f}s;;;0"]
    perf += [f"{name}={getattr(result.phases, name):.6f}s;;;0" for name in result.phases.NAMES]
    days = _chain_days_left(result)
    if days is not None:
        perf.append(f"cert_days={days:.1f};{getattr(request.options, 'tls_warn_days', '')};0")
    return f"{label} {NAGIOS_LABELS[result.status]} - {text} | {' '.join(perf)}"


def human_summary(request: ProbeRequest, result: Result) -> str:
    lines = [f"{request.url}  {result.status.upper()}" + (f"  [{result.failure}]" if result.failure else "")]
    lines.append(f"  reason     {result.reason}")
    tls = {"none": "no TLS", "starttls": "STARTTLS", "implicit": "implicit TLS"}[request.target.tls]
    port = f" port {request.target.port}" if request.target.port else ""  # icmp has none
    lines.append(f"  target     {request.protocol} {request.target.host}{port}, {tls}")
    if result.address:
        lines.append(f"  address    {result.address}")
    if result.banner:
        lines.append(f"  banner     {result.banner}")
    phases = "  ".join(
        f"{name} {getattr(result.phases, name) * 1000:.1f} ms" for name in (*result.phases.NAMES, "total")
    )
    lines.append(f"  phases     {phases}")
    if result.tls is not None:
        facts = result.tls
        verdict = "verified" if facts.verified else f"NOT verified ({facts.verify_error or 'verification off'})"
        lines.append(f"  tls        {facts.version or 'handshake incomplete'} {facts.cipher or ''}, {verdict}")
        lines.append(f"  subject    {facts.subject}")
        lines.append(f"  issuer     {facts.issuer}")
        lines.append(f"  names      {', '.join(facts.sans) or '(none)'}")
        lines.append(
            f"  valid      {facts.not_before:%Y-%m-%d} to {facts.not_after:%Y-%m-%d} ({facts.days_left:.1f} days left)"
        )
        lines.append(f"  sha256     {facts.fingerprint_sha256}")
        if facts.chain_expiry_role not in (None, "leaf"):
            lines.append(
                f"  chain      {_chain_expiry(facts.to_dict())}, {facts.chain_expiry_role} {facts.chain_expiry_subject}"
            )
    hops = result.details.get("hops") or []
    for number, hop in enumerate(hops if len(hops) > 1 else [], start=1):
        lines.append(f"  hop {number:<6} {_hop(hop)}")
    for key, value in result.details.items():
        if key == "hops" or (key == "redirects" and len(hops) > 1):  # shown above, hop by hop
            continue
        lines.append(f"  {key:<10} {_compact(value)}")
    return "\n".join(lines) + "\n"


def _chain_days_left(result: Result) -> float | None:
    """Return the days left of the first certificate to expire in any chain the probe saw, every hop included."""
    days = [result.tls.chain_days_left] if result.tls is not None else []
    days += [hop["tls"]["chain_days_left"] for hop in result.details.get("hops") or [] if hop.get("tls")]
    return min(days, default=None)


def _chain_expiry(tls: dict[str, Any]) -> str:
    return f"expires {(tls['chain_expiry'] or tls['not_after'])[:10]} ({tls['chain_days_left']:.1f} days left)"


def _hop(hop: dict[str, Any]) -> str:
    """Return one line for a hop of a redirect chain: status, URL, address and the chain's expiry."""
    text = f"{hop.get('status', '---')} {hop['url']}"
    if hop.get("address"):
        text += f"  {hop['address']}"
    tls = hop.get("tls")
    if tls:
        verdict = "verified" if tls["verified"] else "NOT verified"
        text += f"  TLS {tls['server_name']} {verdict}, chain {_chain_expiry(tls)}"
    return text


def _without_password(parts: urllib.parse.SplitResult) -> str:
    """Return the URL to quote in an error, its password (if someone put one there) replaced by ***."""
    if parts.password is None:
        return repr(parts.geturl())
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return repr(parts._replace(netloc=netloc).geturl())


def _host(parts: urllib.parse.SplitResult, url: str) -> str:
    host = parts.hostname
    if not host:
        raise UsageError(f"no host in {url!r}; write it like smtp://mail.example.com")
    if ":" in host:  # an IPv6 literal, from [...] in the URL
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as error:
        raise UsageError(f"{host!r} is not a valid host name: {error}") from None


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" if v not in ("", None) else str(k) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
