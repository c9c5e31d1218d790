"""A TCP (and TLS) echo server that answers like the Gateway API conformance suite's
``tcp-backend`` (``conformance/echo-basic/tcpserver`` of the pinned module), and the suite's
client exchange (``conformance/utils/tcp``), for the TLSRoute and TCPRoute conformance tests.

The protocol, as upstream's server speaks it: on connect (after the TLS handshake, on the TLS
port) the welcome line ``Gateway API Test TCP Server``; then per line ``PING`` -> ``PONG``,
``IS_TLS`` -> ``true``/``false``, ``TEST`` -> one JSON line with the server's context
(namespace, pod, service, ports), ``isTLS`` and, over TLS, the SNI name and TLS version it saw.
The suite knows the backend by the pod name's prefix.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WELCOME = "Gateway API Test TCP Server\n"


@dataclass(frozen=True)
class Identity:
    namespace: str
    service: str
    pod: str


class SuiteTcpServer:
    """Upstream's tcpserver on ``host:port``; TLS when given a certificate and key."""

    def __init__(
        self,
        identity: Identity,
        host: str,
        port: int,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> None:
        context: ssl.SSLContext | None = None
        if cert is not None and key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        server_context = {
            "namespace": identity.namespace,
            "ingress": "",
            "service": identity.service,
            "pod": identity.pod,
            "tcpport": str(port),
        }

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                conn = self.request
                assertions: dict[str, Any] = {**server_context, "isTLS": False}
                if isinstance(conn, ssl.SSLSocket):
                    assertions["isTLS"] = True
                    assertions["tls"] = {
                        "version": {"TLSv1.3": "TLS 1.3", "TLSv1.2": "TLS 1.2"}.get(
                            conn.version() or "", conn.version() or ""
                        ),
                        "serverName": getattr(conn, "sni", "") or "",
                        "cipherSuite": (conn.cipher() or ("",))[0],
                    }
                self.wfile.write(WELCOME.encode())
                self.wfile.flush()
                for raw in self.rfile:
                    line = raw.decode().strip()
                    if line == "TEST":
                        self.wfile.write(json.dumps(assertions).encode() + b"\n")
                    elif line == "IS_TLS":
                        self.wfile.write(b"true\n" if assertions["isTLS"] else b"false\n")
                    elif line == "PING":
                        self.wfile.write(b"PONG\n")
                    self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self) -> tuple[Any, Any]:
                raw, address = self.socket.accept()
                if context is None:
                    return raw, address
                raw.settimeout(5)
                seen: dict[str, str] = {}

                def remember(sock: ssl.SSLSocket, name: str | None, _ctx: Any) -> None:
                    seen["sni"] = name or ""

                context.sni_callback = remember
                tls = context.wrap_socket(raw, server_side=True)
                tls.sni = seen.get("sni", "")  # type: ignore[attr-defined]
                tls.settimeout(None)
                return tls, address

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a refused or cut handshake is the client's business

        self.server = Server((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def exchange(
    port: int,
    server_name: str | None = None,
    cafile: Path | None = None,
    host: str = "127.0.0.1",
    timeout: float = 3.0,
) -> dict[str, Any]:
    """The suite's client exchange (utils/tcp WaitForValidTCPResponse): the welcome line,
    PING/PONG, IS_TLS, then TEST's JSON, which is returned (with ``is_tls`` the answer to
    IS_TLS). Over TLS (``server_name``) the backend's certificate is verified against
    ``cafile``. Raises OSError (or ssl.SSLError) when the gateway refuses the connection."""
    raw = socket.create_connection((host, port), timeout=timeout)
    conn: socket.socket = raw
    if server_name is not None:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        conn = context.wrap_socket(raw, server_hostname=server_name)
    with conn:
        reader = conn.makefile("rb")
        welcome = reader.readline().decode()
        if welcome != WELCOME:
            raise ConnectionError(f"no welcome line: {welcome!r}")
        conn.sendall(b"PING\n")
        if reader.readline() != b"PONG\n":
            raise ConnectionError("no PONG")
        conn.sendall(b"IS_TLS\n")
        is_tls = reader.readline().decode().strip()
        conn.sendall(b"TEST\n")
        payload: dict[str, Any] = json.loads(reader.readline())
        payload["is_tls"] = is_tls
        return payload
