"""The inbound side of a sidecar: traffic that arrives for its own workload.

Which ports a workload accepts comes from the Services that select it (its "service targets":
the endpoints at the proxy's IP). Each target port gets filter chains that end in the inbound
cluster ``inbound|<port>||``, which reaches the local application.

- Transparent mode: every chain lives on ``virtualInbound`` (0.0.0.0:15006, where iptables
  redirects inbound connections), matched by the original destination port; unmatched ports
  pass through to ``InboundPassthroughCluster``.
- Local mode (no interception, several sidecars on one machine): each target port gets a
  listener of its own bound on the workload's address (its pod IP, e.g. 127.0.7.10:9080) that
  forwards to the application at ``Proxy.app_address`` (e.g. 127.0.7.110:9080).

Security code builds on two seams kept here on purpose: ``inbound_filter_chains`` builds every
chain of one port (mTLS turns its one plaintext chain into a TLS + plaintext pair), and
``inbound_http_filters`` is the one list of inbound HTTP filters (RBAC goes before the router).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import wrappers_pb2

from controlplane.api.networking import ConnectionPoolSettings
from controlplane.api.sidecar import Sidecar
from controlplane.compile.cluster_policy import apply_connection_pool
from controlplane.compile.filters import HCM_FILTER, ROUTER_FILTER
from controlplane.compile.inbound_security import (
    InboundSecurity,
    plaintext_only_chains,
    secure_port_chains,
)
from controlplane.compile.jwt import jwt_filters
from controlplane.compile.naming import (
    BLACKHOLE_CLUSTER,
    INBOUND_CAPTURE_PORT,
    INBOUND_PASSTHROUGH_BIND_ADDRESS,
    INBOUND_PASSTHROUGH_CLUSTER,
    VIRTUAL_INBOUND,
    VIRTUAL_INBOUND_BLACKHOLE_CHAIN,
    VIRTUAL_INBOUND_CATCH_ALL_HTTP_CHAIN,
    WILDCARD_ADDRESS,
    inbound_cluster_name,
    inbound_route_name,
    inbound_virtual_host_name,
    listener_name,
)
from controlplane.compile.network import (
    HTTP_APPLICATION_PROTOCOLS,
    destination_port_match,
    listener_filters,
    tcp_proxy_chain,
)
from controlplane.compile.protos import duration, packed, socket_address, uint32
from controlplane.compile.proxy import TRANSPARENT, Proxy
from controlplane.compile.rbac import http_rbac_filters, network_rbac_filters
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import port_protocol
from controlplane.store.sidecars import root_namespace, select_sidecar

INBOUND_CONNECT_TIMEOUT = 10.0
_MAX = 4294967295
# Ports of the sidecar itself: never served as an application port.
RESERVED_PORTS = frozenset({15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090})


@dataclass(frozen=True)
class InboundPort:
    """One port the workload accepts, as the Services that select it declare it.

    When several Services select the workload on one target port, the oldest decides the
    protocol, as istiod keeps the first service instance of a port.
    """

    target_port: int
    protocol: str  # HTTP, HTTP2, GRPC, TCP, UNKNOWN (as MeshPort.protocol)
    service_port: int
    hostname: str
    bind: str  # the address a local-mode listener binds (the workload's IP); 0.0.0.0 otherwise
    # Where the inbound cluster forwards: a Sidecar ingress listener's ``defaultEndpoint``
    # ("" and 0: the proxy's app address and ``target_port``).
    app_host: str = ""
    app_port: int = 0
    # The Sidecar's connection pool for this port (its ingress listener's, else its
    # ``inboundConnectionPool``), applied to the inbound cluster as istiod does.
    connection_pool: ConnectionPoolSettings | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in ("HTTP", "HTTP2", "GRPC", "UNKNOWN")

    @property
    def is_http2(self) -> bool:
        return self.protocol in ("HTTP2", "GRPC")


def inbound_ports(snapshot: SnapshotReader, proxy: Proxy) -> tuple[InboundPort, ...]:
    """The ports of the services whose endpoints are at one of the proxy's IPs (in its
    namespace), one per target port, ordered by port; or, as in istiod, the ingress
    listeners of the Sidecar in effect when it declares any."""
    sidecar = _sidecar_in_effect(snapshot, proxy)
    if sidecar is not None and sidecar.spec.ingress:
        return sidecar_ingress_ports(sidecar, proxy)
    ports = _service_ports(snapshot, proxy)
    pool = sidecar.spec.inbound_connection_pool if sidecar is not None else None
    if pool is not None:
        ports = tuple(replace(p, connection_pool=pool) for p in ports)
    return ports


def _service_ports(snapshot: SnapshotReader, proxy: Proxy) -> tuple[InboundPort, ...]:
    by_port: dict[int, InboundPort] = {}
    for ip in proxy.ips:
        if proxy.mode != TRANSPARENT and ip == proxy.app_address:
            continue  # the app itself listens there: a local listener would take its ports
        for service, endpoint in snapshot.service_targets(ip):
            if endpoint.namespace != proxy.namespace or endpoint.port in RESERVED_PORTS:
                continue
            if endpoint.port in by_port:
                continue
            mesh_port = service.port(endpoint.service_port)
            protocol = mesh_port.protocol if mesh_port is not None else "TCP"
            if protocol == "UDP":
                continue
            by_port[endpoint.port] = InboundPort(
                target_port=endpoint.port,
                protocol=protocol,
                service_port=endpoint.service_port,
                hostname=service.hostname,
                # Transparent chains do not depend on the pod's address: replicas share them.
                bind=WILDCARD_ADDRESS if proxy.mode == TRANSPARENT else ip,
            )
    return tuple(by_port[p] for p in sorted(by_port))


def _sidecar_in_effect(snapshot: SnapshotReader, proxy: Proxy) -> Sidecar | None:
    sidecars = snapshot.of_kind(Sidecar)
    if not sidecars:
        return None
    root = root_namespace(snapshot)
    return select_sidecar(sidecars.values(), proxy.namespace, proxy.labels, root)


def sidecar_ingress_ports(sidecar: Sidecar, proxy: Proxy) -> tuple[InboundPort, ...]:
    """The ports of the Sidecar's ingress listeners, which replace those of the Services that
    select the workload. ``defaultEndpoint`` ``127.0.0.1:P`` forwards to that address,
    ``0.0.0.0:P`` (or ``[::]:P``) to the app's address on P, unset to the app's address on
    the listener's port."""
    by_port: dict[int, InboundPort] = {}
    for listener in sidecar.spec.ingress:
        port = listener.port
        if port is None or port.number in RESERVED_PORTS or port.number in by_port:
            continue
        protocol = port_protocol(None, port.protocol or None)
        if protocol == "UDP" or listener.default_endpoint.startswith("unix://"):
            continue
        if proxy.mode == TRANSPARENT:
            bind = WILDCARD_ADDRESS
        else:
            bind = listener.bind or next((ip for ip in proxy.ips if ip != proxy.app_address), "")
            if not bind:
                continue  # no address of its own to listen on
        host, _, app_port = listener.default_endpoint.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        by_port[port.number] = InboundPort(
            target_port=port.number,
            protocol=protocol,
            service_port=port.number,
            hostname="",
            bind=bind,
            app_host="" if host in ("", "0.0.0.0", "::") else host,
            app_port=int(app_port) if app_port.isdigit() else 0,
            connection_pool=listener.connection_pool or sidecar.spec.inbound_connection_pool,
        )
    return tuple(by_port[p] for p in sorted(by_port))


