"""Gateway proxies (Envoy in router mode): Istio Gateways merged into listeners and routes.

The merge itself is ``store/gateway_merge.py`` (the in-context checks report what it skips);
this module selects the Gateways and builds listeners and route configurations from it.

As istiod does it (pilot/pkg/model/gateway.go ``mergeGateways``, pilot/pkg/networking/core/
gateway.go): a router proxy gets every Gateway whose ``selector`` is a subset of its labels
(a Gateway without selector applies to every gateway proxy), from every namespace. Their
servers merge by port: a server port that a Service of the gateway's pods declares becomes
that Service's target port (the legacy selector's port translation), so ``port: 80`` behind
a Service ``80 -> 8080`` is the listener ``0.0.0.0_8080``. Plain HTTP servers on one port share
one route configuration ``http.<port>``; each terminated HTTPS server has its own
``https.<number>.<port name>.<gateway>.<namespace>``; a server that conflicts with one merged
before it (another protocol on the port, a duplicate TLS host) is skipped, as istiod skips it.

Route configurations hold one virtual host per host of a VirtualService bound to the
server's Gateway (``gateways: [ns/name]``, a bare name in the VirtualService's namespace),
intersected with the server's ``hosts`` (``ns/host`` only for VirtualServices of ``ns``,
``./host`` in the Gateway's namespace, ``*/host`` or ``host`` for any). With no virtual host
the table is ``blackhole:<port>`` and every request gets 404.

Where TLS plugs in: ``server_filter_chains`` builds the filter chains of one merged server.
Plain HTTP servers are built here; a server with TLS settings on an HTTPS/TLS port gets its
chains from ``compile/gateway_tls.py`` (SNI match, DownstreamTlsContext with the
``credentialName`` SDS secrets, the HCM; or, for PASSTHROUGH, a tcp_proxy per SNI route of
the bound VirtualServices). ``tls.httpsRedirect`` marks the server's virtual hosts
``require_tls: ALL`` (Envoy answers 301 to https).

TCP servers forward by the first ``tcp`` route of a bound VirtualService that fits the
server's port and Gateway. AuthorizationPolicies selecting the gateway's pods are enforced
on every chain (HTTP and network RBAC), as on a sidecar's inbound ports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from controlplane.api.gateway import (
    Gateway,
    hosts_for_namespace,
    intersect_hosts,
    is_http_server,
    is_passthrough,
    is_tls_server,
    resolve_gateway_name,
)
from controlplane.api.issues import ResourceKey
from controlplane.api.networking import L4MatchAttributes, TLSMatchAttributes, VirtualService
from controlplane.api.security import AuthorizationPolicy
from controlplane.compile.filters import HCM_FILTER
from controlplane.compile.gateway_tls import passthrough_chains, secure_chain
from controlplane.compile.guard import log_passed_over
from controlplane.compile.http_routes import is_catch_all, routes_from_virtual_service
from controlplane.compile.inbound import inbound_ports
from controlplane.compile.naming import WILDCARD_ADDRESS, virtual_host_name
from controlplane.compile.network import listener_filters, tcp_proxy
from controlplane.compile.outbound import http_connection_manager
from controlplane.compile.protos import packed, socket_address
from controlplane.compile.proxy import ROUTER, Proxy
from controlplane.compile.rbac import (
    WorkloadPolicies,
    http_rbac_filters,
    network_rbac_filters,
    policies_for,
)
from controlplane.compile.tcp import weighted_destinations
from controlplane.store.gateway_merge import (
    GatewayServer,
    ListenerPort,
    MergedGateway,
    SkippedServer,
    merge_gateways,
    route_name,
)
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import selects
from controlplane.store.snapshot import created, exported_to, resolve_host

__all__ = [
    "GatewayServer",
    "ListenerPort",
    "MergedGateway",
    "SkippedServer",
    "gateway_listener",
    "gateway_route_configuration",
    "gateways_for",
    "is_router",
    "merge_gateways",
    "port_translation",
    "route_name",
    "server_filter_chains",
]


def is_router(proxy: Proxy) -> bool:
    return proxy.proxy_type == ROUTER


# ---- selection and merging ----------------------------------------------------------------


def gateways_for(snapshot: SnapshotReader, proxy: Proxy) -> list[Gateway]:
    """The Gateways that select ``proxy`` (by labels; no selector: every gateway proxy),
    oldest first, as istiod orders configs."""
    found = [
        gw
        for gw in snapshot.of_kind(Gateway).values()
        if not gw.spec.selector or selects(gw.spec.selector, proxy.labels)
    ]
    return sorted(found, key=created)


def port_translation(snapshot: SnapshotReader, proxy: Proxy) -> tuple[tuple[int, int], ...]:
    """(Service port, target port) of the Services that select the gateway's pod (the ports
    it serves; the oldest Service decides a shared target port): istiod's ``resolvePorts``."""
    return tuple((p.service_port, p.target_port) for p in inbound_ports(snapshot, proxy))


