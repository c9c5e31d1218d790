"""Pure compilation: (snapshot, proxy) -> the Envoy resources that proxy should have.

No I/O, no asyncio. A ``SnapshotCompiler`` belongs to one snapshot and memoizes every
resource it builds under a key of exactly the inputs that shape it, so proxies that would get
an identical resource share one ``CompiledResource`` (one message, one serialization).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from controlplane.compile import resources as types
from controlplane.compile.clusters import service_clusters
from controlplane.compile.endpoints import build_load_assignment
from controlplane.compile.listeners import local_outbound_listener
from controlplane.compile.naming import local_route_name, parse_cluster_name
from controlplane.compile.proxy import LOCAL, Proxy
from controlplane.compile.resources import CompiledResource
from controlplane.compile.routes import build_route_configuration, build_virtual_host, domains_for
from controlplane.compile.tls import UpstreamSecurity, secure_cluster, upstream_security
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
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._memo: dict[Hashable, object] = {}
        self._uses_source_labels = any(
            m.source_labels
            for vs in snapshot.of_kind("VirtualService").values()
            for http in vs.spec.http
            for m in http.match
        )

    def _cached(self, key: Hashable, build: Callable[[], object]) -> object:
        found = self._memo.get(key)
        if found is None:
            found = build()
            self._memo[key] = found
        return found

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
            for resource in self._service_clusters(
                service, proxy.namespace, proxy.trust_domain if proxy.identity else None
            ):
                out[resource.name] = resource
        return out

    def _service_clusters(
        self, service: MeshService, namespace: str, trust_domain: str | None = None
    ) -> list[CompiledResource]:
        """``trust_domain`` is the client's when it has a certificate (auto mTLS), else None."""
        rule = self.snapshot.destination_rule(service.hostname, namespace)
        security = self.upstream_security(service, trust_domain)
        key = ("cds", service.hostname, rule.sources if rule else (), security)

        def build() -> list[CompiledResource]:
            return [
                CompiledResource(c.name, secure_cluster(c, rule, security))
                for c in service_clusters(service, rule)
            ]

        return self._cached(key, build)  # type: ignore[return-value]

    def upstream_security(self, service: MeshService, trust_domain: str | None) -> UpstreamSecurity:
        """What mTLS to the service depends on: its workloads' identities and peer modes."""

        def build() -> UpstreamSecurity:
            if trust_domain is None:
                return UpstreamSecurity(auto_mtls=False)
            return upstream_security(
                service,
                self.snapshot.endpoints(service.hostname),
                self.snapshot.of_kind("PeerAuthentication").values(),
                trust_domain,
            )

        return self._cached(("upstream-security", service.hostname, trust_domain), build)  # type: ignore[return-value]

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
                    hosts.append(
                        build_virtual_host(self.snapshot, service, sport.port, proxy, domains)
                    )
            config = build_route_configuration(local_route_name(port), hosts)
            return CompiledResource(config.name, config)

        return self._cached(key, build)  # type: ignore[return-value]