# ---- filter chains of one port --------------------------------------------------------------


def inbound_chain_name(proxy: Proxy, port: InboundPort) -> str:
    """``0.0.0.0_9080`` on virtualInbound; ``<pod IP>_9080`` for a local-mode listener."""
    bind = WILDCARD_ADDRESS if proxy.mode == TRANSPARENT else port.bind
    return listener_name(bind, port.target_port)


def inbound_filter_chains(
    proxy: Proxy, port: InboundPort, security: InboundSecurity | None = None
) -> list[lc.FilterChain]:
    """Every filter chain of one inbound port.

    The plaintext chain matches the port's destination port; with ``security`` it carries
    the RBAC filters and becomes the TLS and/or plaintext chains its mTLS mode asks for.
    """
    name = inbound_chain_name(proxy, port)
    cluster = inbound_cluster_name(port.target_port)
    match = destination_port_match(port.target_port)
    tcp = tcp_proxy_chain(name, cluster, match)
    if security is not None:
        filters = [*network_rbac_filters(security.policies), *tcp.filters]
        del tcp.filters[:]
        tcp.filters.extend(filters)
    if not port.is_http:
        chains = [tcp]
    else:
        hcm = inbound_http_connection_manager(proxy, port, f"inbound_{name}", security)
        chains = [
            lc.FilterChain(
                name=name,
                filter_chain_match=match,
                filters=[lc.Filter(name=HCM_FILTER, typed_config=packed(hcm))],
            )
        ]
    if security is None:
        return chains
    # Under PERMISSIVE, TLS that is not the mesh's goes to the app as it is (TCP proxy).
    return secure_port_chains(chains, security, http=port.is_http, tls_passthrough=tcp)


