"""The debug HTTP port: health, readiness, Prometheus metrics, what every proxy was sent and
ACKed (read by ``controlplane proxy-status`` and ``proxy-config``).

Built with the xDS server (streams, metrics) and the compiled-config cache (what the last
publish did, the snapshot and its statuses); it only reads them."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from controlplane.api.text import printable
from controlplane.cache.compiled import CompiledCache
from controlplane.cache.interface import BY_SHORT_NAME, SECRET, SHORT_NAMES, redacted
from controlplane.xds.server import PortInUse, XdsServer

log = logging.getLogger("controlplane.debug")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, sort_keys=True, default=str) + "\n",
        status=status,
        content_type="application/json",
    )


# What anyone who reaches the port may read: kubelet's probes and Prometheus. Everything else
# (what every proxy was sent, its identity, every resource's status) is answered only to a
# client on the same host (or in the same pod: `kubectl port-forward` arrives on loopback),
# or one that presents the debug token.
PUBLIC_PATHS = frozenset({"/healthz", "/ready", "/metrics"})


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


class DebugServer:
    """``debug_token`` (optional): a client elsewhere may read the debug endpoints with
    ``Authorization: Bearer <token>``; without it only loopback clients can."""

    def __init__(
        self,
        xds: XdsServer,
        compiled: CompiledCache,
        ready: Callable[[], bool] = lambda: True,
        debug_token: str | None = None,
    ) -> None:
        self.delivery = xds.delivery
        self.compiled = compiled
        self.ready = ready
        self.debug_token = debug_token
        self.app = web.Application(middlewares=[self._guard])
        self.app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/ready", self._ready),
                web.get("/metrics", self._metrics),
                web.get("/debug/push_status", self._push_status),
                web.get("/debug/syncz", self._syncz),
                web.get("/debug/config_dump", self._config_dump),
                web.get("/debug/status", self._status),
                web.get("/debug/gateway_api_status", self._gateway_api_status),
            ]
        )
        self.extra_routes = self.app.router
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 15014) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=False)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise PortInUse(f"cannot listen for debug on {host}:{port}: {reason}") from None
        server = site._server  # aiohttp keeps the bound socket here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("debug endpoints on http://%s:%d", host, self.port)
        return self.port

    @web.middleware
    async def _guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or _is_loopback(request.remote):
            return await handler(request)
        token = self.debug_token
        given = request.headers.get("Authorization", "")
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return await handler(request)
        log.warning(
            "debug port: %s from %s refused (not loopback, no valid debug token)",
            printable(request.path),
            request.remote,
        )
        return _json(
            {
                "error": "the debug endpoints answer loopback clients only (use kubectl "
                "port-forward or exec) or a client presenting the debug token"
            },
            status=403,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ready(self, request: web.Request) -> web.Response:
        """Ready once the sources have loaded (``ready``) and the xDS side is running."""
        if self.ready() and self.compiled.running:
            return web.Response(text="ready\n")
        return web.Response(text="not ready\n", status=503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self.delivery.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _push_status(self, request: web.Request) -> web.Response:
        """What the last publish did: keys changed, builds inherited, streams woken."""
        return _json(
            {
                "last_publish": self.compiled.last_publish,
                "queued": self.delivery.queued,
                "pushes": self.delivery.pushes,
                "connected": len(self.delivery.streams),
            }
        )

    async def _syncz(self, request: web.Request) -> web.Response:
        return _json(
            {
                "snapshot_version": self.compiled.snapshot.version,
                "change_seen_at": self.compiled.change_seen_at,
                "proxies": self.delivery.describe(),
            }
        )

    async def _status(self, request: web.Request) -> web.Response:
        snapshot = self.compiled.store.snapshot
        out = []
        for key, status in sorted(snapshot.status.items(), key=lambda kv: str(kv[0])):
            out.append(
                {
                    "resource": str(key),
                    "accepted": status.accepted,
                    "reconciled": status.reconciled,
                    "origin": status.origin,
                    "issues": [str(i) for i in status.issues],
                }
            )
        return _json(out)

    async def _gateway_api_status(self, request: web.Request) -> web.Response:
        """The Gateway API status (part "gwapi"), as the leader writes it in cluster mode."""
        snapshot = self.compiled.store.snapshot
        found = snapshot.gateway_api_status
        return _json({str(key): found[key] for key in sorted(found, key=str)})

    async def _config_dump(self, request: web.Request) -> web.Response:
        node = request.query.get("proxy", "")
        wanted = request.query.get("type")
        streams = [s for s in self.delivery.streams.values() if s.proxy and s.proxy.node_id == node]
        if not streams:
            return _json({"error": f"no connected proxy {node!r}"}, status=404)
        stream: Any = streams[-1]
        types = [BY_SHORT_NAME[wanted]] if wanted in BY_SHORT_NAME else list(SHORT_NAMES)
        out: dict[str, Any] = {}
        for type_url in types:
            state = stream.states.get(type_url)
            sent = state.sent_view if state is not None else {}
            out[SHORT_NAMES[type_url]] = [
                redacted(sent[name].message)
                if type_url == SECRET
                else json_format.MessageToDict(sent[name].message)
                for name in sorted(sent)
            ]
        return _json({"node_id": node, "protocol": stream.protocol, "resources": out})
