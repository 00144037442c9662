"""DNS probe: one query with dnspython over UDP (retried over TCP when truncated) or TCP; rcode and answer checked.

The target is the DNS server. `query_name` defaults to "." (the root), which every recursive resolver
answers NOERROR, so the default probe says whether a resolver is alive; for an authoritative server set a
name of its zone (such a server usually REFUSEs the root, which shows as `dns_rcode`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from monitor.probes.errors import (
    ConnectError,
    ConnectionClosed,
    DNSAnswerMismatch,
    DNSRcodeError,
    ProbeTimeout,
    ProtocolError,
    RefusedError,
)
from monitor.probes.net import resolve
from monitor.probes.options import ConnectionOptions, OptionsError
from monitor.probes.result import Result
from monitor.probes.session import Exchange, Target, exchange

TLS_MODES = ("none",)
TRANSPORTS = ("udp", "tcp")
MAX_ANSWERS = 20  # answer records copied into details; the expected answer is looked for among all of them
MAX_RECORD_CHARS = 300  # a long TXT record is cut to this in details and reasons


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
    async def steps(state: Exchange) -> None:
        with state.clock.phase("resolve"):
            family, sockaddr = (await resolve(target.host, target.port, options, deadline=deadline))[0]
        state.address = sockaddr[0]
        query = dns.message.make_query(options.query_name, options.record_type)
        state.details["query"] = f"{query.question[0].name} {options.record_type.upper()}"
        response = await ask(state, query, family, sockaddr, options.transport)
        if options.transport == "udp" and response.flags & dns.flags.TC:
            state.details["truncated_retry"] = True  # the answer did not fit a datagram: ask again over TCP
            response = await ask(state, query, family, sockaddr, "tcp")
        record(state, response)
        check(response, options)

    return await exchange(target, options, steps, deadline=deadline)


async def ask(state: Exchange, query: dns.message.Message, family: int, sockaddr: tuple, transport: str):
    """Return the server's reply to `query` over `transport`, within the probe's deadline.

    The UDP socket is connected so that an ICMP port unreachable comes back as a refusal instead
    of a silent wait until the deadline. For TCP, connect time is the connect phase; for both,
    the query until its answer is the processing phase.
    """
    state.details["transport"] = transport
    where = f"{sockaddr[0]} port {sockaddr[1]}"
    backend = dns.asyncbackend.get_default_backend()
    try:
        async with asyncio.timeout_at(state.deadline):
            if transport == "udp":
                sock = await backend.make_socket(family, socket.SOCK_DGRAM, 0, None, sockaddr[:2])
                send = dns.asyncquery.udp
            else:
                with state.clock.phase("connect"):
                    sock = await backend.make_socket(family, socket.SOCK_STREAM, 0, None, sockaddr[:2])
                send = dns.asyncquery.tcp
            async with sock:
                with state.clock.phase("processing"):
                    return await send(query, sockaddr[0], port=sockaddr[1], sock=sock)
    except TimeoutError:
        raise ProbeTimeout(f"timed out waiting for the DNS answer from {where} over {transport.upper()}") from None
    except ConnectionRefusedError:
        if transport == "tcp":
            raise RefusedError(f"connection refused by {where}") from None
        raise RefusedError(f"{where} refused the query over UDP (ICMP port unreachable)") from None
    except EOFError:
        raise ConnectionClosed(f"{where} closed the connection before answering") from None
    except OSError as error:
        raise ConnectError(f"cannot reach {where}: {error.strerror or error}") from None
    except dns.query.BadResponse:
        raise ProtocolError(f"the reply from {where} does not answer our query") from None
    except dns.exception.DNSException as error:
        raise ProtocolError(f"malformed DNS reply from {where}: {error}") from None


def record(state: Exchange, response: dns.message.Message) -> None:
    """Put the response code, flags, the first answer records and each section's record count into the details."""
    state.details["rcode"] = dns.rcode.to_text(response.rcode())
    state.details["flags"] = dns.flags.to_text(response.flags)
    state.details["answers"] = [_clip(line) for line in _answer_lines(response)[:MAX_ANSWERS]]
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
    got = ", ".join(_clip(rdata.to_text()) for rdata in rdatas[:5]) or "an empty answer"
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


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RECORD_CHARS else text[:MAX_RECORD_CHARS] + "..."
