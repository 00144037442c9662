"""A DHCP server for tests, written from RFC 2131/2132: `DHCPServer(...)` on free UDP ports of 127.0.0.1.

    async with DHCPServer(client_port=..., relay_port=...) as server:
        server.port, server.received   # received: the message types, e.g. ["DHCPINFORM"]

Like ISC dhcpd and Kea (whose -p/-P options move the ports), it listens on a server port and answers
clients on `client_port` and relay agents on `relay_port`, both free ports here instead of 68 and 67.
It serves one subnet (`network`, 127.0.0.0/8 so that every address stays on this machine):

- DHCPINFORM: DHCPACK to `ciaddr` on the client port, with the configuration and without a lease time
  or `yiaddr` (RFC 2131 4.3.5, table 3);
- DHCPDISCOVER through a relay (`giaddr` in the subnet): DHCPOFFER of the next free pool address to
  `giaddr` on the relay port, with the lease time (4.3.1); from a relay outside the subnet, no answer,
  as a server without a subnet declaration for it keeps silent; without a relay, no answer either
  (it would go to the offered address, which is not on this machine);
- DHCPREQUEST: DHCPACK for the address offered to that MAC, DHCPNAK otherwise (4.3.2).

`behaviour` makes it misbehave: "silent", "nak" (DHCPNAK to everything, with a message), "wrong_xid"
(a reply with another xid first, then the right one), "garbage" (our xid, then no magic cookie),
"overrun" (an option whose length runs past the end of the packet), "wrong_type" (DHCPACK to a DISCOVER).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

MAGIC_COOKIE = b"\x63\x82\x53\x63"
TYPES = {1: "DHCPDISCOVER", 2: "DHCPOFFER", 3: "DHCPREQUEST", 5: "DHCPACK", 6: "DHCPNAK", 8: "DHCPINFORM"}
DISCOVER, OFFER, REQUEST, ACK, NAK, INFORM = 1, 2, 3, 5, 6, 8


def options_of(packet: bytes) -> dict[int, bytes]:
    """Return the options of a DHCP message (RFC 2132): code -> value, stopping at END."""
    found, offset = {}, 240
    while offset < len(packet) and packet[offset] != 255:
        if packet[offset] == 0:
            offset += 1
            continue
        code, length = packet[offset], packet[offset + 1]
        found[code] = packet[offset + 2 : offset + 2 + length]
        offset += 2 + length
    return found


class DHCPServer(asyncio.DatagramProtocol):
    def __init__(
        self,
        *,
        client_port: int,
        relay_port: int,
        host: str = "127.0.0.1",
        network: str = "127.0.0.0/8",
        pool_start: str = "127.0.0.100",
        router: str = "127.0.0.1",
        dns_servers: tuple[str, ...] = ("127.0.0.53", "127.0.0.54"),
        domain: str = "lab.test",
        lease_time: int = 3600,
        behaviour: str = "normal",
    ) -> None:
        self.client_port, self.relay_port, self.host = client_port, relay_port, host
        self.network = ipaddress.ip_network(network)
        self.next_free = ipaddress.ip_address(pool_start)
        self.router, self.dns_servers, self.domain, self.lease_time = router, dns_servers, domain, lease_time
        self.behaviour = behaviour
        self.offers: dict[bytes, str] = {}  # chaddr -> the address offered
        self.received: list[str] = []
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> DHCPServer:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.transport.close()

    def datagram_received(self, data: bytes, sender: tuple) -> None:
        if len(data) < 240 or data[0] != 1 or data[236:240] != MAGIC_COOKIE:
            return  # not a BOOTREQUEST with DHCP options
        found = options_of(data)
        kind = found.get(53, b"\0")[0]
        self.received.append(TYPES.get(kind, f"type {kind}"))
        ciaddr, giaddr, chaddr = data[12:16], data[24:28], data[28:34]
        if self.behaviour == "silent":
            return
        if kind == INFORM:
            self.reply(data, ACK, bytes(4), (socket.inet_ntoa(ciaddr), self.client_port), lease=False)
        elif kind == DISCOVER and giaddr != bytes(4) and ipaddress.ip_address(giaddr) in self.network:
            address = self.offers.setdefault(chaddr, str(self._allocate()))
            self.reply(data, OFFER, socket.inet_aton(address), (socket.inet_ntoa(giaddr), self.relay_port), lease=True)
        elif kind == REQUEST:
            wanted = found.get(50, ciaddr)
            known = self.offers.get(chaddr) == socket.inet_ntoa(wanted)
            to = (socket.inet_ntoa(giaddr), self.relay_port) if giaddr != bytes(4) else (sender[0], self.client_port)
            self.reply(data, ACK if known else NAK, wanted if known else bytes(4), to, lease=known)

    def reply(self, request: bytes, kind: int, yiaddr: bytes, to: tuple[str, int], *, lease: bool) -> None:
        xid = request[4:8]
        if self.behaviour == "nak":
            kind, lease = NAK, False
        if self.behaviour == "wrong_type":
            kind = ACK
        packet = self.message(request, xid, kind, yiaddr, lease=lease)
        if self.behaviour == "wrong_xid":
            self.transport.sendto(self.message(request, bytes(b ^ 0xFF for b in xid), kind, yiaddr, lease=lease), to)
        elif self.behaviour == "garbage":
            packet = packet[:236] + b"not a cookie" + packet[240:]
        elif self.behaviour == "overrun":
            packet = packet[:240] + bytes([15, 200]) + b"lab.test"  # a domain name claiming 200 bytes
        self.transport.sendto(packet, to)

    def message(self, request: bytes, xid: bytes, kind: int, yiaddr: bytes, *, lease: bool) -> bytes:
        """Return a BOOTREPLY: op 2, the request's xid, flags, giaddr and chaddr, our address as siaddr."""
        header = bytes([2, 1, 6, 0]) + xid + bytes(4) + request[12:16] + yiaddr
        body = header + socket.inet_aton(self.host) + request[24:28] + request[28:44] + bytes(64 + 128)
        fields = bytes([53, 1, kind, 54, 4]) + socket.inet_aton(self.host)
        if kind == NAK:
            message = b"requested address not available"
            return body + MAGIC_COOKIE + fields + bytes([56, len(message)]) + message + b"\xff"
        if lease:
            fields += bytes([51, 4]) + struct.pack("!I", self.lease_time)
        fields += bytes([1, 4]) + self.network.netmask.packed + bytes([3, 4]) + socket.inet_aton(self.router)
        servers = b"".join(socket.inet_aton(address) for address in self.dns_servers)
        fields += bytes([6, len(servers)]) + servers + bytes([15, len(self.domain)]) + self.domain.encode()
        return body + MAGIC_COOKIE + fields + b"\xff"

    def _allocate(self) -> ipaddress.IPv4Address:
        address, self.next_free = self.next_free, self.next_free + 1
        return address
