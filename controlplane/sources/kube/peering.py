"""kopf peering, which chooses the replica that writes status.

``ensure_peering_object`` creates the ClusterKopfPeering object peering needs;
``peering_operator`` is the second, handler-less kopf operator that only takes part in
peering. Which peer leads is read from the same object by
``controlplane.status.leader.Leadership``, fed by the watch (``watch``); both operators run
in the kopf thread (``operator``).
"""

from __future__ import annotations

import threading
from collections.abc import Coroutine
from typing import Any

from controlplane.status.leader import new_priority

PEERING_PLURAL = "clusterkopfpeerings"


def ensure_peering_object(api_client: Any, name: str) -> bool:
    """kopf peering needs the ClusterKopfPeering object to exist; create it if absent.

    Returns False when the cluster has no ClusterKopfPeering CRD (peering is impossible).
    """
    from controlplane.sources.kube.listing import KubeApi

    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    status = KubeApi(api_client).post(f"/apis/kopf.dev/v1/{PEERING_PLURAL}", body)
    if status == 404:
        return False
    if status not in (200, 201, 409):
        raise RuntimeError(f"creating ClusterKopfPeering {name}: {status}")
    return True


def peering_operator(
    name: str, identity: str, stop_flag: threading.Event, registry: Any
) -> Coroutine[Any, Any, None]:
    """A kopf operator with no handlers of its own that keeps ``identity`` in the peering
    ``name`` (``registry`` holds only its login)."""
    import kopf

    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.peering.lifetime = 15  # a dead leader is replaced within ~15 s
    operator: Coroutine[Any, Any, None] = kopf.operator(
        registry=registry,
        settings=settings,
        clusterwide=True,
        peering_name=name,
        priority=new_priority(),
        identity=identity,
        stop_flag=stop_flag,
    )
    return operator
