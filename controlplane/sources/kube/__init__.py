"""The Kubernetes source: kopf watches the cluster and feeds the store (cluster mode).

watch      translate watch events into store updates; StoreBridge, Resync, handlers
operator   the kopf thread that runs the watch (and peering) operators
webhooks   the admission webhooks' configurations, written and kept written
peering    kopf peering, which picks the replica that writes status
cluster    ClusterSource: the Source that `controlplane run` hands controlplane.app
"""

from controlplane.sources.kube.watch import (
    WATCHED,
    Lister,
    Resync,
    StoreBridge,
    Update,
    kubernetes_lister,
    register_watch_handlers,
    translate,
)

__all__ = [
    "WATCHED",
    "Lister",
    "Resync",
    "StoreBridge",
    "Update",
    "kubernetes_lister",
    "register_watch_handlers",
    "translate",
]
