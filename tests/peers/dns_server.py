"""A real DNS server for tests: `DNSServer(records)` answers over UDP and TCP on one 127.0.0.1 port.

    async with DNSServer({"svc.test.": {"A": ["127.0.0.1"], "MX": ["10 mail.svc.test."]}}) as server:
        server.port, server.queries

Names not in `records` get NXDOMAIN; a known name without the asked type gets an empty NOERROR.
Records are sent in the order given. `delays` makes some names answer late while others are
answered at once, concurrently. Switches make it truncate every UDP answer (TC bit), stay silent,
or answer with bytes that are not DNS. Built on dnspython's message code and asyncio, so no daemon
is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 300
MAX_TCP_QUERIES = 100  # queries answered on one TCP connection before hanging up
BIND_ATTEMPTS = 20  # tries to find a port free for both UDP and TCP
GARBAGE = b"\x00\x01this is not a DNS message"

Records = Mapping[str, Mapping[str, Sequence[str]]]


class DNSServer:
    """Answer DNS queries from `records` ({name: {type: [rdata text, ...]}}) on UDP and TCP.

    `rcodes` ({name: "SERVFAIL"}) answers a name with that response code and no records; a key
    "name AAAA" does so for that record type only (so does a key of `delays`).
    `delays` ({name: seconds}) sends the answers for a name that much later; other queries are
    answered meanwhile. `ttl` is the TTL of every record.
    `truncate_udp` answers every UDP query with TC set and no records, so clients retry over TCP.
    `silent` reads queries and never answers; `garbage` answers with bytes that are not DNS.
    `queries` lists what was asked, as (transport, name, type) tuples.
    """

    def __init__(
        self,
        records: Records,
        *,
        host: str = "127.0.0.1",
        rcodes: Mapping[str, str] | None = None,
        delays: Mapping[str, float] | None = None,
        ttl: int = TTL,
        truncate_udp: bool = False,
        silent: bool = False,
        garbage: bool = False,
    ) -> None:
        self.records = {_absolute(name): dict(types) for name, types in records.items()}
        self.rcodes = {_keyed(name): dns.rcode.from_text(code) for name, code in (rcodes or {}).items()}
        self.delays = {_keyed(name): seconds for name, seconds in (delays or {}).items()}
        self.ttl = ttl
        self.host = host
        self.truncate_udp = truncate_udp
        self.silent = silent
        self.garbage = garbage
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        """Return "ip:port", the form the `resolver` option takes."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def __aenter__(self) -> DNSServer:
        loop = asyncio.get_running_loop()
        for _ in range(BIND_ATTEMPTS):
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), local_addr=(self.host, 0))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
                return self
            except OSError:  # the port is free for UDP but taken for TCP: try another
                self._udp.close()
        raise RuntimeError(f"no port free for both UDP and TCP on {self.host}")

    async def __aexit__(self, *exc: object) -> None:
        self._udp.close()
        self._tcp.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reply(self, wire: bytes, transport: str) -> tuple[bytes | None, float]:
        """Return the answer to one query in wire form (None to stay silent) and the seconds to wait before sending."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None, 0.0
        if not query.question:
            return None, 0.0
        question = query.question[0]
        name = question.name.to_text().lower()
        self.queries.append((transport, name, dns.rdatatype.to_text(question.rdtype)))
        if self.silent:
            return None, 0.0
        if self.garbage:
            return GARBAGE, 0.0
        # dnspython shuffles records by default; tests of address fallback need them in the order given.
        answer = self._answer(query, question, name, transport).to_wire(want_shuffle=False)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        return answer, self.delays.get(f"{name} {rdtype}", self.delays.get(name, 0.0))

    def later(self, seconds: float, send: Callable[[], object]) -> None:
        """Call `send` after `seconds` without holding up other queries; cancelled when the server stops."""
        task = asyncio.ensure_future(_after(seconds, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer(self, query: dns.message.Message, question: dns.rrset.RRset, name: str, transport: str):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        rcode = self.rcodes.get(f"{name} {dns.rdatatype.to_text(question.rdtype)}", self.rcodes.get(name))
        if rcode is not None:
            response.set_rcode(rcode)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif transport == "udp" and self.truncate_udp:
            response.flags |= dns.flags.TC
        elif texts := self.records[name].get(dns.rdatatype.to_text(question.rdtype)):
            rrset = dns.rrset.from_text_list(question.name, self.ttl, dns.rdataclass.IN, question.rdtype, list(texts))
            response.answer.append(rrset)
        return response

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            for _ in range(MAX_TCP_QUERIES):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                answer, delay = self.reply(await reader.readexactly(length), "tcp")
                if answer is None:
                    await reader.read()  # silent: hold the connection until the client gives up
                    break
                await asyncio.sleep(delay)
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        writer.close()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        answer, delay = self.server.reply(data, "udp")
        if answer is None:
            return
        if delay:
            self.server.later(delay, lambda: self.transport.sendto(answer, addr))
        else:
            self.transport.sendto(answer, addr)


async def _after(seconds: float, call: Callable[[], object]) -> None:
    await asyncio.sleep(seconds)
    call()


def _keyed(key: str) -> str:
    """Return a `rcodes`/`delays` key as looked up: "name" or "name TYPE" (one record type only)."""
    name, _, rdtype = key.partition(" ")
    return f"{_absolute(name)} {rdtype.upper()}" if rdtype else _absolute(name)


def _absolute(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()
