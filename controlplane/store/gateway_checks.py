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
from controlplane.store.gateway_merge import merge_gateways
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import selects
from controlplane.store.snapshot import created

# Findings that never block a version (see the module docstring).
NOT_BLOCKING = frozenset(
    {
        Codes.GATEWAY_NOT_FOUND.id,
        Codes.HOST_NOT_IN_GATEWAY.id,
        Codes.CONFLICTING_GATEWAYS.id,
        Codes.GATEWAY_SELECTS_NO_POD.id,
        Codes.GATEWAY_PORT_NOT_ON_SERVICE.id,
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
    # What istiod's merge leaves out on those workloads (another protocol on a port, say).
    reported = {issue.path for issue in found}
    merged = merge_gateways([*sorted(older, key=created), gateway])
    for skipped in merged.skipped:
        path = skipped.server.path
        if skipped.server.key == key and path not in reported:
            reported.add(path)
            found.append(
                Issue(
                    Codes.CONFLICTING_GATEWAYS,
                    path,
                    f"left out, as istiod leaves it out: {skipped.reason} "
                    "(istioctl IST0145 ConflictingGateways)",
                )
            )
    found += _check_workloads(snapshot, gateway)
    return [issue.with_context(key, None) for issue in found]


def _check_workloads(snapshot: SnapshotReader, gateway: Gateway) -> list[Issue]:
    """Where the mesh knows its Pods: a selector no Pod matches (istioctl IST0101), and a
    server port that no Service of the selected Pods declares, as a port or a target port
    (IST0162). Warnings: in file mode a gateway Envoy need not be a Pod the files declare,
    so a mesh without Pods is not checked at all."""
    pods = list(snapshot.of_kind(Pod).values())
    if not pods:
        return []
    selector = gateway.spec.selector
    selected = [p for p in pods if selects(selector, p.metadata.labels)]
    shown = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "(none)"
    if not selected:
        return [
            Issue(
                Codes.GATEWAY_SELECTS_NO_POD,
                "spec.selector",
                f"no pod matches the selector {shown}: no gateway serves these servers "
                "(istioctl IST0101 ReferencedResourceNotFound)",
            )
        ]
    ports: set[int] = set()
    for pod in selected:
        for service in snapshot.services.values():
            if service.namespace != pod.metadata.namespace or not service.selector:
                continue
            if not selects(service.selector, pod.metadata.labels):
                continue
            for port in service.ports:
                ports.add(port.port)
                if isinstance(port.target_port, int):
                    ports.add(port.target_port)
    found: list[Issue] = []
    for i, server in enumerate(gateway.spec.servers):
        if server.port is not None and server.port.number not in ports:
            found.append(
                Issue(
                    Codes.GATEWAY_PORT_NOT_ON_SERVICE,
                    f"spec.servers[{i}].port.number",
                    f"port {server.port.number} is not a port (or target port) of any Service "
                    f"of the pods the selector {shown} matches: clients cannot reach it "
                    "(istioctl IST0162 GatewayPortNotDefinedOnService)",
                )
            )
    return found


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
