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

from monitor.probes import PROTOCOLS, SCHEMES, OptionsError, Result, Status, Target, parse_options, run_probe

EXIT_CODES = {Status.UP: 0, Status.WARNING: 1, Status.DOWN: 2, Status.UNKNOWN: 3}
UNKNOWN = 3
NAGIOS_LABELS = {Status.UP: "OK", Status.WARNING: "WARNING", Status.DOWN: "CRITICAL", Status.UNKNOWN: "UNKNOWN"}
DNS_QUERY_PARAMETERS = {"type": "record_type", "transport": "transport", "rcode": "expected_rcode"}

# Flag destination -> option name, for flags that set a protocol option.
FLAG_OPTIONS = {
    "sni": "tls_server_name",
    "ca_file": "tls_ca_file",
    "warn_days": "tls_warn_days",
    "expect_status": "expect_status",
    "keyword": "keyword",
    "method": "method",
    "expect_answer": "expected_answer",
    "ip_family": "ip_family",
    "resolver": "resolver",
}

# Option name -> the flag that sets it, so an option's error names what the user typed.
OPTION_FLAGS = {option: "--" + flag.replace("_", "-") for flag, option in FLAG_OPTIONS.items()}
OPTION_FLAGS |= {"tls_verify": "--insecure", "follow_redirects": "--no-follow"}


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
    parser.add_argument(
        "url", help="what to probe, e.g. smtp://mail.example.com:587, imaps://host, https://host/health"
    )
    parser.add_argument("--starttls", action="store_true", help="upgrade to TLS with STARTTLS (smtp, pop3, imap)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole probe (default 10)")
    parser.add_argument("--sni", metavar="NAME", help="TLS server name and the name verified; for HTTP also the Host")
    parser.add_argument("--ca-file", metavar="PATH", help="trust the CAs in this PEM file instead of the system's")
    parser.add_argument("--insecure", action="store_true", help="do not verify the certificate (facts still shown)")
    parser.add_argument("--warn-days", type=int, metavar="N", help="warn when the certificate expires within N days")
    parser.add_argument("--expect-status", metavar="CODES", help="HTTP statuses that count as up, e.g. 200,301 or 2xx")
    parser.add_argument("--keyword", help="HTTP: text the body must contain")
    parser.add_argument("--method", help="HTTP method (default GET)")
    parser.add_argument("--no-follow", action="store_true", help="HTTP: do not follow redirects")
    parser.add_argument("--expect-answer", metavar="TEXT", help="DNS: a record the answer must contain")
    parser.add_argument("--ip-family", choices=("any", "ipv4", "ipv6"), help="connect over this IP version only")
    parser.add_argument("--resolver", metavar="IP[:PORT]", help="resolve the host through this DNS server")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the result as one JSON object")
    output.add_argument("--nagios", action="store_true", help="print a Nagios plugin line with perfdata")


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
    protocol, tls_mode, port = SCHEMES[scheme]
    host = _host(parts, url)
    try:
        port = parts.port or port
    except ValueError:
        raise UsageError(f"the port in {url!r} must be a number from 1 to 65535") from None
    if not port:
        raise UsageError(f"{scheme} URLs need a port, e.g. {scheme}://{host}:1234")
    options = _url_options(protocol, parts, url)
    try:  # a DNS URL's ?type=BOGUS is the URL's fault, whatever flags or form fields come with it
        parse_options(protocol, options)
    except OptionsError as error:
        raise UsageError(f"{error.field}: {error.message}") from None
    return ParsedURL(scheme, protocol, tls_mode, host, port, options)


def build_request(args: argparse.Namespace) -> ProbeRequest:
    """Return the probe the URL and flags describe; raise UsageError saying what is wrong."""
    parsed = parse_url(args.url)
    scheme, protocol, tls_mode, host, port = parsed.scheme, parsed.protocol, parsed.tls_mode, parsed.host, parsed.port
    if args.starttls:
        if "starttls" not in PROTOCOLS[protocol].TLS_MODES:
            raise UsageError(f"--starttls applies to smtp, pop3 and imap URLs, not {scheme}")
        if tls_mode == "implicit":
            raise UsageError(f"--starttls cannot be combined with {scheme}, which is already TLS from the start")
        tls_mode = "starttls"
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    raw = dict(parsed.options)
    raw.update(
        {option: getattr(args, flag) for flag, option in FLAG_OPTIONS.items() if getattr(args, flag) is not None}
    )
    if args.insecure:
        raw["tls_verify"] = False
    if args.no_follow:
        raw["follow_redirects"] = False
    if args.ca_file is not None and not os.path.isfile(args.ca_file):
        raise UsageError(f"--ca-file {args.ca_file}: no such file")
    try:
        options = parse_options(protocol, raw)
    except OptionsError as error:
        flag = OPTION_FLAGS.get(error.field, error.field)
        if "unknown option" in error.message:
            raise UsageError(f"{flag} does not apply to {scheme} URLs") from None
        raise UsageError(f"{flag}: {error.message}") from None
    return ProbeRequest(args.url, protocol, Target(host, port, tls_mode), options, args.timeout)


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
    where = f"{result.address or request.target.host} port {request.target.port}"
    text = result.reason if result.status is not Status.UP else f"{result.phases.total:.3f} s response time on {where}"
    perf = [f"time={result.phases.total:.6f}s;;;0"]
    perf += [f"{name}={getattr(result.phases, name):.6f}s;;;0" for name in result.phases.NAMES]
    days = _chain_days_left(result)
    if days is not None:
        perf.append(f"cert_days={days:.1f};{request.options.tls_warn_days};0")
    return f"{label} {NAGIOS_LABELS[result.status]} - {text} | {' '.join(perf)}"


def human_summary(request: ProbeRequest, result: Result) -> str:
    lines = [f"{request.url}  {result.status.upper()}" + (f"  [{result.failure}]" if result.failure else "")]
    lines.append(f"  reason     {result.reason}")
    tls = {"none": "no TLS", "starttls": "STARTTLS", "implicit": "implicit TLS"}[request.target.tls]
    lines.append(f"  target     {request.protocol} {request.target.host} port {request.target.port}, {tls}")
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


def _url_options(protocol: str, parts: urllib.parse.SplitResult, url: str) -> dict[str, Any]:
    if protocol == "http":
        path = parts.path or "/"
        return {"path": path + (f"?{parts.query}" if parts.query else "")}
    if protocol == "dns":
        raw: dict[str, Any] = {}
        name = parts.path.strip("/")
        if name:
            raw["query_name"] = name
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if key not in DNS_QUERY_PARAMETERS:
                raise UsageError(f"unknown DNS URL parameter {key!r}; use {', '.join(DNS_QUERY_PARAMETERS)}")
            raw[DNS_QUERY_PARAMETERS[key]] = value
        return raw
    if parts.path not in ("", "/") or parts.query:
        raise UsageError(f"{parts.scheme} URLs take no path or query: {url!r}")
    return {}


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" if v not in ("", None) else str(k) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