def inbound_http_filters(
    proxy: Proxy, port: InboundPort, security: InboundSecurity | None = None
) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filters of an inbound chain, in order: JWT authentication
    (RequestAuthentication), RBAC (CUSTOM, AUDIT, DENY, ALLOW), then the router, always last."""
    rbac = http_rbac_filters(security.policies) if security is not None else []
    jwt = jwt_filters(security.jwt) if security is not None else []
    return [
        *jwt,
        *rbac,
        hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=packed(router_pb2.Router())),
    ]


def inbound_http_connection_manager(
    proxy: Proxy, port: InboundPort, stat_prefix: str, security: InboundSecurity | None = None
) -> hcm_pb2.HttpConnectionManager:
    """Inbound HTTP: an inline route configuration (no RDS), everything to the local app."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        route_config=inbound_route_configuration(port),
        http_filters=inbound_http_filters(proxy, port, security),
        use_remote_address=wrappers_pb2.BoolValue(value=False),
        forward_client_cert_details=hcm_pb2.HttpConnectionManager.APPEND_FORWARD,
        set_current_client_cert_details=hcm_pb2.HttpConnectionManager.SetCurrentClientCertDetails(
            subject=wrappers_pb2.BoolValue(value=True), uri=True, dns=True
        ),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
    )
    if port.is_http2:
        hcm.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    return hcm


def inbound_route_configuration(port: InboundPort) -> route_pb2.RouteConfiguration:
    cluster = inbound_cluster_name(port.target_port)
    action = rc.RouteAction(cluster=cluster, timeout=duration(0.0))
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(0.0))
    return route_pb2.RouteConfiguration(
        name=inbound_route_name(port.target_port),
        virtual_hosts=[
            rc.VirtualHost(
                name=inbound_virtual_host_name("http", port.target_port),
                domains=["*"],
                routes=[
                    rc.Route(
                        name="default",
                        match=rc.RouteMatch(prefix="/"),
                        route=action,
                        decorator=rc.Decorator(operation=f"{port.hostname}:{port.service_port}/*"),
                    )
                ],
            )
        ],
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


# ---- listeners --------------------------------------------------------------------------------


def virtual_inbound_listener(
    proxy: Proxy,
    port_chains: Sequence[Sequence[lc.FilterChain]],
    passthrough_security: InboundSecurity | None = None,
) -> listener_pb2.Listener:
    """``virtualInbound`` on 0.0.0.0:15006: a loop guard, the chains of every inbound port,
    and pass-through chains for ports no Service declares (secured by the workload's mTLS
    mode and policies, when ``passthrough_security`` is given)."""
    chains: list[lc.FilterChain] = [
        tcp_proxy_chain(
            VIRTUAL_INBOUND_BLACKHOLE_CHAIN,
            BLACKHOLE_CLUSTER,
            destination_port_match(INBOUND_CAPTURE_PORT),
        )
    ]
    for group in port_chains:
        chains.extend(group)
    chains.extend(_passthrough_chains(proxy, passthrough_security))
    return listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=socket_address(WILDCARD_ADDRESS, INBOUND_CAPTURE_PORT),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=chains,
        listener_filters=listener_filters(chains, with_original_dst=True),
        listener_filters_timeout=duration(0.0),
        continue_on_listener_filters_timeout=True,
    )


