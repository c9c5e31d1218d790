"""The outbound traffic policy: what a sidecar does with traffic to a destination the
registry does not know. ALLOW_ANY (Istio's default) passes it through to its original
destination (``PassthroughCluster``, virtual host ``allow_any``); REGISTRY_ONLY refuses it
(``BlackHoleCluster``, virtual host ``block_all`` answering 502), as istiod builds them
(pilot/pkg/networking/core/listener.go, httproute.go).
"""

from __future__ import annotations

from controlplane.api.mesh import DEFAULT_MESH, MESH_CONFIG_KEY, MeshConfig
from controlplane.compile.naming import BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER
from controlplane.compile.proxy import ROUTER, Proxy
from controlplane.compile.scope import sidecar_for
from controlplane.store.reads import SnapshotReader

ALLOW_ANY = "ALLOW_ANY"
REGISTRY_ONLY = "REGISTRY_ONLY"


def outbound_mode(snapshot: SnapshotReader, proxy: Proxy) -> str:
    """ALLOW_ANY or REGISTRY_ONLY for ``proxy``: the ``outboundTrafficPolicy`` of the Sidecar
    in effect when it sets one (not for gateways, which no Sidecar scopes), else the mesh
    config's, as istiod decides it. The one place the mode is read."""
    if proxy.proxy_type != ROUTER:
        sidecar = sidecar_for(snapshot, proxy)
        if sidecar is not None and sidecar.spec.outbound_traffic_policy is not None:
            return sidecar.spec.outbound_traffic_policy.mode
    found: MeshConfig | None = snapshot.get(MESH_CONFIG_KEY)
    return (found or DEFAULT_MESH).spec.outbound_traffic_policy.mode


def fallback_cluster(mode: str) -> str:
    """Where TCP traffic to an unknown destination goes."""
    return BLACKHOLE_CLUSTER if mode == REGISTRY_ONLY else PASSTHROUGH_CLUSTER
