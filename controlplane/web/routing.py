"""The routing of one host, as the page draws it: the VirtualService that applies (as istiod
picks it), its HTTP routes with their subsets and weights, the DestinationRule's subsets and the
workloads each selects, and, from what was sent to every connected proxy, which weights each
proxy holds and whether it ACKed them.

Pure: a snapshot and the proxies' sent routes in, plain data out (``page.py`` renders it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import route_pb2

from controlplane.api.networking import VirtualService
from controlplane.store import Snapshot
from controlplane.store.snapshot import resolve_host


@dataclass(frozen=True)
class Split:
    """One destination of a route: ``subset`` ("" for the whole host) and its weight in %."""

    host: str
    subset: str
    weight: int


@dataclass(frozen=True)
class RouteRow:
    label: str  # the route's name, its match, or "default"
    splits: tuple[Split, ...]


@dataclass(frozen=True)
class SubsetRow:
    name: str
    labels: Mapping[str, str]
    workloads: tuple[str, ...]  # pods (or addresses) of the host the labels select


@dataclass(frozen=True)
class Holding:
    """Proxies whose sent routes give ``weights`` for the host, in one sync state."""

    weights: tuple[tuple[str, int], ...]  # (subset, %) as the proxy's route has it
    status: str  # the route type's SYNCED, STALE, NACKED ... of these proxies
    proxies: tuple[str, ...]

    @property
    def key(self) -> str:
        return ",".join(f"{s or '-'}={w}" for s, w in self.weights)


@dataclass(frozen=True)
class ProxyRoutes:
    """What the page needs of one connected proxy: its id and namespace, the route type's
    sync state, and the route configurations it was last sent (name -> a compiled resource
    with its protobuf ``message``; proxies of one shape share one map)."""

    node_id: str
    namespace: str
    status: str
    routes: Mapping[str, Any]


@dataclass(frozen=True)
class Routing:
    host: str
    virtual_service: str | None  # namespace/name of the one that applies
    ignored: tuple[str, ...]  # others claiming the host (istiod applies only the first)
    routes: tuple[RouteRow, ...]
    destination_rule: tuple[str, ...]  # namespace/name of the merged rules
    subsets: tuple[SubsetRow, ...]
    holdings: tuple[Holding, ...] = field(default=())


def hosts(snapshot: Snapshot) -> list[str]:
    """Every host the page can draw: the services and the hosts VirtualServices name."""
    out = set(snapshot.services)
    for vs in snapshot.of_kind(VirtualService).values():
        for host in vs.spec.hosts:
            resolved = resolve_host(host, vs.metadata.namespace)
            if "*" not in resolved:
                out.add(resolved)
    return sorted(out)


def default_host(snapshot: Snapshot) -> str | None:
    """The first host a VirtualService routes (the interesting one), else the first service."""
    every = hosts(snapshot)
    with_rules = [h for h in every if snapshot.virtual_services_claiming(h)]
    chosen = with_rules or every
    return chosen[0] if chosen else None


def _label(route: Any, index: int) -> str:
    if route.name:
        return str(route.name)
    if not route.match:
        return "default"
    parts: list[str] = []
    for match in route.match:
        if match.uri is not None:
            parts.append(f"uri {match.uri.model_dump(exclude_none=True)}")
        for header, value in (match.headers or {}).items():
            parts.append(f"{header} {value.model_dump(exclude_none=True)}")
    text = " or ".join(parts) if parts else f"match {index}"
    return text.replace("'", "")


def _splits(destinations: list[Any], namespace: str) -> tuple[Split, ...]:
    """Each destination's share in % of the route's total weight: as the compiler (and
    istiod) sends them, a lone destination takes all, and of several a missing weight is 0."""
    if not destinations:
        return ()
    given = [100 if len(destinations) == 1 else int(d.weight or 0) for d in destinations]
    total = sum(given) or 1
    return tuple(
        Split(
            resolve_host(d.destination.host, namespace),
            d.destination.subset or "",
            round(100 * weight / total),
        )
        for d, weight in zip(destinations, given, strict=True)
    )


def routing(snapshot: Snapshot, host: str, proxies: Iterable[ProxyRoutes] = ()) -> Routing:
    service = snapshot.services.get(host)
    namespace = service.namespace if service is not None else "default"
    claiming = snapshot.virtual_services_claiming(host) or snapshot.virtual_services_for(
        host, namespace
    )
    routes: list[RouteRow] = []
    applied = None
    if claiming:
        vs = claiming[0]
        applied = f"{vs.metadata.namespace}/{vs.metadata.name}"
        for i, http in enumerate(vs.spec.http):
            routes.append(RouteRow(_label(http, i), _splits(http.route, vs.metadata.namespace)))
        for i, tcp in enumerate(vs.spec.tcp):
            routes.append(RouteRow(f"tcp {i}", _splits(tcp.route, vs.metadata.namespace)))
    rule = snapshot.destination_rule(host, namespace)
    endpoints = snapshot.endpoints(host)
    subsets = []
    for subset in rule.subsets if rule is not None else ():
        selected = sorted(
            {
                e.workload
                for e in endpoints
                if all(e.labels.get(k) == v for k, v in subset.labels.items())
            }
        )
        subsets.append(SubsetRow(subset.name, dict(subset.labels), tuple(selected)))
    return Routing(
        host=host,
        virtual_service=applied,
        ignored=tuple(f"{v.metadata.namespace}/{v.metadata.name}" for v in claiming[1:]),
        routes=tuple(routes),
        destination_rule=tuple(f"{k.namespace}/{k.name}" for k in rule.sources) if rule else (),
        subsets=tuple(subsets),
        holdings=held(host, proxies),
    )


def _subset_of(cluster: str) -> str:
    """``outbound|9080|v2|reviews.default.svc.cluster.local`` -> ``v2``."""
    parts = cluster.split("|")
    return parts[2] if len(parts) == 4 else cluster


def _names(host: str) -> set[str]:
    """The domains a sidecar's virtual host lists for ``host`` (ports left off)."""
    out = {host}
    labels = host.split(".")
    for n in range(1, len(labels)):
        out.add(".".join(labels[:n]))
    return out


