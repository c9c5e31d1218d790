"""The outbound traffic policy: what a sidecar does with traffic to a destination the
registry does not know. ALLOW_ANY (Istio's default) passes it through to its original
destination (``PassthroughCluster``, virtual host ``allow_any``); REGISTRY_ONLY refuses it
(``BlackHoleCluster``, virtual host ``block_all`` answering 502), as istiod builds them
(pilot/pkg/networking/core/listener.go, httproute.go).
"""

from __future__ import annotations

from controlplane.api.mesh import DEFAULT_MESH, MESH_CONFIG_KEY, MeshConfig
from controlplane.compile.naming import BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER
from controlplane.compile.proxy import Proxy
from controlplane.store.reads import SnapshotReader

ALLOW_ANY = "ALLOW_ANY"
REGISTRY_ONLY = "REGISTRY_ONLY"


def outbound_mode(snapshot: SnapshotReader, proxy: Proxy) -> str:
    """ALLOW_ANY or REGISTRY_ONLY for ``proxy``: the mesh config's ``outboundTrafficPolicy``.
    The one place the mode is read (a Sidecar's own ``outboundTrafficPolicy`` overrides it
    here when Sidecars are read)."""
    found: MeshConfig | None = snapshot.get(MESH_CONFIG_KEY)
    return (found or DEFAULT_MESH).spec.outbound_traffic_policy.mode


def fallback_cluster(mode: str) -> str:
    """Where TCP traffic to an unknown destination goes."""
    return BLACKHOLE_CLUSTER if mode == REGISTRY_ONLY else PASSTHROUGH_CLUSTER
