"""Pure compilation: (snapshot, proxy) -> the Envoy resources that proxy should have.

No I/O, no asyncio. A ``SnapshotCompiler`` belongs to one snapshot and memoizes every
resource it builds under a key of exactly the inputs that shape it, so proxies that would get
an identical resource share one ``CompiledResource`` (one message, one serialization).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.api.issues import ResourceKey
from controlplane.compile import resources as types
from controlplane.compile.clusters import service_clusters
from controlplane.compile.endpoints import build_load_assignment
from controlplane.compile.listeners import local_outbound_listener
from controlplane.compile.naming import local_route_name, parse_cluster_name
from controlplane.compile.proxy import LOCAL, Proxy
from controlplane.compile.resources import CompiledResource
from controlplane.compile.routes import build_route_configuration, build_virtual_host, domains_for
from controlplane.store.dependencies import (
    Token,
    change_tokens,
    inherit_indexes,
    inherit_lookups,
)
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import Snapshot, exported_to

__all__ = ["CompiledResource", "ProxyResources", "SnapshotCompiler", "types"]


@dataclass(frozen=True)
class ProxyResources:
    """Everything one proxy should have, by type URL then resource name."""

    by_type: Mapping[str, Mapping[str, CompiledResource]]

    def of(self, type_url: str) -> Mapping[str, CompiledResource]:
        return self.by_type.get(type_url, {})


class SnapshotCompiler:
    def __init__(
        self,
        snapshot: Snapshot,
        previous: SnapshotCompiler | None = None,
        touched: Collection[Token] | None = None,
    ) -> None:
        """With ``previous`` and the ``touched`` tokens of the change from its snapshot to
        this one, every memoized build whose recorded dependencies the change did not touch
        is inherited instead of rebuilt (see ``_cached``)."""
        self.snapshot = snapshot
        self._memo: dict[Hashable, tuple[object, frozenset[Token]]] = {}
        self.builds = 0  # memo misses: how much this compiler actually built
        if previous is not None and touched is not None:
            hit = frozenset(touched)
            self._memo = {
                k: entry for k, entry in previous._memo.items() if entry[1].isdisjoint(hit)
            }
        self._uses_source_labels = any(
            m.source_labels
            for vs in snapshot.of_kind("VirtualService").values()
            for http in vs.spec.http
            for m in http.match
        )
        # That read shapes memo keys, not values: it is no build's dependency.
        snapshot.forget_reads()

    @classmethod
    def following(
        cls, previous: SnapshotCompiler, snapshot: Snapshot, changed: Collection[ResourceKey]
    ) -> tuple[SnapshotCompiler, frozenset[Token]]:
        """The compiler for ``snapshot``, which differs from ``previous``'s by the keys
        ``changed``: it inherits every build (and the snapshot every index and lookup) the
        change did not touch. Also returns the touched dependency tokens."""
        old = previous.snapshot
        inherit_indexes(snapshot, old, {k.kind for k in changed})
        touched = change_tokens(old, snapshot, changed)
        inherit_lookups(snapshot, old, touched)
        return cls(snapshot, previous, touched), touched

    def _cached(self, key: Hashable, build: Callable[[], object]) -> object:
        """The value built for ``key``, building it once per snapshot (or not at all, when a
        previous compiler's value is still valid).

        A build's dependencies are recorded automatically: every snapshot accessor it reads
        (directly or through nested cached builds), plus what its caller read directly since
        its previous build of the same family (``key[0]``): inputs it may pass into the
        build. A value taken from another cached build and passed in must be part of ``key``.
        """
        snapshot = self.snapshot
        family = key[0] if isinstance(key, tuple) and key else key
        entry = self._memo.get(key)
        if entry is None:
            recorder = snapshot.start_recording(family)
            try:
                value = build()
            finally:
                snapshot.stop_recording(recorder)
            entry = (value, frozenset(recorder.tokens))
            self._memo[key] = entry
            self.builds += 1
            snapshot.depends_on(entry[1])
        else:
            snapshot.reused(family, entry[1])
        return entry[0]

    def memo_dependencies(self) -> Mapping[Hashable, frozenset[Token]]:
        """Memo key -> the dependency tokens recorded for it (for tests and debugging)."""
        return {k: entry[1] for k, entry in self._memo.items()}

    # ---- per proxy ----------------------------------------------------------------------

    def compile(self, proxy: Proxy) -> ProxyResources:
        clusters = self.clusters(proxy)
        endpoints = self.endpoints(proxy, clusters.keys())
        if proxy.mode == LOCAL and proxy.local_outbound_port:
            listeners = {r.name: r for r in [self._local_listener(proxy.local_outbound_port)]}
            routes = {r.name: r for r in [self._local_routes(proxy)]}
        else:
            listeners, routes = {}, {}
        return ProxyResources(
            {
                types.CLUSTER: clusters,
                types.ENDPOINT: endpoints,
                types.LISTENER: listeners,
                types.ROUTE: routes,
            }
        )

    def visible_services(self, namespace: str) -> tuple[MeshService, ...]:
        def build() -> tuple[MeshService, ...]:
            return tuple(
                svc
                for host, svc in sorted(self.snapshot.services.items())
                if exported_to(svc.export_to, svc.namespace, namespace)
            )

        return self._cached(("services", namespace), build)  # type: ignore[return-value]

    def clusters(self, proxy: Proxy) -> dict[str, CompiledResource]:
        out: dict[str, CompiledResource] = {}
        for service in self.visible_services(proxy.namespace):
            for resource in self._service_clusters(service, proxy.namespace):
                out[resource.name] = resource
        return out

    def _service_clusters(self, service: MeshService, namespace: str) -> list[CompiledResource]:
        rule = self.snapshot.destination_rule(service.hostname, namespace)
        key = ("cds", service.hostname, rule.sources if rule else ())

        def build() -> list[CompiledResource]:
            return [CompiledResource(c.name, c) for c in service_clusters(service, rule)]

        return self._cached(key, build)  # type: ignore[return-value]

    def endpoints(self, proxy: Proxy, cluster_names: object) -> dict[str, CompiledResource]:
        out: dict[str, CompiledResource] = {}
        for name in cluster_names:  # type: ignore[attr-defined]
            resource = self.load_assignment(name, proxy.namespace)
            if resource is not None:
                out[name] = resource
        return out

    def load_assignment(self, cluster_name: str, namespace: str) -> CompiledResource | None:
        parsed = parse_cluster_name(cluster_name)
        if parsed is None or parsed.direction != "outbound":
            return None
        labels: tuple[tuple[str, str], ...] | None = None
        if parsed.subset:
            rule = self.snapshot.destination_rule(parsed.host, namespace)
            subset = rule.subset(parsed.subset) if rule else None
            if subset is None:
                return None
            labels = tuple(sorted(subset.labels.items()))
        key = ("eds", cluster_name, labels)

        def build() -> CompiledResource:
            cla = build_load_assignment(
                cluster_name,
                self.snapshot.endpoints(parsed.host),
                parsed.port,
                dict(labels) if labels is not None else None,
            )
            return CompiledResource(cluster_name, cla)

        return self._cached(key, build)  # type: ignore[return-value]

    def _local_listener(self, port: int) -> CompiledResource:
        def build() -> CompiledResource:
            listener = local_outbound_listener(port)
            return CompiledResource(listener.name, listener)

        return self._cached(("lds-local", port), build)  # type: ignore[return-value]

    def _virtual_host(
        self,
        service: MeshService,
        port: int,
        proxy: Proxy,
        domains: list[str],
        labels: tuple[tuple[str, str], ...],
    ) -> rc.VirtualHost:
        # One virtual host changes when one VirtualService does: memoized apart from the
        # route configuration so that a change rebuilds one host, not all of them.
        key = ("vhost", service.hostname, port, proxy.namespace, labels, tuple(domains))

        def build() -> rc.VirtualHost:
            return build_virtual_host(self.snapshot, service, port, proxy, domains)

        return self._cached(key, build)  # type: ignore[return-value]

    def _local_routes(self, proxy: Proxy) -> CompiledResource:
        port = proxy.local_outbound_port
        assert port is not None
        labels = proxy.labels_key if self._uses_source_labels else ()
        key = ("rds-local", port, proxy.namespace, labels)

        def build() -> CompiledResource:
            hosts = []
            for service in self.visible_services(proxy.namespace):
                http_ports = [p for p in service.ports if p.is_http]
                for i, sport in enumerate(http_ports):
                    domains = domains_for(
                        service, sport.port, proxy.namespace, with_bare_names=i == 0
                    )
                    hosts.append(self._virtual_host(service, sport.port, proxy, domains, labels))
            config = build_route_configuration(local_route_name(port), hosts)
            return CompiledResource(config.name, config)

        return self._cached(key, build)  # type: ignore[return-value]
