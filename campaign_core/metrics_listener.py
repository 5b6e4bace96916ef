"""The /metrics listener: the runtime's Prometheus text, plus gauges that describe the store.

The Temporal runtime's exporter can set a gauge's series but never forget one: a series
set once is served until the process ends. That is right for what a process measures
(backlog of a queue it serves) and wrong for what describes the store, such as each
sender's remaining capacity (issue 28): a removed sender's series must go, or the
dashboard keeps plotting a mailbox that no longer exists. So the process's /metrics is
this small listener. It serves the runtime's text, fetched from the runtime's exporter on
a loopback port nobody else is told about, followed by `StoreGauges`, which a background
task replaces whole at each refresh from the store (a series absent from the last
refresh is absent from the next scrape). A scrape never reads the store: it renders the
last snapshot, so a slow store never slows or fails a scrape.

Plain threads and `http.server`, not asyncio: the listener starts before any event loop
(the CLI picks its port synchronously) and must answer while the loop is busy.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

#: One series: its labels and its value.
Series = tuple[Mapping[str, str], float]
#: How long a scrape waits for the runtime's own exporter.
UPSTREAM_TIMEOUT = 5.0


class StoreGauges:
    """Gauge families as last read from the store, each replaced whole at a refresh.

    Thread-safe: the refreshing task writes, the listener's threads read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, tuple[str, list[Series]]] = {}

    def replace(self, name: str, help_text: str, series: Iterable[Series]) -> None:
        """The family `name` is now exactly these series (none: the family is served empty)."""
        snapshot: list[Series] = [(dict(labels), float(value)) for labels, value in series]
        with self._lock:
            self._families[name] = (help_text, snapshot)

    def values(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """The family's series by label set (what a scrape would show)."""
        with self._lock:
            _, series = self._families.get(name, ("", []))
            return {frozenset(labels.items()): value for labels, value in series}

    def render(self) -> str:
        """Prometheus text exposition (format 0.0.4) of every family."""
        with self._lock:
            families = sorted(self._families.items())
        lines: list[str] = []
        for name, (help_text, series) in families:
            lines.append(f"# HELP {name} {_escape_help(help_text)}")
            lines.append(f"# TYPE {name} gauge")
            for labels, value in series:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{name}{{{inner}}} {_number(value)}" if inner else
                             f"{name} {_number(value)}")
        return "\n".join(lines) + "\n" if lines else ""


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class MetricsListener:
    """Serves GET /metrics on `address` ("host:port" or "[v6]:port"): the text of the
    runtime's exporter (`start(upstream)`), then `gauges`.

    The port is bound in the constructor, before the runtime exists, so a taken port fails
    there with a ValueError saying "in use", as the runtime's own exporter does
    (`campaign dev` then tries the next port), and no runtime is made for nothing."""

    def __init__(self, address: str, gauges: StoreGauges) -> None:
        host, port = split_address(address)
        self.upstream_url = ""
        self.gauges = gauges
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self.server = server_class((host, port), _handler(self))
        except OSError as exc:
            raise ValueError(f"Failed starting the metrics listener on {address}: "
                             f"{exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"metrics-listener-{port}")

    def start(self, upstream: str) -> None:
        """Serve, reading the runtime's text from its exporter at `upstream` ("host:port")."""
        self.upstream_url = f"http://{upstream}/metrics"
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def body(self) -> tuple[int, bytes, str]:
        """Status, body and content type of one scrape."""
        try:
            with urllib.request.urlopen(self.upstream_url, timeout=UPSTREAM_TIMEOUT) as answer:
                text = answer.read()
                content_type = answer.headers.get("Content-Type", "text/plain; version=0.0.4")
        except (urllib.error.URLError, OSError) as exc:
            # The scrape fails visibly (Prometheus' `up` reads 0) rather than serving the
            # store's gauges alone as if the SDK's and the engine's counters were gone.
            log.warning("metrics: the runtime's exporter did not answer: %s", exc)
            return 502, b"the runtime's metrics exporter did not answer\n", "text/plain"
        if text and not text.endswith(b"\n"):
            text += b"\n"
        return 200, text + self.gauges.render().encode(), content_type

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"metrics address {address!r}: give host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _handler(listener: MetricsListener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b"not found: try /metrics\n", "text/plain")
                return
            self._answer(*listener.body())

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the scraper went away
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics listener: " + format, *args)

    return Handler
