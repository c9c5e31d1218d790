"""A load-generator process: many simulated proxies (real ADS over grpc.aio, one channel each)
that subscribe like Envoy, ACK and timestamp every response.

The controller (bench/run.py) drives each worker over a multiprocessing pipe:
``start`` (connect all at once), ``status``, ``watch`` (from time T0, note for each proxy
when the first response of a type containing a resource name arrived), ``collect``,
``bad`` (misbehaving clients), ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane.compile.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.testing.ads_client import (
    AdsConnection,
    Received,
    SimulatedProxy,
    delta_request,
    node,
    sotw_request,
)


@dataclass
class Watch:
    type_url: str
    since: float
    name: str | None
    seen: dict[int, float] = field(default_factory=dict)  # proxy index -> latency


def _names_in(response: Any, delta: bool, type_url: str) -> set[str]:
    if delta:
        return {r.name for r in response.resources}
    if type_url == ENDPOINT:
        out = set()
        for any_message in response.resources:
            cla = endpoint_pb2.ClusterLoadAssignment()
            any_message.Unpack(cla)
            out.add(cla.cluster_name)
        return out
    return set()


class Worker:
    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.proxies: list[SimulatedProxy] = []
        self.index: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.watches: dict[str, Watch] = {}
        self.active: dict[tuple[str, str | None], list[Watch]] = {}
        self.named_types: set[str] = set()
        self.errors: list[str] = []
        self.bad_tasks: list[asyncio.Task[None]] = []
        self.bad_stats: dict[str, int] = {}

    def _on_response(self, proxy: SimulatedProxy, received: Received, response: Any) -> None:
        # Watches are indexed by (type, resource name), so that hundreds of pending watches
        # (a churn run) do not make every response cost hundreds of checks.
        if not self.active:
            return
        i = self.index[proxy.node_id]
        candidates = list(self.active.get((received.type_url, None), ()))
        if received.type_url in self.named_types:
            for name in _names_in(response, proxy.delta, received.type_url):
                candidates.extend(self.active.get((received.type_url, name), ()))
        for watch in candidates:
            if i in watch.seen or received.at < watch.since:
                continue
            watch.seen[i] = received.at - watch.since
            if len(watch.seen) >= len(self.proxies):
                self._deactivate(watch)

    def _activate(self, watch: Watch) -> None:
        self.active.setdefault((watch.type_url, watch.name), []).append(watch)
        if watch.name is not None:
            self.named_types.add(watch.type_url)

    def _deactivate(self, watch: Watch) -> None:
        key = (watch.type_url, watch.name)
        pending = self.active.get(key, [])
        if watch in pending:
            pending.remove(watch)
        if not pending:
            self.active.pop(key, None)

    async def _run_proxy(self, proxy: SimulatedProxy) -> None:
        try:
            await proxy.run(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded: a lost proxy is a benchmark failure
            self.errors.append(f"{proxy.node_id}: {type(exc).__name__}: {exc}")

    def start(
        self,
        target: str,
        node_ids: list[str],
        metadata: dict[str, str],
        delta: bool,
        calls: dict[str, list[str]] | None = None,
    ):
        """``calls``: node id -> the Hosts an on-demand proxy calls (see SimulatedProxy)."""
        for node_id in node_ids:
            proxy = SimulatedProxy(
                target,
                node_id,
                metadata,
                delta=delta,
                on_response=self._on_response,
                calls=tuple((calls or {}).get(node_id, ())),
            )
            self.index[node_id] = len(self.proxies)
            self.proxies.append(proxy)
        for proxy in self.proxies[-len(node_ids) :]:
            self.tasks.append(asyncio.create_task(self._run_proxy(proxy)))

    def status(self) -> dict[str, Any]:
        full = [p.first_full_at for p in self.proxies if p.first_full_at]
        return {
            "proxies": len(self.proxies),
            "full": len(full),
            "last_full_at": max(full) if full else 0.0,
            "first_full_at": min(full) if full else 0.0,
            "errors": (self.errors + [d for p in self.proxies for d in p.disconnects])[:10],
            "error_count": len(self.errors),
            "disconnects": sum(len(p.disconnects) for p in self.proxies),
            "received": sum(p.received for p in self.proxies),
            "received_bytes": sum(p.received_bytes for p in self.proxies),
            "bad": dict(self.bad_stats),
        }

    # ---- misbehaving clients ----------------------------------------------------------------

    async def _bad(self, kind: str, target: str, node_id: str, metadata: dict[str, str]) -> None:
        me = node(node_id, metadata)
        conn = await AdsConnection(target, delta=False).open()
        stats = self.bad_stats
        try:
            if kind == "garbage":
                # Unknown type URLs, forever (bounded rate).
                await conn.send(sotw_request("type.googleapis.com/no.such.Type", node_message=me))
                while True:
                    await conn.send(sotw_request("garbage/" + "x" * 64, ["a", "b"]))
                    stats[kind] = stats.get(kind, 0) + 1
                    await asyncio.sleep(0.05)
            elif kind == "unknown-names":
                await conn.send(sotw_request(CLUSTER, node_message=me))
                first = await conn.recv(60)
                await conn.send(
                    sotw_request(CLUSTER, version=first.version_info, nonce=first.nonce)
                )
                names = [f"outbound|80||no-such-{i}.example" for i in range(200)]
                await conn.send(sotw_request(ENDPOINT, names))
                await conn.send(sotw_request(ROUTE, ["no-such-route"]))
                while True:
                    await conn.recv(None)
                    stats[kind] = stats.get(kind, 0) + 1
            elif kind == "nack-storm":
                # NACK everything and keep asking again from scratch.
                await conn.send(sotw_request(CLUSTER, node_message=me))
                await conn.send(sotw_request(LISTENER))
                while True:
                    response = await conn.recv(None)
                    await conn.send(
                        sotw_request(
                            response.type_url, nonce=response.nonce, error="bench: rejected"
                        )
                    )
                    stats[kind] = stats.get(kind, 0) + 1
                    await asyncio.sleep(0.1)
                    await conn.send(sotw_request(response.type_url))
            elif kind == "never-reads":
                # Subscribes to everything, then never reads a byte.
                delta_conn = await AdsConnection(target, delta=True).open()
                await conn.close()
                conn = delta_conn
                await conn.send(delta_request(CLUSTER, node_message=me))
                await conn.send(delta_request(LISTENER))
                stats[kind] = stats.get(kind, 0) + 1
                await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stats[f"{kind}-ended"] = stats.get(f"{kind}-ended", 0) + 1
            logging.debug("bad client %s ended: %s", node_id, exc)
        finally:
            await conn.close()

    def bad(self, target: str, kinds: dict[str, int], metadata: dict[str, str]) -> None:
        for kind, count in kinds.items():
            for i in range(count):
                node_id = f"sidecar~10.255.0.{i}~bad-{kind}-{i}.ns-0~ns-0.svc.cluster.local"
                self.bad_tasks.append(
                    asyncio.create_task(self._bad(kind, target, node_id, metadata))
                )

    # ---- the command loop -------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, args = await loop.run_in_executor(None, self.pipe.recv)
            if command == "start":
                self.start(**args)
                self.pipe.send({"ok": True})
            elif command == "status":
                self.pipe.send(self.status())
            elif command == "watch":
                watch = Watch(args["type_url"], args["since"], args["name"])
                self.watches[args["id"]] = watch
                self._activate(watch)
                self.pipe.send({"ok": True})
            elif command == "peek":
                watch = self.watches[args["id"]]
                self.pipe.send({"missing": len(self.proxies) - len(watch.seen)})
            elif command == "collect":
                watch = self.watches.pop(args["id"])
                self._deactivate(watch)
                latencies = array("d", watch.seen.values())
                self.pipe.send(
                    {"latencies": latencies, "missing": len(self.proxies) - len(watch.seen)}
                )
            elif command == "bad":
                self.bad(**args)
                self.pipe.send({"ok": True})
            elif command == "stop":
                for task in self.tasks + self.bad_tasks:
                    task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        asyncio.gather(*self.tasks, *self.bad_tasks, return_exceptions=True), 10
                    )
                self.pipe.send(self.status())
                return


def worker_main(pipe: Connection) -> None:
    """Entry point of a worker process."""
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(Worker(pipe).serve())