# ---- listeners ----------------------------------------------------------------------------


def gateway_listener(
    snapshot: SnapshotReader, proxy: Proxy, listener: ListenerPort
) -> listener_pb2.Listener | None:
    """``0.0.0.0_<port>``: one filter chain per server (plain HTTP servers share one);
    None when no server yields a chain. TLS chains (terminated or passed through) match
    ``transport_protocol: tls`` and SNI, so the listener gets the TLS inspector."""
    chains: list[lc.FilterChain] = []
    plain_http_done = False
    known_sni: dict[str, str] = {}  # passthrough SNI name -> bind, for duplicates
    for entry in listener.servers:
        if not is_tls_server(entry.server) and is_http_server(entry.server):
            if plain_http_done:
                continue  # plain HTTP servers of one port share http.<port>
            plain_http_done = True
        chains.extend(server_filter_chains(snapshot, proxy, listener, entry, known_sni))
    if not chains:
        return None
    return listener_pb2.Listener(
        name=listener.name,
        address=socket_address(listener.bind or WILDCARD_ADDRESS, listener.port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=chains,
        listener_filters=listener_filters(chains, with_original_dst=False),
    )


def server_filter_chains(
    snapshot: SnapshotReader,
    proxy: Proxy,
    listener: ListenerPort,
    entry: GatewayServer,
    known_sni: dict[str, str] | None = None,
) -> list[lc.FilterChain]:
    """The filter chains one server contributes to its listener. TLS (compile/gateway_tls.py):
    terminated HTTPS gets the HTTP chain behind its TLS context, a terminated TLS server its
    TCP route behind it, PASSTHROUGH one SNI chain per bound ``tls`` route (``known_sni``: the
    SNI names already taken on the listener). AUTO_PASSTHROUGH is not implemented
    (reported by validation): no chain."""
    server = entry.server
    if is_tls_server(server):
        assert server.tls is not None
        if server.tls.mode == "AUTO_PASSTHROUGH":
            return []
        policies = gateway_policies(snapshot, proxy)
        if is_http_server(server):
            chain = http_filter_chain(listener, entry.route_name, policies)
            return [secure_chain(chain, server)]
        # AuthorizationPolicies apply to TLS chains as to TCP ones (istiod's
        # buildCompleteNetworkFilters): network RBAC before the TCP proxy.
        rbac = network_rbac_filters(policies)
        if is_passthrough(server):
            bound = [
                (vs, shared)
                for vs in bound_virtual_services(snapshot, entry.gateway, proxy.namespace)
                if (shared := shared_hosts(entry.hosts, vs))
            ]
            chains = passthrough_chains(
                snapshot,
                server,
                entry.gateway,
                entry.number,
                bound,
                {} if known_sni is None else known_sni,
            )
            for chain in chains:
                filters = [*rbac, *chain.filters]
                del chain.filters[:]
                chain.filters.extend(filters)
            return chains
        terminated = tcp_route_filter(snapshot, proxy, entry)
        if terminated is None:
            return []
        return [secure_chain(lc.FilterChain(filters=[*rbac, terminated]), server)]
    policies = gateway_policies(snapshot, proxy)
    if is_http_server(server):
        return [http_filter_chain(listener, entry.route_name, policies)]
    proxy_filter = tcp_route_filter(snapshot, proxy, entry)
    if proxy_filter is None:
        return []
    return [lc.FilterChain(filters=[*network_rbac_filters(policies), proxy_filter])]


def gateway_policies(snapshot: SnapshotReader, proxy: Proxy) -> WorkloadPolicies:
    """The AuthorizationPolicies that select the gateway's pods (by their labels, in their
    namespace, and the root namespace's): enforced on its listeners as on a sidecar's
    inbound ports, which is how istiod applies them to gateways."""
    return policies_for(
        snapshot.of_kind(AuthorizationPolicy).values(),
        proxy.namespace,
        proxy.labels,
        rejected=snapshot.rejected("AuthorizationPolicy"),
    )


def tcp_route_filter(
    snapshot: SnapshotReader, proxy: Proxy, entry: GatewayServer
) -> lc.Filter | None:
    """A TCP server (or a terminated TLS one): the first ``tcp`` route of a bound
    VirtualService sharing a host with the server whose match fits the server's port and
    gateway, as a TCP proxy (istiod's buildGatewayNetworkFiltersFromTCPRoutes); None if none."""
    for vs in bound_virtual_services(snapshot, entry.gateway, proxy.namespace):
        if not shared_hosts(entry.hosts, vs):
            continue
        for tcp in vs.spec.tcp:
            if tcp.route and l4_match(tcp.match, entry):
                clusters = weighted_destinations(snapshot, vs, tcp.route, entry.number)
                single = clusters[0][0] if len(clusters) == 1 else None
                return tcp_proxy(single or f"outbound|{entry.number}||", clusters)
    return None


def l4_match(
    matches: Sequence[L4MatchAttributes | TLSMatchAttributes], entry: GatewayServer
) -> bool:
    """No match, or one whose ``port`` (if any) is the server's and whose ``gateways`` (if
    any) name the server's Gateway."""
    if not matches:
        return True
    for match in matches:
        port_ok = match.port is None or match.port == entry.number
        names = {resolve_gateway_name(g, entry.namespace) for g in match.gateways}
        if port_ok and (not match.gateways or entry.gateway in names):
            return True
    return False


def http_filter_chain(
    listener: ListenerPort, route_config: str, policies: WorkloadPolicies
) -> lc.FilterChain:
    """A plain HTTP chain: the gateway's HTTP connection manager on RDS ``route_config``."""
    hcm = gateway_connection_manager(listener, route_config, policies)
    return lc.FilterChain(filters=[lc.Filter(name=HCM_FILTER, typed_config=packed(hcm))])


def gateway_connection_manager(
    listener: ListenerPort, route_config: str, policies: WorkloadPolicies
) -> hcm_pb2.HttpConnectionManager:
    """The gateway's HTTP connection manager (plain or behind TLS): routes from RDS
    ``route_config``, the gateway's AuthorizationPolicies first, then fault, CORS, router."""
    hcm = http_connection_manager(f"outbound_{listener.name}", route_config)
    # A gateway is the edge: the client's address is the connection's (istiod sets this for
    # router proxies), which is what X-Forwarded-For and RBAC's remote_ip then see.
    hcm.use_remote_address.CopyFrom(wrappers_pb2.BoolValue(value=True))
    # istiod's gateway default (meshConfig gatewayTopology unset): a client's own
    # X-Forwarded-Client-Cert never enters the mesh; with a client certificate (MUTUAL TLS)
    # the gateway sets it from what it verified.
    hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
    details = hcm.set_current_client_cert_details
    details.subject.value, details.cert, details.dns, details.uri = True, True, True, True
    rbac = http_rbac_filters(policies)
    if rbac:
        filters = [*rbac, *hcm.http_filters]
        del hcm.http_filters[:]
        hcm.http_filters.extend(filters)
    return hcm


# ---- routes -------------------------------------------------------------------------------


def _https_redirect(entry: GatewayServer) -> bool:
    """``tls.httpsRedirect``: Envoy answers 301 to https:// for every request (require_tls)."""
    return entry.server.tls is not None and bool(entry.server.tls.https_redirect)


def bound_virtual_services(
    snapshot: SnapshotReader, gateway: str, client_namespace: str
) -> list[VirtualService]:
    """The VirtualServices bound to ``gateway`` ("ns/name") that the gateway's namespace
    sees (exportTo), oldest first."""
    found = [
        vs
        for vs in snapshot.of_kind(VirtualService).values()
        if gateway in bound_gateways(vs)
        and exported_to(vs.spec.export_to, vs.metadata.namespace, client_namespace)
    ]
    return sorted(found, key=created)


def bound_gateways(vs: VirtualService) -> frozenset[str]:
    """``spec.gateways`` resolved (``mesh``, ``ns/name``); empty means ``mesh`` only."""
    if not vs.spec.gateways:
        return frozenset({"mesh"})
    return frozenset(resolve_gateway_name(g, vs.metadata.namespace) for g in vs.spec.gateways)


def shared_hosts(server_hosts: Iterable[str], vs: VirtualService) -> list[str]:
    """The hosts a server and a VirtualService share (short names resolved in the
    VirtualService's namespace, lower case)."""
    namespace = vs.metadata.namespace
    resolved = [resolve_host(h, namespace).lower() for h in vs.spec.hosts]
    return intersect_hosts(hosts_for_namespace(server_hosts, namespace), resolved)


def gateway_route_configuration(
    snapshot: SnapshotReader,
    proxy: Proxy,
    name: str,
    servers: Sequence[GatewayServer],
) -> route_pb2.RouteConfiguration:
    """One route configuration (``http.8080``, ``https.443...``) for the servers that share
    it: a virtual host ``host:port`` per host a bound VirtualService and a server share."""
    hosts: dict[str, rc.VirtualHost] = {}
    routes_of: dict[tuple[str, ResourceKey], list[rc.Route]] = {}
    for entry in servers:
        bound = bound_virtual_services(snapshot, entry.gateway, proxy.namespace)
        for vs in bound:
            shared = shared_hosts(entry.hosts, vs)
            if not shared:
                continue
            vs_key = ResourceKey("VirtualService", vs.metadata.namespace, vs.metadata.name)
            found = routes_of.get((entry.gateway, vs_key))
            if found is None:
                try:
                    found = routes_from_virtual_service(
                        snapshot, vs, entry.number, proxy, gateway=entry.gateway
                    )
                except Exception:  # noqa: BLE001 (one resource never stops a proxy's updates)
                    log_passed_over(vs, ",".join(shared), entry.number, proxy)
                    found = []
                routes_of[(entry.gateway, vs_key)] = found
            for host in shared:
                vhost = hosts.get(host)
                if vhost is None:
                    hosts[host] = vhost = rc.VirtualHost(
                        name=virtual_host_name(host, entry.number),
                        domains=[host],
                        routes=list(found),
                    )
                else:
                    vhost.routes.extend(found)
                if _https_redirect(entry):
                    vhost.require_tls = rc.VirtualHost.ALL
        if _https_redirect(entry):
            # Every host of the server redirects, with or without a VirtualService (istiod).
            for host in entry.hosts:
                domain = (host.partition("/")[2] if "/" in host else host).lower()
                redirect = hosts.get(domain)
                if redirect is None:
                    hosts[domain] = redirect = rc.VirtualHost(
                        name=virtual_host_name(domain, entry.number), domains=[domain]
                    )
                redirect.require_tls = rc.VirtualHost.ALL
    for vhost in hosts.values():
        # Several VirtualServices may route one host (their routes are appended in order);
        # as istiod's SortVHostRoutes, catch-all routes go last so none hides another's.
        ordered = [r for r in vhost.routes if not is_catch_all(r)]
        ordered += [r for r in vhost.routes if is_catch_all(r)]
        del vhost.routes[:]
        vhost.routes.extend(ordered)
    if hosts:
        virtual_hosts = sorted(hosts.values(), key=lambda v: v.name)
    else:
        number = servers[0].number if servers else 0
        # Envoy answers 404 (NR) for every request a table with no route matches.
        virtual_hosts = [rc.VirtualHost(name=virtual_host_name("blackhole", number), domains=["*"])]
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=virtual_hosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        ignore_port_in_host_matching=True,
    )
