"""CDS: the clusters of one proxy.

Outbound, one cluster per port (and per DestinationRule subset) of every service the proxy's
namespace sees, secured with auto mTLS where the service's workloads have identities; then
one inbound cluster per port the workload serves; in transparent mode also the static
BlackHole, Passthrough and InboundPassthrough clusters. The cluster bodies are built by
``clusters.py``, ``cluster_policy.py``, ``inbound.py`` and ``tls.py``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from controlplane.api.security import PeerAuthentication
from controlplane.compile import resources as types
from controlplane.compile.clusters import blackhole_cluster, passthrough_cluster, service_clusters
from controlplane.compile.context import CompileContext
from controlplane.compile.gateway import is_router
from controlplane.compile.generator import Built, Generator
from controlplane.compile.inbound import (
    InboundPort,
    inbound_cluster,
    inbound_passthrough_cluster,
    inbound_ports,
)
from controlplane.compile.memo import Family, MemoKey
from controlplane.compile.naming import BLACKHOLE_CLUSTER, parse_cluster_name
from controlplane.compile.proxy import TRANSPARENT, Proxy
from controlplane.compile.resources import CompiledResource, OnDemandMap
from controlplane.compile.service_entry_clusters import uses_eds
from controlplane.compile.tls import UpstreamSecurity, secure_cluster, upstream_security
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import MergedDestinationRule

log = logging.getLogger("controlplane.compile")


def generate(
    context: CompileContext, proxy: Proxy, built: Built
) -> dict[str, CompiledResource] | OnDemandMap:
    """Every cluster ``proxy`` should have: outbound, then inbound, then (transparent) static.
    For an on-demand sidecar, the outbound clusters of HTTP ports only when named
    (``vhds.py``)."""
    everything = _all_clusters(context, proxy)
    if is_router(proxy) or not proxy.on_demand:
        return everything
    on_demand = _on_demand_cluster_names(context, proxy)
    eager = {n: r for n, r in everything.items() if n not in on_demand}
    return OnDemandMap(everything, eager)


def _on_demand_cluster_names(context: CompileContext, proxy: Proxy) -> frozenset[str]:
    """The outbound clusters only HTTP routes lead to: those of the service ports that are
    HTTP by declaration (a sniffed port's TCP chain names its cluster, so it stays eager)."""
    ports = {
        (service.hostname, sport.port)
        for service in context.services_for(proxy)
        for sport in service.ports
        if sport.is_http and sport.protocol != "UNKNOWN"
    }
    names = set()
    for name in outbound_clusters(context, proxy):
        parsed = parse_cluster_name(name)
        if (
            parsed is not None
            and parsed.direction == "outbound"
            and (parsed.host, parsed.port) in ports
        ):
            names.add(name)
    return frozenset(names)


def _all_clusters(context: CompileContext, proxy: Proxy) -> dict[str, CompiledResource]:
    out = outbound_clusters(context, proxy)
    if is_router(proxy):
        # A gateway reaches every service its namespace sees; it serves no inbound port.
        for found in _static_clusters(context):
            if found.name == BLACKHOLE_CLUSTER:
                out[found.name] = found
        return out
    for port in inbound_ports(context.reads, proxy):
        found = _inbound_cluster(context, proxy, port)
        out[found.name] = found
    if proxy.mode == TRANSPARENT:
        for found in _static_clusters(context):
            out[found.name] = found
    return out


def outbound_clusters(context: CompileContext, proxy: Proxy) -> dict[str, CompiledResource]:
    """The clusters of every service the proxy sees (its namespace's, narrowed by its
    Sidecar to the hosts and ports it imports)."""
    out: dict[str, CompiledResource] = {}
    scope = context.sidecar_scope(proxy)
    # A Sidecar may import only some ports of a service: its clusters are built for the whole
    # service (shared with every other proxy) and those of the other ports left out.
    whole = (
        {s.hostname: s for s in context.visible_services(proxy.namespace)} if scope.scoped else {}
    )
    for service in context.scoped_services(scope):
        # Read per service: a proxy that sees no service does not depend on its identity.
        trust_domain = proxy.trust_domain if proxy.identity else None
        full = whole.get(service.hostname, service)
        ports = None if full.ports == service.ports else {p.port for p in service.ports}
        for resource in service_cluster_resources(context, full, proxy.namespace, trust_domain):
            if ports is None or _cluster_port(resource.name) in ports:
                out[resource.name] = resource
    return out


def _cluster_port(name: str) -> int | None:
    parsed = parse_cluster_name(name)
    return parsed.port if parsed is not None else None


def service_cluster_resources(
    context: CompileContext, service: MeshService, namespace: str, trust_domain: str | None
) -> list[CompiledResource]:
    """``trust_domain`` is the client's when it has a certificate (auto mTLS), else None."""
    rule = context.reads.destination_rule(service.hostname, namespace)
    security = upstream_security_of(context, service, trust_domain)
    key: MemoKey = (Family.CLUSTERS, service.hostname, rule.sources if rule else (), security)

    def build() -> list[CompiledResource]:
        try:
            return _clusters(context, service, rule, security)
        except Exception:  # noqa: BLE001 (one resource never stops a proxy's updates)
            if rule is None:
                raise
            # What the store's compile check (compile/check.py) could not see: the
            # DestinationRule is passed over for this service, which keeps its clusters.
            log.exception(
                "DestinationRule %s failed to compile for %s: passed over",
                ", ".join(map(str, rule.sources)),
                service.hostname,
            )
            return _clusters(context, service, None, security)

    return context.memo.cached(key, build)


def _clusters(
    context: CompileContext,
    service: MeshService,
    rule: MergedDestinationRule | None,
    security: UpstreamSecurity,
) -> list[CompiledResource]:
    # Hosts the proxy resolves itself carry their endpoints in the cluster.
    endpoints = () if uses_eds(service) else context.reads.endpoints(service.hostname)
    return [
        CompiledResource(c.name, secure_cluster(c, rule, security))
        for c in service_clusters(service, rule, endpoints)
    ]


def upstream_security_of(
    context: CompileContext, service: MeshService, trust_domain: str | None
) -> UpstreamSecurity:
    """What mTLS to the service depends on: its workloads' identities and peer modes."""

    def build() -> UpstreamSecurity:
        sans = service.subject_alt_names
        if trust_domain is None or service.mesh_external:
            # As istiod: no automatic mTLS to a host outside the mesh (MESH_EXTERNAL); a
            # DestinationRule may still ask for ISTIO_MUTUAL, checked against the entry's
            # subjectAltNames.
            return UpstreamSecurity(sans=sans, auto_mtls=False)
        found = upstream_security(
            service,
            context.reads.endpoints(service.hostname),
            context.reads.of_kind(PeerAuthentication).values(),
            trust_domain,
        )
        return replace(found, sans=tuple(sorted({*found.sans, *sans}))) if sans else found

    return context.memo.cached((Family.UPSTREAM_SECURITY, service.hostname, trust_domain), build)


def _inbound_cluster(context: CompileContext, proxy: Proxy, port: InboundPort) -> CompiledResource:
    transparent = proxy.mode == TRANSPARENT
    key: MemoKey = (
        Family.INBOUND_CLUSTER,
        port.target_port,
        port.protocol,
        port.app_host or proxy.app_address,
        port.app_port,
        transparent,
        port.connection_pool,
    )

    def build() -> CompiledResource:
        cluster = inbound_cluster(
            port.target_port,
            port.protocol,
            port.app_host or proxy.app_address,
            transparent,
            port.app_port,
            port.connection_pool,
        )
        return CompiledResource(cluster.name, cluster)

    return context.memo.cached(key, build)


def _static_clusters(context: CompileContext) -> list[CompiledResource]:
    def build() -> list[CompiledResource]:
        return [
            CompiledResource(c.name, c)
            for c in (blackhole_cluster(), passthrough_cluster(), inbound_passthrough_cluster())
        ]

    return context.memo.cached((Family.STATIC_CLUSTERS,), build)


CDS = Generator(
    types.CLUSTER,
    frozenset(
        {
            "Service",
            "Pod",
            "EndpointSlice",
            "DestinationRule",
            "PeerAuthentication",
            "ServiceEntry",
            "WorkloadEntry",
            "Sidecar",
            "VirtualService",  # a Sidecar imports the destinations of the routes it selects
        }
    ),
    generate,
)
