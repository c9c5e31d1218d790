"""EDS: the endpoints of one cluster, grouped by locality, subset labels applied, and (when a
DestinationRule asks for it) locality-weighted or prioritised relative to the client proxy."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from controlplane.api.networking import LocalityLoadBalancerSetting
from controlplane.compile.protos import socket_address, uint32
from controlplane.store.registry import MeshEndpoint, selects

TLS_MODE_METADATA = "envoy.transport_socket_match"
_TOPOLOGY_LABELS = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)


@dataclass(frozen=True)
class LocalityPolicy:
    """What locality load balancing needs to know about the client and the rule."""

    proxy_locality: str  # "region/zone/subzone" of the client proxy, "" when unknown
    proxy_labels: tuple[tuple[str, str], ...]
    setting: LocalityLoadBalancerSetting | None
    failover: bool  # outlier detection is on, so priorities can fail over


def build_load_assignment(
    cluster_name: str,
    endpoints: Iterable[MeshEndpoint],
    service_port: int,
    subset_labels: Mapping[str, str] | None,
    locality: LocalityPolicy | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints of ``service_port`` (and of the subset, when labels are given), ready only.

    Each locality gets a load_balancing_weight equal to its endpoint count: Envoy ignores it
    unless locality-weighted balancing is on, and gRPC's xDS client needs it to be set.
    """
    by_locality: dict[str, list[MeshEndpoint]] = defaultdict(list)
    for ep in endpoints:
        if ep.service_port != service_port or not ep.ready:
            continue
        if subset_labels is not None and not selects(subset_labels, ep.labels):
            continue
        by_locality[ep.locality].append(ep)
    groups = [_Group(name, members, 0) for name, members in sorted(by_locality.items())]
    if locality is not None:
        groups = _apply_locality_policy(groups, locality)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name, endpoints=[g.message() for g in groups]
    )


@dataclass
class _Group:
    locality: str
    members: list[MeshEndpoint]
    priority: int
    weight: int | None = None  # None: the number of members

    def message(self) -> endpoint_components_pb2.LocalityLbEndpoints:
        region, zone, subzone = split_locality(self.locality)
        return endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region=region, zone=zone, sub_zone=subzone),
            lb_endpoints=[_lb_endpoint(ep) for ep in self.members],
            load_balancing_weight=uint32(
                self.weight if self.weight is not None else len(self.members)
            ),
            priority=self.priority,
        )


def split_locality(locality: str) -> tuple[str, str, str]:
    parts = (locality.split("/", 2) + ["", ""])[:3]
    return parts[0], parts[1], parts[2]


def _lb_endpoint(ep: MeshEndpoint) -> endpoint_components_pb2.LbEndpoint:
    metadata = base_pb2.Metadata()
    istio = struct_pb2.Struct()
    istio.update({"workload": f"{ep.workload};{ep.namespace}"})
    metadata.filter_metadata["istio"].CopyFrom(istio)
    if ep.tls_mode == "istio":
        tls = struct_pb2.Struct()
        tls.update({"tlsMode": "istio"})
        metadata.filter_metadata[TLS_MODE_METADATA].CopyFrom(tls)
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(ep.address, ep.port)),
        health_status=health_check_pb2.HEALTHY,
        metadata=metadata,
        load_balancing_weight=uint32(ep.weight),
    )


# ---- locality load balancing (istiod's loadbalancer package, in our words) -----------------


def locality_matches(locality: str, pattern: str) -> bool:
    """``pattern`` is ``region[/zone[/subzone]]`` where any part may be ``*``; missing parts
    match anything."""
    have = split_locality(locality)
    want = pattern.split("/", 2)
    for i, part in enumerate(want):
        if part not in ("*", have[i]) and not (i > 0 and part == ""):
            return False
    return True


