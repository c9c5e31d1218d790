"""Ports picked one after another before any is bound are all different (the demo and the
harness pick several at once; a repeat made Envoy's admin port collide with the debug port)."""

from __future__ import annotations

import socket

from controlplane.testing.ports import free_port, port_is_free


def test_ports_picked_in_a_row_never_repeat() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_a_picked_port_can_be_bound_and_then_is_no_longer_free() -> None:
    port = free_port()
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free("127.0.0.1", port)
