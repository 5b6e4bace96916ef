"""A TLS front for the dev server on loopback, which has no TLS flags of its own.

Terminates TLS (ALPN h2, optionally requiring a client certificate signed by a given
CA), forwards the bytes to the dev server, and decodes the client's HTTP/2 request
headers on the way (HPACK), so a test can see what a client sent, e.g. its
`authorization` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, CONTINUATION = 0x1, 0x9
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20


class HeaderSniffer:
    """Reads the client side of an HTTP/2 stream and keeps every request's headers."""

    def __init__(self) -> None:
        self.buffer = b""
        self.preface_seen = False
        self.decoder = hpack.Decoder()
        self.block = b""
        self.requests: list[dict[str, str]] = []

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if not self.preface_seen:
            if len(self.buffer) < len(PREFACE):
                return
            self.buffer = self.buffer[len(PREFACE):]
            self.preface_seen = True
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            kind, flags = self.buffer[3], self.buffer[4]
            if len(self.buffer) < 9 + length:
                return
            payload = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            if kind == HEADERS:
                if flags & PADDED:
                    pad = payload[0]
                    payload = payload[1:len(payload) - pad]
                if flags & PRIORITY:
                    payload = payload[5:]
                self.block = payload
            elif kind == CONTINUATION:
                self.block += payload
            else:
                continue
            if flags & END_HEADERS:
                headers = self.decoder.decode(self.block)
                self.requests.append({str(k): str(v) for k, v in headers})
                self.block = b""


@dataclass
class TLSProxy:
    """`async with TLSProxy(...)`: TLS on 127.0.0.1:`port`, forwarding to `upstream`."""

    upstream: tuple[str, int]
    certfile: str
    keyfile: str
    client_ca: str | None = None  # require a client certificate signed by this CA
    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    client_subjects: list[str] = field(default_factory=list)
    refused: int = 0
    _server: asyncio.Server | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        ctx.set_alpn_protocols(["h2"])
        if self.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.client_ca)
        return ctx

    async def __aenter__(self) -> TLSProxy:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.context(),
            ssl_handshake_timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        if peer:
            subject = dict(x[0] for x in peer.get("subject", ()))
            self.client_subjects.append(str(subject.get("commonName", subject)))
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        sniffer = HeaderSniffer()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, sniff: bool) -> None:
            try:
                while data := await src.read(65536):
                    if sniff:
                        sniffer.feed(data)
                        self.requests.extend(sniffer.requests)
                        sniffer.requests.clear()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError, struct.error):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
