"""DNS probe: one query over UDP (retried over TCP when truncated) or TCP; the rcode and answer are checked.

The target is the DNS server. `query_name` defaults to "." (the root), which every recursive resolver
answers NOERROR, so the default probe says whether a resolver is alive; for an authoritative server set a
name of its zone (such a server usually REFUSEs the root, which shows as `dns_rcode`).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from monitor.probes import datagram, net
from monitor.probes.errors import DNSAnswerMismatch, DNSRcodeError, ProtocolError
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.protocol import Flag, Protocol, Scheme
from monitor.probes.result import Result
from monitor.probes.session import Exchange, Target, exchange
from monitor.probes.text import printable

TLS_MODES = ("none",)
TRANSPORTS = ("udp", "tcp")
MAX_ANSWERS = 20  # answer records copied into details; the expected answer is looked for among all of them
MAX_RECORD_CHARS = 300  # a long TXT record is cut to this in details and reasons
MAX_UDP_ANSWER = 65535  # a datagram cannot be longer; EDNS answers are usually 1232 bytes or fewer
MAX_TCP_ANSWER = 65535  # the two-byte length prefix cannot say more


@dataclasses.dataclass(frozen=True)
class Options(ConnectionOptions):
    query_name: str = "."  # the name asked about; "." is the root (see the module docstring)
    record_type: str = "A"
    # One answer record must equal this, e.g. "192.0.2.1", "10 mail.example.com" or, for TXT, "v=spf1 -all".
    expected_answer: str | None = None
    transport: str = "udp"
    expected_rcode: str = "NOERROR"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.query_name.strip():
            raise OptionsError("query_name", "is required; write . to ask about the root")
        try:
            dns.name.from_text(self.query_name)
        except dns.exception.DNSException as error:
            raise OptionsError("query_name", f"is not a valid DNS name: {error}") from None
        try:
            rdtype = dns.rdatatype.from_text(self.record_type)
        except dns.exception.DNSException:
            raise OptionsError(
                "record_type", f"must be a DNS record type such as A, AAAA, MX or TXT, not {self.record_type!r}"
            ) from None
        if dns.rdatatype.is_metatype(rdtype) and rdtype != dns.rdatatype.ANY:
            raise OptionsError("record_type", f"{self.record_type} is not a record type a single query can ask for")
        if self.transport not in TRANSPORTS:
            raise OptionsError("transport", f"must be udp or tcp, not {self.transport!r}")
        try:
            dns.rcode.from_text(self.expected_rcode)
        except dns.exception.DNSException:
            message = f"must be a DNS response code such as NOERROR or NXDOMAIN, not {self.expected_rcode!r}"
            raise OptionsError("expected_rcode", message) from None


async def probe(target: Target, options: Options, *, deadline: float) -> Result:
    query = dns.message.make_query(options.query_name, options.record_type)

    async def over_udp(state: Exchange, channel: datagram.Channel) -> None:
        state.details["query"] = f"{query.question[0].name} {options.record_type.upper()}"
        state.details["transport"] = "udp"
        await channel.send(query.to_wire(), what="the DNS query")
        reply, _ = await channel.receive_matching(
            lambda data, sender: _answers(query, data), what="a DNS answer to our query", limit=MAX_UDP_ANSWER
        )
        response = _parse(query, reply, channel.where)
        if response.flags & dns.flags.TC:
            state.details["truncated_retry"] = True  # the answer did not fit a datagram: ask again over TCP
            response = await over_tcp(state, channel.address)
        record(state, response)
        check(response, options)

    async def over_tcp(state: Exchange, address: str) -> dns.message.Message:
        """Return the answer to `query` over TCP (RFC 7766: a two-byte length before each message)."""
        state.details["transport"] = "tcp"
        conn = await net.open_connection(address, target.port, options, deadline=deadline, clock=state.clock)
        try:
            wire = query.to_wire()
            await conn.write(len(wire).to_bytes(2, "big") + wire, what="the DNS query")
            state.clock.await_first_byte()
            what = f"the DNS answer from {address} port {target.port} over TCP"
            size = int.from_bytes(await conn.read_exact(2, what=what), "big")
            reply = await conn.read_exact(size, what=what, limit=MAX_TCP_ANSWER)
        finally:
            conn.close()
        return _parse(query, reply, f"{address} port {target.port}")

    if options.transport == "udp":
        return await datagram.converse(target, options, over_udp, deadline=deadline)

    async def tcp_only(state: Exchange) -> None:
        with state.clock.phase("resolve"):
            _, sockaddr = (await net.resolve(target.host, target.port, options, deadline=deadline))[0]
        state.address = sockaddr[0]
        state.details["query"] = f"{query.question[0].name} {options.record_type.upper()}"
        response = await over_tcp(state, sockaddr[0])
        record(state, response)
        check(response, options)

    return await exchange(target, options, tcp_only, deadline=deadline)


def _answers(query: dns.message.Message, data: bytes) -> bool:
    """Return whether a datagram is the answer to `query`: its ID matches (the question is checked when parsed)."""
    return len(data) >= 2 and int.from_bytes(data[:2], "big") == query.id


def _parse(query: dns.message.Message, reply: bytes, where: str) -> dns.message.Message:
    try:
        response = dns.message.from_wire(reply, keyring=None, question_only=False, ignore_trailing=True)
    except dns.message.Truncated:
        # A truncated UDP answer may not parse past its header; its TC flag is what matters.
        response = dns.message.from_wire(reply, question_only=True)
    except dns.exception.DNSException as error:
        raise ProtocolError(f"malformed DNS reply from {where}: {error}") from None
    if not query.is_response(response):
        raise ProtocolError(f"the reply from {where} does not answer our query")
    return response


def record(state: Exchange, response: dns.message.Message) -> None:
    """Put the response code, flags, the first answer records and each section's record count into the details."""
    state.details["rcode"] = dns.rcode.to_text(response.rcode())
    state.details["flags"] = dns.flags.to_text(response.flags)
    answers = _answer_lines(response)[:MAX_ANSWERS]
    state.details["answers"] = [printable(line, limit=MAX_RECORD_CHARS) for line in answers]
    # Record counts of each section, as blackbox_exporter reports them (Go's miekg/dns counts the
    # EDNS OPT pseudo-record among the additional ones; dnspython keeps it apart).
    state.details["answer_rrs"] = sum(len(rrset) for rrset in response.answer)
    state.details["authority_rrs"] = sum(len(rrset) for rrset in response.authority)
    state.details["additional_rrs"] = sum(len(rrset) for rrset in response.additional) + (response.opt is not None)