def _passthrough_chains(
    proxy: Proxy, security: InboundSecurity | None = None
) -> list[lc.FilterChain]:
    """Unmatched inbound traffic goes on to its original destination: HTTP through an HCM
    (so that HTTP policy applies to it), anything else through a TCP proxy. With mTLS, a TLS
    connection is terminated and passed on through the TCP proxy (network RBAC applies)."""
    http = InboundPort(0, "HTTP", 0, INBOUND_PASSTHROUGH_CLUSTER, WILDCARD_ADDRESS)
    route = inbound_route_configuration(http)
    route.name = INBOUND_PASSTHROUGH_CLUSTER
    route.virtual_hosts[0].name = inbound_virtual_host_name("http", 0)
    route.virtual_hosts[0].routes[0].route.cluster = INBOUND_PASSTHROUGH_CLUSTER
    route.virtual_hosts[0].routes[0].ClearField("decorator")
    hcm = inbound_http_connection_manager(proxy, http, INBOUND_PASSTHROUGH_CLUSTER, security)
    hcm.route_config.CopyFrom(route)
    http_chain = lc.FilterChain(
        name=VIRTUAL_INBOUND_CATCH_ALL_HTTP_CHAIN,
        filter_chain_match=lc.FilterChainMatch(
            application_protocols=list(HTTP_APPLICATION_PROTOCOLS)
        ),
        filters=[lc.Filter(name=HCM_FILTER, typed_config=packed(hcm))],
    )
    tcp_chain = tcp_proxy_chain(VIRTUAL_INBOUND, INBOUND_PASSTHROUGH_CLUSTER)
    if security is None:
        return [http_chain, tcp_chain]
    filters = [*network_rbac_filters(security.policies), *tcp_chain.filters]
    del tcp_chain.filters[:]
    tcp_chain.filters.extend(filters)
    return [
        *plaintext_only_chains(http_chain, security),
        *secure_port_chains([tcp_chain], security, http=False, tls_passthrough=tcp_chain),
    ]


def local_inbound_listener(
    port: InboundPort, chains: Sequence[lc.FilterChain]
) -> listener_pb2.Listener:
    """Local mode: a listener bound on the workload's own address and target port."""
    return listener_pb2.Listener(
        name=listener_name(port.bind, port.target_port),
        address=socket_address(port.bind, port.target_port),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=list(chains),
        listener_filters=listener_filters(chains, with_original_dst=False),
        continue_on_listener_filters_timeout=True,
    )


# ---- clusters ---------------------------------------------------------------------------------


def inbound_cluster(
    target_port: int,
    protocol: str,
    app_address: str,
    transparent: bool,
    app_port: int = 0,
    pool: ConnectionPoolSettings | None = None,
) -> cluster_pb2.Cluster:
    """``inbound|9080||``: the local application at ``app_address:target_port`` (or
    ``app_port``, a Sidecar ingress listener's ``defaultEndpoint`` port).

    In transparent mode the connection leaves from 127.0.0.6, which the init container's rules
    let through instead of capturing it again.
    """
    name = inbound_cluster_name(target_port)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(INBOUND_CONNECT_TIMEOUT),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=socket_address(app_address, app_port or target_port)
                            )
                        )
                    ]
                )
            ],
        ),
        circuit_breakers=_unlimited(),
    )
    if transparent:
        cluster.upstream_bind_config.CopyFrom(_bind_config())
    if pool is not None:  # a Sidecar's: the server's capacity (connect timeout and limits)
        apply_connection_pool(cluster, pool)
    if protocol in ("HTTP2", "GRPC"):
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].CopyFrom(packed(options))
    return cluster


def inbound_passthrough_cluster() -> cluster_pb2.Cluster:
    """Inbound traffic to a port no Service declares, to its original destination."""
    return cluster_pb2.Cluster(
        name=INBOUND_PASSTHROUGH_CLUSTER,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=duration(INBOUND_CONNECT_TIMEOUT),
        upstream_bind_config=_bind_config(),
        circuit_breakers=_unlimited(),
    )


def _bind_config() -> address_pb2.BindConfig:
    return address_pb2.BindConfig(
        source_address=address_pb2.SocketAddress(
            address=INBOUND_PASSTHROUGH_BIND_ADDRESS, port_value=0
        )
    )


def _unlimited() -> circuit_breaker_pb2.CircuitBreakers:
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections=uint32(_MAX),
                max_pending_requests=uint32(_MAX),
                max_requests=uint32(_MAX),
                max_retries=uint32(_MAX),
            )
        ]
    )
