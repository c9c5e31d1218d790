"""In-context checks of Gateways and of the VirtualServices bound to them, as istioctl
analyze reports them (pkg/config/analysis/analyzers/virtualservice/gateways.go,
gateway/conflictinggateway.go).

None of them holds a version back: istiod serves such resources (a VirtualService bound to a
Gateway that does not exist yet simply has no effect on any gateway), so the findings are
reported in the log, status and ``analyze``, and nothing else changes.
"""

from __future__ import annotations

from controlplane.api.gateway import (
    MESH,
    Gateway,
    hosts_for_namespace,
    intersect_hosts,
    resolve_gateway_name,
    sanitize_hosts,
)
from controlplane.api.issues import Codes, Issue, ResourceKey
from controlplane.api.kube import Pod
from controlplane.api.networking import VirtualService
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import selects
from controlplane.store.snapshot import created

# Findings that never block a version (see the module docstring).
NOT_BLOCKING = frozenset(
    {
        Codes.GATEWAY_NOT_FOUND.id,
        Codes.HOST_NOT_IN_GATEWAY.id,
        Codes.CONFLICTING_GATEWAYS.id,
    }
)


def check_gateway_bindings(snapshot: SnapshotReader, vs: VirtualService) -> list[Issue]:
    """Each ``spec.gateways`` entry names an existing Gateway (IST0101) whose servers share
    a host with the VirtualService (IST0132)."""
    found: list[Issue] = []
    namespace = vs.metadata.namespace
    gateways = snapshot.of_kind(Gateway)
    for i, name in enumerate(vs.spec.gateways):
        if name == MESH:
            continue
        resolved = resolve_gateway_name(name, namespace)
        gw_namespace, _, gw_name = resolved.partition("/")
        gateway = gateways.get(ResourceKey("Gateway", gw_namespace, gw_name))
        path = f"spec.gateways[{i}]"
        if gateway is None:
            found.append(
                Issue(
                    Codes.GATEWAY_NOT_FOUND,
                    path,
                    f"gateway {resolved!r} does not exist: no gateway proxy gets these routes "
                    "(istioctl IST0101 ReferencedResourceNotFound)",
                )
            )
            continue
        server_hosts = [
            h for s in gateway.spec.servers for h in sanitize_hosts(s.hosts, gw_namespace)
        ]
        usable = hosts_for_namespace(server_hosts, namespace)
        if not intersect_hosts(usable, [h.lower() for h in vs.spec.hosts]):
            found.append(
                Issue(
                    Codes.HOST_NOT_IN_GATEWAY,
                    path,
                    f"no host of this VirtualService ({', '.join(vs.spec.hosts)}) is among the "
                    f"hosts of gateway {resolved} ({', '.join(server_hosts)}) for namespace "
                    f"{namespace!r}: the gateway serves none of its routes "
                    "(istioctl IST0132 VirtualServiceHostNotFoundInGateway)",
                )
            )
    return found


def check_gateway(snapshot: SnapshotReader, gateway: Gateway) -> list[Issue]:
    """A server whose port, bind and a host repeat those of an older Gateway that selects
    the same gateway workloads (istioctl IST0145 ConflictingGateways): istiod keeps the
    older server for a TLS host and merges the routes of plain HTTP ones, which is rarely
    what either owner meant."""
    key = ResourceKey("Gateway", gateway.metadata.namespace, gateway.metadata.name)
    mine = created(gateway)
    older = [
        other
        for other in snapshot.of_kind(Gateway).values()
        if created(other) < mine
        and (other.metadata.namespace, other.metadata.name) != (key.namespace, key.name)
        and _same_workloads(snapshot, gateway, other)
    ]
    found: list[Issue] = []
    for i, server in enumerate(gateway.spec.servers):
        if server.port is None:
            continue
        bind = server.bind or ""
        clashes: list[str] = []
        for other in sorted(older, key=created):
            for theirs in other.spec.servers:
                if theirs.port is None or theirs.port.number != server.port.number:
                    continue
                if (theirs.bind or "") != bind:
                    continue
                if set(theirs.hosts) & set(server.hosts):
                    clashes.append(f"{other.metadata.namespace}/{other.metadata.name}")
                    break
        if clashes:
            found.append(
                Issue(
                    Codes.CONFLICTING_GATEWAYS,
                    f"spec.servers[{i}]",
                    f"port {server.port.number} and hosts {', '.join(server.hosts)} are "
                    f"already served by {', '.join(sorted(set(clashes)))} on the same gateway "
                    "workloads (istioctl IST0145 ConflictingGateways)",
                )
            )
    return [issue.with_context(key, None) for issue in found]


def _same_workloads(snapshot: SnapshotReader, a: Gateway, b: Gateway) -> bool:
    """As istioctl decides it: equal selectors, or one a subset of the other and some pod
    that both select."""
    sa, sb = a.spec.selector, b.spec.selector
    if sa == sb:
        return True
    if not (sa.items() <= sb.items() or sb.items() <= sa.items()):
        return False
    return any(
        selects(sa, pod.metadata.labels) and selects(sb, pod.metadata.labels)
        for pod in snapshot.of_kind(Pod).values()
    )
