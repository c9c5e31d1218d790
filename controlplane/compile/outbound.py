"""Outbound listeners of a transparent-mode sidecar, named and shaped as istiod shapes them.

iptables redirects every outbound TCP connection of the pod to ``virtualOutbound``
(0.0.0.0:15001). Its ``use_original_dst`` hands each connection to the listener that matches
the original destination: ``<VIP>_<port>`` for a TCP service port, ``0.0.0.0_<port>`` for an
HTTP service port (routes from RDS ``"<port>"``); anything else stays on virtualOutbound and
passes through to its original destination (``allow_any``).

Local mode has no interception; its outbound listeners (the HTTP port and the explicit TCP
ports of ``LOCAL_TCP_PORTS``) are bound on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.on_demand.v3 import on_demand_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from controlplane.compile.filters import (
    CORS_FILTER,
    FAULT_FILTER,
    HCM_FILTER,
    ON_DEMAND_FILTER,
    ROUTER_FILTER,
)
from controlplane.compile.naming import (
    BLACKHOLE_CLUSTER,
    OUTBOUND_CAPTURE_PORT,
    PASSTHROUGH_CHAIN,
    PASSTHROUGH_CLUSTER,
    VIRTUAL_OUTBOUND,
    VIRTUAL_OUTBOUND_BLACKHOLE_CHAIN,
    VIRTUAL_OUTBOUND_CATCH_ALL_CHAIN,
    WILDCARD_ADDRESS,
    listener_name,
    local_listener_name,
    local_route_name,
    route_config_name,
)
from controlplane.compile.network import (
    HTTP_APPLICATION_PROTOCOLS,
    destination_port_match,
    listener_filters,
    original_dst,
    tcp_proxy_chain,
)
from controlplane.compile.protos import ads_source, duration, packed, socket_address, uint32

LOCAL_ADDRESS = "127.0.0.1"


def virtual_outbound_listener(fallback: str = PASSTHROUGH_CLUSTER) -> listener_pb2.Listener:
    """``virtualOutbound``: hands connections to the listener of their original destination;
    what no listener claims goes to ``fallback``: PassthroughCluster (ALLOW_ANY) or
    BlackHoleCluster (REGISTRY_ONLY). A connection to 15001 itself is dropped."""
    chains = [
        tcp_proxy_chain(
            VIRTUAL_OUTBOUND_BLACKHOLE_CHAIN,
            BLACKHOLE_CLUSTER,
            destination_port_match(OUTBOUND_CAPTURE_PORT),
        ),
        tcp_proxy_chain(VIRTUAL_OUTBOUND_CATCH_ALL_CHAIN, fallback),
    ]
    return listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND,
        address=socket_address(WILDCARD_ADDRESS, OUTBOUND_CAPTURE_PORT),
        traffic_direction=base_pb2.OUTBOUND,
        use_original_dst=wrappers_pb2.BoolValue(value=True),
        # Reads the pre-redirect destination (SO_ORIGINAL_DST) that the hand-off and the
        # PassthroughCluster use.
        listener_filters=[original_dst()],
        filter_chains=chains,
    )


def http_port_listener(port: int, on_demand: bool = False) -> listener_pb2.Listener:
    """``0.0.0.0_9080``: HTTP to any destination on port 9080, routed by RDS ``"9080"``.

    Not bound to the port: connections reach it only through virtualOutbound.
    """
    name = listener_name(WILDCARD_ADDRESS, port)
    hcm = http_connection_manager(f"outbound_{name}", route_config_name(port), on_demand)
    return listener_pb2.Listener(
        name=name,
        address=socket_address(WILDCARD_ADDRESS, port),
        traffic_direction=base_pb2.OUTBOUND,
        bind_to_port=wrappers_pb2.BoolValue(value=False),
        filter_chains=[
            lc.FilterChain(
                name=name,
                filters=[lc.Filter(name=HCM_FILTER, typed_config=packed(hcm))],
            )
        ],
    )


def sniffing_port_listener(
    port: int,
    tcp_targets: Sequence[tuple[str, str]],
    fallback: str = PASSTHROUGH_CLUSTER,
    on_demand: bool = False,
) -> listener_pb2.Listener:
    """``0.0.0.0_<port>`` for a port some service leaves undeclared (no protocol in its name
    or appProtocol): the HTTP inspector tells HTTP from anything else, as istiod's protocol
    sniffing does. HTTP goes through RDS ``"<port>"``; other bytes to a service VIP go to that
    service's cluster (``tcp_targets``: (VIP, cluster)), and the rest passes through.

    Envoy matches the destination IP before the application protocol, so each VIP gets an
    HTTP chain of its own next to its TCP chain.
    """
    name = listener_name(WILDCARD_ADDRESS, port)
    hcm = lc.Filter(
        name=HCM_FILTER,
        typed_config=packed(
            http_connection_manager(f"outbound_{name}", route_config_name(port), on_demand)
        ),
    )
    http = list(HTTP_APPLICATION_PROTOCOLS)
    chains = []
    for vip, cluster in tcp_targets:
        prefix = [address_pb2.CidrRange(address_prefix=vip, prefix_len=uint32(32))]
        chains.append(
            lc.FilterChain(
                name=f"{vip}_{port}-http",
                filter_chain_match=lc.FilterChainMatch(
                    prefix_ranges=prefix, application_protocols=http
                ),
                filters=[hcm],
            )
        )
        chains.append(
            tcp_proxy_chain(f"{vip}_{port}", cluster, lc.FilterChainMatch(prefix_ranges=prefix))
        )
    chains.append(
        lc.FilterChain(
            name=name,
            filter_chain_match=lc.FilterChainMatch(application_protocols=http),
            filters=[hcm],
        )
    )
    chains.append(tcp_proxy_chain(PASSTHROUGH_CHAIN, fallback))
    return listener_pb2.Listener(
        name=name,
        address=socket_address(WILDCARD_ADDRESS, port),
        traffic_direction=base_pb2.OUTBOUND,
        bind_to_port=wrappers_pb2.BoolValue(value=False),
        filter_chains=chains,
        listener_filters=listener_filters(chains, with_original_dst=False),
        # istiod's default protocol detection timeout (0: wait for the client's first bytes).
        listener_filters_timeout=duration(0.0),
        continue_on_listener_filters_timeout=True,
    )


def tcp_port_listener(
    address: str, port: int, chains: Sequence[lc.FilterChain]
) -> listener_pb2.Listener:
    """``10.96.0.5_9000``: a TCP (or TLS pass-through) service port at its VIP."""
    return listener_pb2.Listener(
        name=listener_name(address, port),
        address=socket_address(address, port),
        traffic_direction=base_pb2.OUTBOUND,
        bind_to_port=wrappers_pb2.BoolValue(value=False),
        filter_chains=list(chains),
        listener_filters=listener_filters(chains, with_original_dst=False),
        continue_on_listener_filters_timeout=True,
    )


def local_tcp_listener(local_port: int, chains: Sequence[lc.FilterChain]) -> listener_pb2.Listener:
    """Local mode: one service port's TCP routes on 127.0.0.1:<local port>."""
    return listener_pb2.Listener(
        name=listener_name(LOCAL_ADDRESS, local_port),
        address=socket_address(LOCAL_ADDRESS, local_port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=list(chains),
        listener_filters=listener_filters(chains, with_original_dst=False),
        continue_on_listener_filters_timeout=True,
    )


def http_connection_manager(
    stat_prefix: str, route_config_name: str, on_demand: bool = False
) -> hcm_pb2.HttpConnectionManager:
    """The outbound HTTP connection manager: routes from RDS ``route_config_name``; with
    ``on_demand``, virtual hosts (VHDS) and clusters (on-demand CDS) are fetched when a
    request needs one (``compile/vhds.py``)."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=route_config_name),
        # Fault and CORS before the router, as istiod orders them: routes switch them on
        # through typed_per_filter_config; without it they do nothing.
        http_filters=[
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=packed(fault_pb2.HTTPFault())),
            hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=packed(cors_pb2.Cors())),
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=packed(router_pb2.Router())),
        ],
    )
    if on_demand:
        # First: the filters after it (fault, CORS) must see the route it fetched.
        hcm.http_filters.insert(
            0, hcm_pb2.HttpFilter(name=ON_DEMAND_FILTER, typed_config=packed(on_demand_filter()))
        )
    return hcm


def on_demand_filter() -> on_demand_pb2.OnDemand:
    """``envoy.filters.http.on_demand``: a Host no virtual host matches is asked for over
    VHDS, and a route's cluster Envoy does not have is asked for over CDS (both on ADS)."""
    return on_demand_pb2.OnDemand(
        odcds=on_demand_pb2.OnDemandCds(source=ads_source(), timeout=duration(ON_DEMAND_TIMEOUT))
    )


# How long a request waits for a cluster fetched on demand before Envoy answers 503.
ON_DEMAND_TIMEOUT = 5.0


def local_outbound_listener(port: int, on_demand: bool = False) -> listener_pb2.Listener:
    """Local mode: the application sends plain HTTP to 127.0.0.1:port; routing is by Host."""
    hcm = http_connection_manager(f"outbound_127.0.0.1_{port}", local_route_name(port), on_demand)
    return listener_pb2.Listener(
        name=local_listener_name(port),
        address=socket_address(LOCAL_ADDRESS, port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[
            lc.FilterChain(filters=[lc.Filter(name=HCM_FILTER, typed_config=packed(hcm))])
        ],
    )
