"""Test backends: tiny HTTP servers on loopback addresses that say who they are.

Each backend answers with JSON naming itself (and echoing the request's path, method and
headers), so a client can count which version served a request and see what arrived.
Behaviour can be scripted (fail the first N requests, delay, fixed status, extra response
headers) for retry, timeout and outlier tests. Requests are recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float


Behaviour = Callable[["Backend", Seen], Reply | None]


class Backend:
    def __init__(self, name: str, host: str, port: int, behaviour: Behaviour | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.behaviour = behaviour
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                headers: dict[str, str] = {}
                for key, value in self.headers.items():
                    key = key.lower()
                    # Repeated headers are one comma-joined value, as HTTP defines them.
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
                seen = Seen(self.command, self.path, headers, time.time())
                with backend._lock:
                    backend.requests.append(seen)
                reply = backend.behaviour(backend, seen) if backend.behaviour else None
                reply = reply or Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body
                if body is None:
                    body = json.dumps(
                        {
                            "name": backend.name,
                            "path": seen.path,
                            "method": seen.method,
                            "headers": seen.headers,
                        }
                    ).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("x-backend", backend.name)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"backend-{name}", daemon=True
        )

    def start(self) -> Backend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- scripted behaviours ------------------------------------------------------------------


def _first(count: int, reply: Reply) -> Behaviour:
    """Answer ``reply`` to the next ``count`` requests, then normally."""
    remaining = [count]
    lock = threading.Lock()

    def behaviour(backend: Backend, seen: Seen) -> Reply | None:
        with lock:
            if remaining[0] > 0:
                remaining[0] -= 1
                return reply
        return None

    return behaviour


def fail_first(count: int, status: int = 503) -> Behaviour:
    """Answer ``status`` to the next ``count`` requests, then normally."""
    return _first(count, Reply(status=status))


def delay_first(count: int, seconds: float) -> Behaviour:
    """Hold the next ``count`` requests for ``seconds`` before answering, then answer at once."""
    return _first(count, Reply(delay=seconds))


def always(
    status: int = 200, delay: float = 0.0, headers: dict[str, str] | None = None
) -> Behaviour:
    """The same reply to every request."""

    def behaviour(backend: Backend, seen: Seen) -> Reply | None:
        return Reply(status=status, delay=delay, headers=dict(headers or {}))

    return behaviour
