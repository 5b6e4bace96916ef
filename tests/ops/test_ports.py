"""Ports for the servers tests and `campaign demo` start: picked where no one else picks."""

from __future__ import annotations

import socket

from campaign_core.ports import ephemeral_ports, free_port, port_bindable, port_free


def test_a_free_port_is_below_the_kernels_ephemeral_range_and_bindable() -> None:
    low, high = ephemeral_ports()
    assert 1024 < low < high
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < low for p in ports)
    assert len(ports) > 1  # picked at random, not one fixed port
    for port in ports:
        assert port_bindable(port) and port_free(port)


def test_a_port_in_use_is_neither_bindable_nor_free() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen()
        port = server.getsockname()[1]
        assert not port_bindable(port)
        assert not port_free(port)
