"""EDS: the ClusterLoadAssignment of every outbound cluster a proxy has.

One assignment per cluster name that CDS built (inbound and static clusters have none, nor
has an ORIGINAL_DST cluster): the service's endpoints, narrowed to a subset's labels,
grouped by locality where the DestinationRule asks for locality-aware balancing, and
stripped of their ``tlsMode: istio`` mark where the endpoint's own PeerAuthentication
disables mTLS. The assignments are built by ``endpoints.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2

from controlplane.api.security import PeerAuthentication
from controlplane.compile import cluster_policy
from controlplane.compile import resources as types
from controlplane.compile.authn import DISABLE
from controlplane.compile.context import CompileContext
from controlplane.compile.endpoints import build_load_assignment
from controlplane.compile.generator import Built, Generator
from controlplane.compile.memo import Family, MemoKey
from controlplane.compile.naming import parse_cluster_name
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CompiledResource
from controlplane.store.registry import MeshEndpoint


def generate(context: CompileContext, proxy: Proxy, built: Built) -> dict[str, CompiledResource]:
    """The assignment of every outbound cluster CDS built for ``proxy``."""
    clusters = built.get(types.CLUSTER, {})
    # DNS clusters carry their endpoints inline and ORIGINAL_DST ones have none.
    eds = [name for name, found in clusters.items() if _is_eds(found)]
    return load_assignments(context, proxy, eds)


def _is_eds(found: CompiledResource) -> bool:
    message = found.message
    return not isinstance(message, cluster_pb2.Cluster) or message.type == cluster_pb2.Cluster.EDS


def load_assignments(
    context: CompileContext, proxy: Proxy, cluster_names: Iterable[str]
) -> dict[str, CompiledResource]:
    """The assignments of the clusters named, for ``proxy``."""
    out: dict[str, CompiledResource] = {}
    for name in cluster_names:
        resource = load_assignment(context, name, proxy.namespace, proxy)
        if resource is not None:
            out[name] = resource
    return out


def load_assignment(
    context: CompileContext, cluster_name: str, namespace: str, proxy: Proxy | None = None
) -> CompiledResource | None:
    """The assignment of one cluster for a client in ``namespace`` (None: it has none)."""
    parsed = parse_cluster_name(cluster_name)
    if parsed is None or parsed.direction != "outbound":
        return None
    labels: tuple[tuple[str, str], ...] | None = None
    rule = context.reads.destination_rule(parsed.host, namespace)
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
    key: MemoKey = (Family.LOAD_ASSIGNMENT, cluster_name, labels, client)

    def build() -> CompiledResource:
        cla = build_load_assignment(
            cluster_name,
            _mtls_endpoints(context, context.reads.endpoints(parsed.host)),
            parsed.port,
            dict(labels) if labels is not None else None,
            locality,
        )
        return CompiledResource(cluster_name, cla)

    return context.memo.cached(key, build)


def _mtls_endpoints(
    context: CompileContext, endpoints: tuple[MeshEndpoint, ...]
) -> tuple[MeshEndpoint, ...]:
    """As istiod's EDS: an endpoint whose own PeerAuthentication (for its port) is DISABLE
    loses its ``tlsMode: istio`` mark, so auto mTLS talks plaintext to it alone."""
    if not context.reads.of_kind(PeerAuthentication) and not context.rejected("PeerAuthentication"):
        return endpoints
    return tuple(
        replace(ep, tls_mode="disabled")
        if ep.tls_mode == "istio"
        and context.peer_authentication(ep.namespace, ep.labels).for_port(ep.port) == DISABLE
        else ep
        for ep in endpoints
    )


EDS = Generator(
    types.ENDPOINT,
    frozenset(
        {
            "Service",
            "Pod",
            "EndpointSlice",
            "DestinationRule",
            "PeerAuthentication",
            "ServiceEntry",
            "WorkloadEntry",
        }
    ),
    generate,
)
