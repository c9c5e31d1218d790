"""A proxy as the compiler sees it: who it is and how it intercepts traffic.

Read from the Envoy node (id and metadata) that the proxy sends on its first request, using
Istio's metadata keys, plus this project's keys for local mode (no interception):
``LOCAL_OUTBOUND_PORT`` (the application talks to the sidecar's outbound port on 127.0.0.1),
``LOCAL_APP_ADDRESS`` (where the sidecar's inbound listeners forward to; default 127.0.0.1) and
``LOCAL_TCP_PORTS`` (``host:port=localport,...``: one local outbound TCP port per service port),
and ``ON_DEMAND`` (``"true"``: routes and clusters delivered on demand, see ``compile/vhds.py``;
the injector sets it from the pod annotation ``proxy.controlplane.dev/on-demand``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SIDECAR = "sidecar"
ROUTER = "router"  # a gateway: Envoy in router mode (compile/gateway.py)
LOCAL = "local"
TRANSPARENT = "transparent"
DEFAULT_APP_ADDRESS = "127.0.0.1"
# Node metadata key that opts a sidecar into on-demand delivery (VHDS and on-demand CDS).
ON_DEMAND_METADATA = "ON_DEMAND"


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
    app_address: str = DEFAULT_APP_ADDRESS
    # Local mode: (service host as written, service port, local port), in the order given.
    local_tcp_ports: tuple[tuple[str, int, int], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # The SPIFFE id the xDS connection proved (set by the server's authenticator; "" when
    # unproven). Only a proxy with an identity gets certificates, so only it speaks mTLS.
    identity: str = ""
    # The node id's first field, as istiod reads it: "sidecar" or "router" (a gateway).
    proxy_type: str = SIDECAR
    # Virtual hosts (VHDS) and outbound HTTP clusters (on-demand CDS) are sent only when the
    # proxy asks for them; needs Delta xDS (node metadata ``ON_DEMAND: "true"``).
    on_demand: bool = False

    @property
    def labels_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.labels.items()))


class InvalidNode(ValueError):
    """The node's id or metadata cannot describe a proxy."""


def proxy_from_node(node_id: str, metadata: Mapping[str, Any], locality: str = "") -> Proxy:
    """Build a Proxy from an Envoy node id (``sidecar~IP~pod.ns~ns.svc.cluster.local``) and
    its metadata (already converted from protobuf Struct to plain Python)."""
    parts = node_id.split("~")
    proxy_type = ROUTER if len(parts) == 4 and parts[0] == ROUTER else SIDECAR
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
    local_tcp = _local_tcp_ports(node_id, metadata.get("LOCAL_TCP_PORTS"))
    explicit_local = local_port is not None or bool(local_tcp)
    interception = str(
        metadata.get("INTERCEPTION_MODE") or ("NONE" if explicit_local else "REDIRECT")
    )
    mode = LOCAL if (explicit_local or interception == "NONE") else TRANSPARENT
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
        app_address=str(metadata.get("LOCAL_APP_ADDRESS") or DEFAULT_APP_ADDRESS),
        local_tcp_ports=local_tcp,
        metadata=dict(metadata),
        proxy_type=proxy_type,
        on_demand=str(metadata.get(ON_DEMAND_METADATA) or "").lower() in ("true", "1", "on"),
    )


def _local_tcp_ports(node_id: str, raw: Any) -> tuple[tuple[str, int, int], ...]:
    """``reviews:9080=20001,tcp-echo.default:9000=20002`` -> ((host, port, local), ...)."""
    if raw in (None, ""):
        return ()
    out: list[tuple[str, int, int]] = []
    for item in (x.strip() for x in str(raw).split(",")):
        if not item:
            continue
        target, sep, local = item.partition("=")
        host, colon, port = target.rpartition(":")
        if not sep or not colon or not host or not port.isdigit() or not local.isdigit():
            raise InvalidNode(
                f"node {node_id}: LOCAL_TCP_PORTS entry {item!r} is not host:port=localport"
            )
        out.append((host, int(port), int(local)))
    return tuple(out)
