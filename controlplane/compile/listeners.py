"""LDS: the listeners of a sidecar."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from controlplane.compile.naming import local_listener_name, local_route_name
from controlplane.compile.protos import ads_source, packed, socket_address

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"


def http_connection_manager(
    stat_prefix: str, route_config_name: str
) -> hcm_pb2.HttpConnectionManager:
    return hcm_pb2.HttpConnectionManager(
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


def local_outbound_listener(port: int) -> listener_pb2.Listener:
    """Local mode: the application sends plain HTTP to 127.0.0.1:port; routing is by Host."""
    hcm = http_connection_manager(f"outbound_127.0.0.1_{port}", local_route_name(port))
    return listener_pb2.Listener(
        name=local_listener_name(port),
        address=socket_address("127.0.0.1", port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=packed(hcm))]
            )
        ],
    )
