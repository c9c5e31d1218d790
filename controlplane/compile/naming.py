"""Names a user meets in Envoy's config dumps, spelled as Istio spells them."""

from __future__ import annotations

from typing import NamedTuple

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
# Filter chain names of the virtual listeners, as istiod names them.
VIRTUAL_INBOUND_BLACKHOLE_CHAIN = "virtualInbound-blackhole"
VIRTUAL_INBOUND_CATCH_ALL_HTTP_CHAIN = "virtualInbound-catchall-http"
VIRTUAL_OUTBOUND_BLACKHOLE_CHAIN = "virtualOutbound-blackhole"
VIRTUAL_OUTBOUND_CATCH_ALL_CHAIN = "virtualOutbound-catchall-tcp"
PASSTHROUGH_CHAIN = "PassthroughFilterChain"
# Fallback virtual hosts of an outbound route configuration.
ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"
# Ports of the transparent-mode sidecar (istio-proxy's defaults).
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
# Source address of the inbound sidecar's connections to its app: the init container's
# iptables rules let traffic from it through instead of capturing it again.
INBOUND_PASSTHROUGH_BIND_ADDRESS = "127.0.0.6"
WILDCARD_ADDRESS = "0.0.0.0"


class ClusterName(NamedTuple):
    direction: str  # "outbound" or "inbound"
    port: int
    subset: str
    host: str


def outbound_cluster_name(port: int, subset: str | None, host: str) -> str:
    """``outbound|9080|v1|reviews.default.svc.cluster.local``"""
    return f"outbound|{port}|{subset or ''}|{host}"


def inbound_cluster_name(port: int) -> str:
    """``inbound|9080||``"""
    return f"inbound|{port}||"


def parse_cluster_name(name: str) -> ClusterName | None:
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound") or not parts[1].isdigit():
        return None
    return ClusterName(parts[0], int(parts[1]), parts[2], parts[3])


def listener_name(address: str, port: int) -> str:
    """``0.0.0.0_9080`` (HTTP ports in transparent mode), ``10.96.0.5_9000`` (TCP ports)."""
    return f"{address}_{port}"


def inbound_route_name(port: int) -> str:
    """The inline route configuration of an inbound HTTP chain: ``inbound|9080||``."""
    return inbound_cluster_name(port)


def inbound_virtual_host_name(protocol: str, port: int) -> str:
    """``inbound|http|9080``"""
    return f"inbound|{protocol.lower()}|{port}"


def local_listener_name(port: int) -> str:
    """The local-mode outbound listener: ``127.0.0.1_15001``."""
    return f"127.0.0.1_{port}"


def local_route_name(port: int) -> str:
    """The route configuration of the local-mode outbound listener."""
    return f"local_{port}"


def virtual_host_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def route_config_name(port: int) -> str:
    """Transparent mode: one route configuration per service port, named by the port."""
    return str(port)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
