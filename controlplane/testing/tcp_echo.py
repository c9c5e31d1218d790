"""A TCP echo backend that says who it is, for TCP routing tests.

Each connection gets ``<name> `` followed by every line the client sends, echoed back, so a
client can count which backend a TCP proxy picked. Runs in a thread of the test process, or as
a process of its own (``python -m controlplane.testing.tcp_echo NAME HOST PORT``, used inside
network namespaces).
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from collections import Counter


class TcpEchoBackend:
    def __init__(self, name: str, host: str, port: int, greet_only: bool = False) -> None:
        """``greet_only``: answer the first bytes of any protocol (a TLS ClientHello, say)
        with ``<name>\n`` and close, instead of echoing lines."""
        self.name = name
        self.host = host
        self.port = port
        self.connections = 0
        self._lock = threading.Lock()
        backend = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with backend._lock:
                    backend.connections += 1
                if greet_only:
                    if self.request.recv(65536):
                        self.wfile.write(f"{backend.name}\n".encode())
                    return
                for line in self.rfile:
                    self.wfile.write(f"{backend.name} ".encode() + line)
                    self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"tcp-echo-{name}", daemon=True
        )

    def start(self) -> TcpEchoBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TcpEchoBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def echo_once(host: str, port: int, text: str = "hello", timeout: float = 5.0) -> str:
    """Open a connection, send one line, return the reply line (without the newline)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(text.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode().rstrip("\n")


def count_echo_backends(host: str, port: int, connections: int) -> Counter[str]:
    """One line over each of ``connections`` new connections; count replies by backend name
    (a connection that fails or gets no reply counts as ``"error"``)."""
    counts: Counter[str] = Counter()
    for _ in range(connections):
        try:
            reply = echo_once(host, port)
        except OSError:
            counts["error"] += 1
            continue
        name, _, echoed = reply.partition(" ")
        counts[name if echoed == "hello" else "error"] += 1
    return counts


if __name__ == "__main__":
    backend = TcpEchoBackend(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print("ready", flush=True)
    backend._server.serve_forever()
