"""A small authoritative DNS server on loopback for tests: `dnslib`, UDP and TCP.

`dns_server(records)` serves a dict of records on 127.0.0.1 at one free port, over UDP and
TCP like a real server: a UDP answer longer than the client's buffer (512 bytes without
EDNS) comes back truncated, so the client asks again over TCP, which is how a 2048-bit DKIM
key is fetched in the wild. A name in the dict with no record of the type asked answers
NOERROR with no records (NODATA), a name not in it NXDOMAIN.

    records = {
        "acme.test": {"MX": [(10, "mx1.acme.test")], "TXT": ["v=spf1 mx -all"]},
        "s1._domainkey.acme.test": {"TXT": ["v=DKIM1; k=rsa; p=MIIBIjAN..."]},
        "mx1.acme.test": {"A": ["192.0.2.10"]},
    }
    with dns_server(records) as server:
        ...  # CAMPAIGN_DNS_RESOLVER=server.address ("127.0.0.1:PORT")

A TXT value given as a str is split into 255-byte character-strings (RFC 7208 3.3, RFC 6376
3.6.2.2: the reader joins them); given as a list, its strings are served as they are.
`silent_resolver()` is a port that takes queries and never answers (a dead resolver).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import DNSHandler, DNSServer, TCPServer, UDPServer

from campaign_core.ports import free_port

#: One record's data: "192.0.2.1" (A, AAAA), (10, "mx.example") (MX), "text" or a list of
#: character-strings (TXT).
RecordData = str | tuple[int, str] | Sequence[str]
Records = Mapping[str, Mapping[str, Sequence[RecordData]]]

TTL = 60
#: The largest UDP answer to a query without EDNS (RFC 1035 4.2.1).
UDP_LIMIT = 512


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def txt_strings(value: str | Sequence[str]) -> list[bytes]:
    """A TXT record's character-strings: a str cut every 255 bytes, a list as given."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return [part.encode("utf-8") for part in value]


def _rdata(rtype: str, value: RecordData) -> Any:
    if rtype == "A" and isinstance(value, str):
        return A(value)
    if rtype == "AAAA" and isinstance(value, str):
        return AAAA(value)
    if rtype == "MX" and isinstance(value, tuple):
        preference, exchange = value
        return MX(exchange if exchange.endswith(".") else exchange + ".", preference)
    if rtype == "TXT":
        return TXT(txt_strings(value))  # type: ignore[arg-type]
    raise ValueError(f"cannot serve {rtype} record {value!r}")


@dataclass
class ZoneResolver:
    """dnslib's resolver interface over the dict; records every question it is asked."""

    records: dict[str, dict[str, list[RecordData]]]
    questions: list[tuple[str, str, str]] = field(default_factory=list)  # name, type, proto
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.questions.append((_key(qname), qtype, handler.protocol))
        entry = self.records.get(_key(qname))
        if entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in entry.get(qtype, []):
            reply.add_answer(RR(qname, QTYPE.reverse[qtype], rdata=_rdata(qtype, value),
                                ttl=TTL))
        return reply

    def asked(self, name: str, rtype: str) -> list[str]:
        """The protocols ("udp", "tcp") over which NAME/TYPE was asked, in order."""
        with self.lock:
            return [p for n, t, p in self.questions if n == _key(name) and t == rtype]


class TruncatingHandler(DNSHandler):  # type: ignore[misc]  # dnslib has no types
    """Answers over UDP no longer than the client can take: 512 bytes, or the buffer size
    its EDNS OPT record announces; a longer answer goes out with TC set and no records."""

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        packed: bytes = reply.pack()
        if self.protocol == "udp":
            opt = [rr for rr in request.ar if rr.rtype == QTYPE.OPT]
            limit = max(UDP_LIMIT, opt[0].rclass) if opt else UDP_LIMIT
            if len(packed) > limit:
                # Not dnslib's `truncate()`: it drops the question too, and a client
                # rightly ignores an answer that does not repeat its question.
                truncated = request.reply()
                truncated.header.tc = 1
                packed = truncated.pack()
        return packed


class _QuietLogger:
    """dnslib prints every query by default; tests want silence."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


@dataclass
class LoopbackDns:
    """A running server: `address` is "127.0.0.1:PORT" (what CAMPAIGN_DNS_RESOLVER takes)."""

    host: str
    port: int
    resolver: ZoneResolver

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def records(self) -> dict[str, dict[str, list[RecordData]]]:
        """The served records: a test may change them while the server runs."""
        return self.resolver.records


def _copy(records: Records) -> dict[str, dict[str, list[RecordData]]]:
    return {_key(name): {rtype.upper(): list(values) for rtype, values in types.items()}
            for name, types in records.items()}


def _start(resolver: ZoneResolver, host: str) -> tuple[DNSServer, DNSServer, int]:
    """UDP and TCP servers on one free port (a port free for TCP may be taken for UDP:
    try another)."""
    last: OSError | None = None
    for _ in range(20):
        port = free_port()
        try:
            udp = DNSServer(resolver, address=host, port=port, logger=_QuietLogger(),
                            handler=TruncatingHandler, server=UDPServer)
        except OSError as err:
            last = err
            continue
        try:
            tcp = DNSServer(resolver, address=host, port=port, tcp=True,
                            logger=_QuietLogger(), handler=TruncatingHandler,
                            server=TCPServer)
        except OSError as err:
            udp.server.server_close()
            last = err
            continue
        return udp, tcp, port
    raise RuntimeError(f"no free port for the loopback DNS server: {last}")


@contextmanager
def dns_server(records: Records, host: str = "127.0.0.1") -> Iterator[LoopbackDns]:
    """Serve `records` on loopback over UDP and TCP until the block ends."""
    resolver = ZoneResolver(_copy(records))
    udp, tcp, port = _start(resolver, host)
    threads = []
    for server in (udp, tcp):
        thread = threading.Thread(target=server.server.serve_forever,
                                  kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        threads.append(thread)
    try:
        yield LoopbackDns(host, port, resolver)
    finally:
        for server in (udp, tcp):
            server.server.shutdown()
            server.server.server_close()
        for thread in threads:
            thread.join(timeout=5)


@contextmanager
def silent_resolver(host: str = "127.0.0.1") -> Iterator[str]:
    """A UDP and TCP port that take queries and never answer: "host:port" of a resolver
    that is down without refusing (the case a timeout must catch)."""
    for _ in range(20):
        port = free_port()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.bind((host, port))
            tcp.listen(8)  # connections queue in the backlog and are never read
        except OSError:
            udp.close()
            tcp.close()
            continue
        try:
            yield f"{host}:{port}"
        finally:
            udp.close()
            tcp.close()
        return
    raise RuntimeError("no free port for the silent resolver")



def dkim_dnsfunc(address: str) -> Callable[..., bytes]:
    """`dkim.verify(..., dnsfunc=...)` asking the resolver at "host:port" through
    dnspython: the TXT record of the name, its character-strings joined (b"" if none)."""
    import dns.exception
    import dns.resolver

    host, _, port = address.rpartition(":")

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = int(port)
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        except dns.exception.DNSException:  # NXDOMAIN, no TXT, no answer: no key
            return b""
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return dnsfunc
