"""Free loopback ports."""

from __future__ import annotations

import socket
from collections import deque

# Ports handed out recently in this process: a port picked but not bound yet is free to the
# kernel, which may hand it out again (the demo picks four ports before binding any of them).
_recent: deque[int] = deque(maxlen=512)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, and not one this process was given recently."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _recent:
            _recent.append(port)
            return port
    raise OSError("no free port that was not handed out recently")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