def weights_in(routes: Iterable[Any], host: str) -> tuple[tuple[str, int], ...] | None:
    """The weights of the last (catch-all) route of ``host``'s virtual host in the sent route
    configurations: (subset, %) pairs; None when no virtual host names the host."""
    names = _names(host)
    for config in routes:
        if not isinstance(config, route_pb2.RouteConfiguration):
            continue
        for vhost in config.virtual_hosts:
            if not any(d.rsplit(":", 1)[0] in names for d in vhost.domains):
                continue
            for route in reversed(vhost.routes):
                if not route.HasField("route"):
                    continue
                action = route.route
                if action.HasField("weighted_clusters"):
                    clusters = action.weighted_clusters.clusters
                    total = sum(c.weight.value for c in clusters) or 1
                    return tuple(
                        (_subset_of(c.name), round(100 * c.weight.value / total)) for c in clusters
                    )
                if action.cluster:
                    return ((_subset_of(action.cluster), 100),)
            return ()
    return None


def held(host: str, proxies: Iterable[ProxyRoutes]) -> tuple[Holding, ...]:
    groups: dict[tuple[tuple[tuple[str, int], ...], str], list[str]] = {}
    # Proxies of one shape share their sent map: read each map once, not once per proxy.
    seen: dict[int, tuple[tuple[str, int], ...] | None] = {}
    for proxy in proxies:
        mine = id(proxy.routes)
        if mine not in seen:
            seen[mine] = weights_in((r.message for r in proxy.routes.values()), host)
        weights = seen[mine]
        if weights is None:
            continue
        groups.setdefault((weights, proxy.status), []).append(proxy.node_id)
    return tuple(
        Holding(weights, status, tuple(sorted(nodes)))
        for (weights, status), nodes in sorted(groups.items())
    )
