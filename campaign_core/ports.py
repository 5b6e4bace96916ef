"""Loopback ports for servers this project starts: the dev server, the API, test servers."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def port_free(port: int) -> bool:
    """True when nothing accepts connections on the loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes a port from for every outgoing connection and every bind
    to port 0 (Linux's default when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port nothing listens on, for a server about to start (tests, benches,
    `campaign demo` when 7233/8233 are taken).

    Picked at random below the kernel's ephemeral range, not by binding port 0: a port the
    kernel handed out and that was then released can be taken by any outgoing connection or
    any server's own bind to port 0 before the intended server binds it (a dev server's UI
    once failed so, "bind: address already in use", while tests ran beside it). Below the
    range only another explicit pick can take it.
    """
    low = ephemeral_ports()[0]
    first = max(1024, low - 12000)
    for _ in range(200):
        port = random.SystemRandom().randint(first, low - 1)
        if port_bindable(port):
            return port
    raise RuntimeError(f"no free loopback port in {first}-{low - 1}")


def port_bindable(port: int) -> bool:
    """True when a server could bind the loopback port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
