"""A proxy as the compiler sees it: who it is and how it intercepts traffic.

Read from the Envoy node (id and metadata) that the proxy sends on its first request, using
Istio's metadata keys, plus ``LOCAL_OUTBOUND_PORT`` for this project's local mode (no
interception: the application talks to the sidecar's outbound port on 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOCAL = "local"
TRANSPARENT = "transparent"


@dataclass(frozen=True)
class Proxy:
    node_id: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    ips: tuple[str, ...] = ()
    workload_name: str = ""
    mode: str = LOCAL
    local_outbound_port: int | None = None
    locality: str = ""
    trust_domain: str = "cluster.local"
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # The SPIFFE id the xDS connection proved (set by the server's authenticator; "" when
    # unproven). Only a proxy with an identity gets certificates, so only it speaks mTLS.
    identity: str = ""

    @property
    def labels_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.labels.items()))


class InvalidNode(ValueError):
    """The node's id or metadata cannot describe a proxy."""


def proxy_from_node(node_id: str, metadata: Mapping[str, Any], locality: str = "") -> Proxy:
    """Build a Proxy from an Envoy node id (``sidecar~IP~pod.ns~ns.svc.cluster.local``) and
    its metadata (already converted from protobuf Struct to plain Python)."""
    parts = node_id.split("~")
    id_ip = parts[1] if len(parts) == 4 else ""
    id_namespace = ""
    if len(parts) == 4 and "." in parts[2]:
        id_namespace = parts[2].rsplit(".", 1)[1]
    namespace = str(metadata.get("NAMESPACE") or id_namespace or "default")
    labels_raw = metadata.get("LABELS") or {}
    if not isinstance(labels_raw, Mapping):
        raise InvalidNode(f"node {node_id}: metadata LABELS must be a map")
    labels = {str(k): str(v) for k, v in labels_raw.items()}
    ips_raw = metadata.get("INSTANCE_IPS") or id_ip
    ips = tuple(x.strip() for x in str(ips_raw).split(",") if x.strip())
    port_raw = metadata.get("LOCAL_OUTBOUND_PORT")
    local_port: int | None = None
    if port_raw not in (None, ""):
        try:
            local_port = int(str(port_raw))
        except ValueError:
            raise InvalidNode(
                f"node {node_id}: LOCAL_OUTBOUND_PORT {port_raw!r} is not a port"
            ) from None
    interception = str(metadata.get("INTERCEPTION_MODE") or ("NONE" if local_port else "REDIRECT"))
    mode = LOCAL if (local_port is not None or interception == "NONE") else TRANSPARENT
    return Proxy(
        node_id=node_id,
        namespace=namespace,
        labels=labels,
        service_account=str(metadata.get("SERVICE_ACCOUNT") or "default"),
        ips=ips,
        workload_name=str(metadata.get("WORKLOAD_NAME") or ""),
        mode=mode,
        local_outbound_port=local_port,
        locality=locality,
        metadata=dict(metadata),
    )