def _apply_locality_policy(groups: list[_Group], policy: LocalityPolicy) -> list[_Group]:
    setting = policy.setting
    if setting is not None and setting.distribute:
        _apply_distribute(groups, policy.proxy_locality, setting)
        return groups
    if not policy.failover:
        return groups
    if setting is not None and setting.failover_priority:
        groups = _apply_failover_priority(groups, dict(policy.proxy_labels), setting)
        if setting.failover:
            _apply_region_failover(groups, policy.proxy_locality, setting)
        return groups
    _apply_region_failover(groups, policy.proxy_locality, setting)
    return groups


def _apply_distribute(
    groups: list[_Group], proxy_locality: str, setting: LocalityLoadBalancerSetting
) -> None:
    """The first ``distribute`` entry whose ``from`` covers the client decides the weights;
    localities it does not name get no traffic."""
    for rule in setting.distribute:
        if not locality_matches(proxy_locality, rule.from_):
            continue
        unmatched = set(range(len(groups)))
        for target, share in sorted(rule.to.items()):
            chosen = [i for i in sorted(unmatched) if locality_matches(groups[i].locality, target)]
            unmatched -= set(chosen)
            total = sum(len(groups[i].members) for i in chosen)
            for i in chosen:
                weight = len(groups[i].members) * share / total if total else 0
                if weight > 0:
                    groups[i].weight = math.ceil(weight)
        for i in unmatched:
            # Emptied, but Envoy still needs a weight of at least 1 on the locality.
            groups[i].weight = groups[i].weight or len(groups[i].members)
            groups[i].members = []
        return


def _lb_priority(proxy: str, endpoint: str) -> int:
    p, e = split_locality(proxy), split_locality(endpoint)
    if p[0] != e[0]:
        return 3
    if p[1] != e[1]:
        return 2
    if p[2] != e[2]:
        return 1
    return 0


def _apply_region_failover(
    groups: list[_Group], proxy_locality: str, setting: LocalityLoadBalancerSetting | None
) -> None:
    """Priority by closeness (same subzone 0, zone 1, region 2, elsewhere 3); a ``failover``
    entry for the client's region keeps its target region at 3 and pushes the others to 4.
    Existing priorities (from failoverPriority) stay more significant."""
    region = split_locality(proxy_locality)[0]
    failover = setting.failover if setting is not None else []
    for group in groups:
        priority = _lb_priority(proxy_locality, group.locality)
        if priority == 3:
            for entry in failover:
                if entry.from_ == region:
                    if split_locality(group.locality)[0] != entry.to:
                        priority = 4
                    break
        group.priority = group.priority * 5 + priority
    _renumber(groups)


def _apply_failover_priority(
    groups: list[_Group], proxy_labels: Mapping[str, str], setting: LocalityLoadBalancerSetting
) -> list[_Group]:
    """Split each locality by how many of the ``failoverPriority`` labels (in order) an
    endpoint shares with the client; ``label=value`` compares with a fixed value instead."""
    if not proxy_labels:
        return groups
    names: list[str] = []
    fixed: dict[str, str] = {}
    for item in setting.failover_priority:
        name, sep, value = item.partition("=")
        names.append(name)
        if sep:
            fixed[name] = value
    lowest = len(names)
    out: list[_Group] = []
    for group in groups:
        by_priority: dict[int, list[MeshEndpoint]] = defaultdict(list)
        for ep in group.members:
            priority = 0
            for j, name in enumerate(names):
                wanted = fixed.get(name, proxy_labels.get(name))
                if wanted != _endpoint_label(ep, name):
                    priority = lowest - j
                    break
            by_priority[priority].append(ep)
        for priority in sorted(by_priority):
            out.append(_Group(group.locality, by_priority[priority], priority))
    _renumber(out)
    return out


def _endpoint_label(ep: MeshEndpoint, name: str) -> str | None:
    if name in ep.labels:
        return ep.labels[name]
    if name in _TOPOLOGY_LABELS and ep.locality:
        part = split_locality(ep.locality)[_TOPOLOGY_LABELS.index(name)]
        return part or None
    return None


def _renumber(groups: Sequence[_Group]) -> None:
    """Envoy needs priorities 0..N without gaps."""
    order = {p: i for i, p in enumerate(sorted({g.priority for g in groups}))}
    for group in groups:
        group.priority = order[group.priority]
