"""Pure compilation: (snapshot, proxy) -> the Envoy resources that proxy should have.

No I/O, no asyncio. A ``SnapshotCompiler`` belongs to one snapshot and memoizes every
resource it builds under a key of exactly the inputs that shape it, so proxies that would get
an identical resource share one ``CompiledResource`` (one message, one serialization).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar, cast

from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.api.issues import ResourceKey
from controlplane.compile import cluster_policy
from controlplane.compile import resources as types
from controlplane.compile.authn import DISABLE, MtlsPolicy, resolve_mtls
from controlplane.compile.clusters import blackhole_cluster, passthrough_cluster, service_clusters
from controlplane.compile.endpoints import build_load_assignment
from controlplane.compile.inbound import (
    RESERVED_PORTS,
    InboundPort,
    inbound_cluster,
    inbound_filter_chains,
    inbound_passthrough_cluster,
    inbound_ports,
    local_inbound_listener,
    virtual_inbound_listener,
)
from controlplane.compile.inbound_security import InboundSecurity
from controlplane.compile.listeners import local_outbound_listener
from controlplane.compile.naming import (
    local_route_name,
    outbound_cluster_name,
    parse_cluster_name,
)
from controlplane.compile.outbound import (
    http_port_listener,
    local_tcp_listener,
    sniffing_port_listener,
    tcp_port_listener,
    virtual_outbound_listener,
)
from controlplane.compile.proxy import TRANSPARENT, Proxy
from controlplane.compile.rbac import WorkloadPolicies, policies_for
from controlplane.compile.resources import CompiledResource
from controlplane.compile.routes import (
    build_route_configuration,
    build_virtual_host,
    domains_for,
    port_route_configuration,
)
from controlplane.compile.tcp import outbound_tcp_chains
from controlplane.compile.tls import UpstreamSecurity, secure_cluster, upstream_security
from controlplane.store.dependencies import (
    Token,
    change_tokens,
    inherit_indexes,
    inherit_lookups,
)
from controlplane.store.registry import MeshEndpoint, MeshService
from controlplane.store.snapshot import Snapshot, exported_to, resolve_host

_T = TypeVar("_T")

__all__ = ["SHAPE_DERIVED", "CompiledResource", "ProxyResources", "SnapshotCompiler", "types"]

# Proxy fields whose whole effect on compilation is a value derived from them and the
# snapshot: two proxies that differ in such a field but agree on the derived value compile
# alike (a thousand sidecars at a thousand addresses that no Service selects get one shape).
SHAPE_DERIVED: Mapping[str, Callable[[Snapshot, Proxy], Hashable]] = {
    "ips": inbound_ports,  # read only to find the ports the workload serves
}


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
            for section in (vs.spec.http, vs.spec.tcp, vs.spec.tls)
            for route in section
            for m in route.match
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

    def _cached(self, key: Hashable, build: Callable[[], _T], *, seeded: bool = True) -> _T:
        """The value built for ``key``, building it once per snapshot (or not at all, when a
        previous compiler's value is still valid).

        A build's dependencies are recorded automatically: every snapshot accessor it reads
        (directly or through nested cached builds), plus what its caller read directly since
        its previous build of the same family (``key[0]``): inputs it may pass into the
        build. A value taken from another cached build and passed in must be part of ``key``.
        A build that is a function of its key and the snapshot alone says ``seeded=False``, so
        that the reads of whichever build first asked for it are not counted as its inputs.
        """
        snapshot = self.snapshot
        family = key[0] if isinstance(key, tuple) and key else key
        entry = self._memo.get(key)
        if entry is None:
            recorder = snapshot.start_recording(family, seeded)
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
        return cast(_T, entry[0])  # one memo holds every family's values

    def memo_dependencies(self) -> Mapping[Hashable, frozenset[Token]]:
        """Memo key -> the dependency tokens recorded for it (for tests and debugging)."""
        return {k: entry[1] for k, entry in self._memo.items()}

    def _message(self, key: Hashable, factory: Callable[[], Any]) -> CompiledResource:
        """A named Envoy message built by ``factory`` (from ``key`` alone), memoized."""

        def build() -> CompiledResource:
            message = factory()
            return CompiledResource(message.name, message)

        return self._cached(key, build)

    # ---- per proxy ----------------------------------------------------------------------

    def compile(self, proxy: Proxy) -> ProxyResources:
        clusters = self.clusters(proxy)
        endpoints = self.endpoints(proxy, clusters.keys())
        ports = inbound_ports(self.snapshot, proxy)
        listeners: dict[str, CompiledResource] = {}
        routes: dict[str, CompiledResource] = {}
        if proxy.mode == TRANSPARENT:
            self._transparent_outbound(proxy, listeners, routes)
            found = self._virtual_inbound(proxy, ports)
            listeners[found.name] = found
        else:
            if proxy.local_outbound_port:
                found = self._local_listener(proxy.local_outbound_port)
                listeners[found.name] = found
                found = self._local_routes(proxy)
                routes[found.name] = found
            for found in self._local_tcp_listeners(proxy):
                listeners.setdefault(found.name, found)
            for port in ports:
                found = self._local_inbound(proxy, port)
                listeners.setdefault(found.name, found)
        for port in ports:
            found = self._inbound_cluster(proxy, port)
            clusters[found.name] = found
        if proxy.mode == TRANSPARENT:
            for found in self._static_clusters():
                clusters[found.name] = found
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

        return self._cached(("services", namespace), build)

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

        return self._cached(key, build)

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

        return self._cached(("upstream-security", service.hostname, trust_domain), build)

    def endpoints(self, proxy: Proxy, cluster_names: object) -> dict[str, CompiledResource]:
        out: dict[str, CompiledResource] = {}
        for name in cluster_names:  # type: ignore[attr-defined]
            resource = self.load_assignment(name, proxy.namespace, proxy)
            if resource is not None:
                out[name] = resource
        return out

    def load_assignment(
        self, cluster_name: str, namespace: str, proxy: Proxy | None = None
    ) -> CompiledResource | None:
        parsed = parse_cluster_name(cluster_name)
        if parsed is None or parsed.direction != "outbound":
            return None
        labels: tuple[tuple[str, str], ...] | None = None
        rule = self.snapshot.destination_rule(parsed.host, namespace)
        subset = None
        if parsed.subset:
            subset = rule.subset(parsed.subset) if rule else None
            if subset is None:
                return None
            labels = tuple(sorted(subset.labels.items()))
        policy = cluster_policy.effective_policy(
            rule.traffic_policy if rule else None, subset, parsed.port
        )
        if policy.load_balancer is not None and policy.load_balancer.simple == "PASSTHROUGH":
            return None  # an ORIGINAL_DST cluster has no endpoints
        locality = cluster_policy.locality_policy(policy, proxy)
        # Locality-aware assignments differ per client locality (and labels); others are shared.
        client = (
            (locality.proxy_locality, locality.proxy_labels, locality.failover, rule.sources)
            if locality is not None and rule is not None
            else None
        )
        key = ("eds", cluster_name, labels, client)

        def build() -> CompiledResource:
            cla = build_load_assignment(
                cluster_name,
                self._mtls_endpoints(self.snapshot.endpoints(parsed.host)),
                parsed.port,
                dict(labels) if labels is not None else None,
                locality,
            )
            return CompiledResource(cluster_name, cla)

        return self._cached(key, build)

    def _mtls_endpoints(self, endpoints: tuple[MeshEndpoint, ...]) -> tuple[MeshEndpoint, ...]:
        """As istiod's EDS: an endpoint whose own PeerAuthentication (for its port) is DISABLE
        loses its ``tlsMode: istio`` mark, so auto mTLS talks plaintext to it alone."""
        if not self.snapshot.of_kind("PeerAuthentication") and not self._rejected(
            "PeerAuthentication"
        ):
            return endpoints
        return tuple(
            replace(ep, tls_mode="disabled")
            if ep.tls_mode == "istio"
            and self.peer_authentication(ep.namespace, ep.labels).for_port(ep.port) == DISABLE
            else ep
            for ep in endpoints
        )

    def _local_listener(self, port: int) -> CompiledResource:
        def build() -> CompiledResource:
            listener = local_outbound_listener(port)
            return CompiledResource(listener.name, listener)

        return self._cached(("lds-local", port), build)

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

        return self._cached(key, build)

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

        return self._cached(key, build)

    # ---- transparent mode: outbound ---------------------------------------------------------

    def _transparent_outbound(
        self,
        proxy: Proxy,
        listeners: dict[str, CompiledResource],
        routes: dict[str, CompiledResource],
    ) -> None:
        """virtualOutbound, a ``0.0.0.0_<port>`` listener and RDS ``"<port>"`` per HTTP service
        port, a ``<VIP>_<port>`` listener per TCP/TLS service port."""
        found = self._message(("lds-virtual-outbound",), virtual_outbound_listener)
        listeners[found.name] = found
        services = self.visible_services(proxy.namespace)
        http_ports: set[int] = set()
        # Undeclared ports are sniffed: (VIP, cluster) of the services whose TCP falls back.
        sniffed: dict[int, list[tuple[str, str]]] = {}
        for service in services:
            for sport in service.ports:
                if sport.protocol == "UDP" or sport.port in RESERVED_PORTS:
                    continue
                if sport.is_http:
                    http_ports.add(sport.port)
                    if sport.protocol == "UNKNOWN":
                        targets = sniffed.setdefault(sport.port, [])
                        if service.cluster_ip:
                            cluster = outbound_cluster_name(sport.port, None, service.hostname)
                            targets.append((service.cluster_ip, cluster))
                elif service.cluster_ip:
                    tcp = self._tcp_listener(proxy, service, sport.port, sport.protocol)
                    listeners.setdefault(tcp.name, tcp)
        for port in sorted(http_ports):
            if port in sniffed:
                fallback = tuple(sorted(set(sniffed[port])))
                found = self._message(
                    ("lds-sniffed-port", port, fallback),
                    partial(sniffing_port_listener, port, fallback),
                )
            else:
                found = self._message(("lds-http-port", port), partial(http_port_listener, port))
            listeners[found.name] = found
            config = self._port_routes(proxy, port)
            routes[config.name] = config

    def _port_routes(self, proxy: Proxy, port: int) -> CompiledResource:
        labels = proxy.labels_key if self._uses_source_labels else ()
        key = ("rds-port", port, proxy.namespace, labels)

        def build() -> CompiledResource:
            services = self.visible_services(proxy.namespace)
            config = port_route_configuration(
                self.snapshot,
                services,
                port,
                proxy,
                lambda service, domains: self._virtual_host(service, port, proxy, domains, labels),
            )
            return CompiledResource(config.name, config)

        return self._cached(key, build)

    def _tcp_chains_key(
        self, proxy: Proxy, service: MeshService, port: int, protocol: str
    ) -> tuple[object, ...]:
        labels = proxy.labels_key if self._uses_source_labels else ()
        return (service.hostname, port, protocol, proxy.namespace, labels)

    def _tcp_listener(
        self, proxy: Proxy, service: MeshService, port: int, protocol: str
    ) -> CompiledResource:
        vip = service.cluster_ip
        assert vip is not None
        key = ("lds-tcp-port", vip, *self._tcp_chains_key(proxy, service, port, protocol))

        def build() -> CompiledResource:
            chains = outbound_tcp_chains(self.snapshot, service, port, protocol, proxy)
            listener = tcp_port_listener(vip, port, chains)
            return CompiledResource(listener.name, listener)

        return self._cached(key, build)

    def _static_clusters(self) -> list[CompiledResource]:
        def build() -> list[CompiledResource]:
            return [
                CompiledResource(c.name, c)
                for c in (blackhole_cluster(), passthrough_cluster(), inbound_passthrough_cluster())
            ]

        return self._cached(("cds-static",), build)

    # ---- inbound ----------------------------------------------------------------------------

    def _virtual_inbound(self, proxy: Proxy, ports: tuple[InboundPort, ...]) -> CompiledResource:
        security = tuple(self.inbound_security(proxy, port) for port in ports)
        passthrough = self.inbound_security(proxy, None)
        key = ("lds-virtual-inbound", proxy.mode, ports, security, passthrough)

        def build() -> CompiledResource:
            listener = virtual_inbound_listener(
                proxy,
                [inbound_filter_chains(proxy, p, s) for p, s in zip(ports, security, strict=True)],
                passthrough,
            )
            return CompiledResource(listener.name, listener)

        return self._cached(key, build)

    def _local_inbound(self, proxy: Proxy, port: InboundPort) -> CompiledResource:
        security = self.inbound_security(proxy, port)
        key = ("lds-local-inbound", proxy.mode, port, security)

        def build() -> CompiledResource:
            listener = local_inbound_listener(port, inbound_filter_chains(proxy, port, security))
            return CompiledResource(listener.name, listener)

        return self._cached(key, build)

    # ---- security: PeerAuthentication, AuthorizationPolicy ------------------------------------

    def peer_authentication(self, namespace: str, labels: Mapping[str, str]) -> MtlsPolicy:
        """The workload's effective PeerAuthentication (compile/authn.py)."""
        key = ("authn", namespace, tuple(sorted(labels.items())))

        def build() -> MtlsPolicy:
            return resolve_mtls(
                self.snapshot.of_kind("PeerAuthentication").values(),
                namespace,
                labels,
                rejected=self._rejected("PeerAuthentication"),
            )

        return self._cached(key, build, seeded=False)

    def authorization_policies(self, namespace: str, labels: Mapping[str, str]) -> WorkloadPolicies:
        """The AuthorizationPolicies that select the workload (compile/rbac.py)."""
        key = ("authz", namespace, tuple(sorted(labels.items())))

        def build() -> WorkloadPolicies:
            return policies_for(
                self.snapshot.of_kind("AuthorizationPolicy").values(),
                namespace,
                labels,
                rejected=self._rejected("AuthorizationPolicy"),
            )

        return self._cached(key, build, seeded=False)

    def _rejected(self, kind: str) -> tuple[ResourceKey, ...]:
        """Refused policies of ``kind`` with no good version (security fails closed on them)."""
        return self._cached(("rejected", kind), lambda: self.snapshot.rejected(kind), seeded=False)

    def inbound_security(self, proxy: Proxy, port: InboundPort | None) -> InboundSecurity:
        """The mTLS mode and policies of one inbound port (None: ports no Service declares)."""
        mtls = self.peer_authentication(proxy.namespace, proxy.labels)
        policies = self.authorization_policies(proxy.namespace, proxy.labels)
        mode = mtls.mode if port is None else mtls.for_port(port.target_port)
        return InboundSecurity.of(mode, bool(proxy.identity), policies)

    def _inbound_cluster(self, proxy: Proxy, port: InboundPort) -> CompiledResource:
        transparent = proxy.mode == TRANSPARENT
        key = ("cds-inbound", port.target_port, port.protocol, proxy.app_address, transparent)

        def build() -> CompiledResource:
            cluster = inbound_cluster(
                port.target_port, port.protocol, proxy.app_address, transparent
            )
            return CompiledResource(cluster.name, cluster)

        return self._cached(key, build)

    # ---- local mode: explicit TCP ports -------------------------------------------------------

    def _local_tcp_listeners(self, proxy: Proxy) -> list[CompiledResource]:
        out = []
        for host, port, local_port in proxy.local_tcp_ports:
            service = self.snapshot.services.get(resolve_host(host, proxy.namespace))
            if service is None or not exported_to(
                service.export_to, service.namespace, proxy.namespace
            ):
                continue
            sport = service.port(port)
            if sport is None:
                continue
            protocol = "TCP" if sport.is_http else sport.protocol
            key = (
                "lds-local-tcp",
                local_port,
                *self._tcp_chains_key(proxy, service, port, protocol),
            )

            def build(
                service: MeshService = service,
                port: int = port,
                protocol: str = protocol,
                local_port: int = local_port,
            ) -> CompiledResource:
                chains = outbound_tcp_chains(self.snapshot, service, port, protocol, proxy)
                listener = local_tcp_listener(local_port, chains)
                return CompiledResource(listener.name, listener)

            out.append(self._cached(key, build))
        return out
