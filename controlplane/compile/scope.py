"""The Sidecar in effect for a proxy (``sidecar_for``): istiod's precedence applied to a
Proxy. The scope itself (which hosts and ports it imports) is ``store/sidecars.py``.

``sidecar_for(snapshot, proxy).spec.outboundTrafficPolicy``, when set, overrides the mesh
config's outbound traffic policy for that proxy (ALLOW_ANY / REGISTRY_ONLY).
"""

from __future__ import annotations

from controlplane.api.sidecar import Sidecar
from controlplane.compile.proxy import Proxy
from controlplane.store.reads import SnapshotReader
from controlplane.store.sidecars import (
    SidecarScope,
    root_namespace,
    scope_of,
    scoped_services,
    select_sidecar,
)

__all__ = [
    "SidecarScope",
    "root_namespace",
    "scope_of",
    "scoped_services",
    "select_sidecar",
    "sidecar_for",
]


def sidecar_for(snapshot: SnapshotReader, proxy: Proxy) -> Sidecar | None:
    """The Sidecar in effect for ``proxy`` (istiod's precedence, see the module docstring),
    or None. Its ``spec.outboundTrafficPolicy``, when set, overrides the mesh config's."""
    return select_sidecar(
        snapshot.of_kind(Sidecar).values(), proxy.namespace, proxy.labels, root_namespace(snapshot)
    )