def check(response: dns.message.Message, options: Options) -> None:
    """Raise unless the response code and, when asked for, one answer record are the expected ones."""
    rcode = dns.rcode.to_text(response.rcode())
    expected_rcode = dns.rcode.to_text(dns.rcode.from_text(options.expected_rcode))
    if rcode != expected_rcode:
        raise DNSRcodeError(f"rcode {rcode}, expected {expected_rcode}")
    if options.expected_answer is None:
        return
    rdatas = [rdata for rrset in response.answer for rdata in rrset]
    if any(matches(rdata, options.expected_answer) for rdata in rdatas):
        return
    asked = f"{options.record_type.upper()} record {options.expected_answer!r}"
    got = ", ".join(printable(rdata.to_text(), limit=MAX_RECORD_CHARS) for rdata in rdatas[:5]) or "an empty answer"
    raise DNSAnswerMismatch(f"no {asked} in the answer for {options.query_name}; got {got}")


def matches(rdata, expected: str) -> bool:
    """Return whether one record's data equals `expected`.

    Names compare without case and without their final dot ("10 mail.example.com" equals
    "10 mail.example.com."); TXT compares exactly, either as the unquoted text (strings joined)
    or in its quoted zone-file form. Equality rather than "contains", so 10.0.0.1 never passes for 10.0.0.10.
    """
    wanted = " ".join(expected.split())
    strings = getattr(rdata, "strings", None)
    if strings is not None:  # TXT and SPF: the text is case-sensitive (verification tokens)
        joined = b"".join(strings).decode("utf-8", "replace")
        return wanted in (joined, " ".join(rdata.to_text().split()))
    return _name_form(rdata.to_text()) == _name_form(wanted)


def _name_form(text: str) -> str:
    return " ".join(text.split()).lower().removesuffix(".")


def _answer_lines(response: dns.message.Message) -> list[str]:
    return [
        f"{rrset.name} {rrset.ttl} {dns.rdataclass.to_text(rrset.rdclass)} "
        f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
        for rrset in response.answer
        for rdata in rrset
    ]


URL_PARAMETERS = {"type": "record_type", "transport": "transport", "rcode": "expected_rcode"}


def url_options(parts: urllib.parse.SplitResult) -> dict[str, Any]:
    """Return the query a dns URL names: dns://server/example.com?type=MX&transport=tcp&rcode=NXDOMAIN."""
    raw: dict[str, Any] = {}
    name = parts.path.strip("/")
    if name:
        raw["query_name"] = name
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in URL_PARAMETERS:
            raise OptionsError("url", f"unknown DNS URL parameter {key!r}; use {', '.join(URL_PARAMETERS)}")
        raw[URL_PARAMETERS[key]] = value
    return raw


PROTOCOL = Protocol(
    key="dns",
    label="DNS",
    summary="one query over UDP (retried over TCP when truncated) or TCP, with the rcode and answer checked",
    options=Options,
    probe=probe,
    blackbox_prober="dns",
    tls_modes=TLS_MODES,
    transport="datagram",
    schemes=(Scheme("dns", "none", 53),),
    url_options=url_options,
    flags=(Flag("--expect-answer", "expected_answer", "a record the answer must contain", metavar="TEXT"),),
    shown=(
        ("query", "Query"),
        ("transport", "Transport"),
        ("rcode", "Rcode"),
        ("flags", "Flags"),
        ("answers", "Answers"),
    ),
)
