"""Outbound TCP and TLS: the filter chains of one non-HTTP service port.

A VirtualService's ``tls`` routes become chains matching the SNI (``server_names``, with the
TLS inspector), its ``tcp`` routes chains matching destination subnets (or everything); each
ends in a TCP proxy to one cluster or to weighted clusters. First match wins, as in Istio:
generation stops after the first catch-all, and a port no route covers gets the service's
default cluster.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc

from controlplane.api.networking import (
    L4MatchAttributes,
    RouteDestination,
    TLSMatchAttributes,
    VirtualService,
)
from controlplane.compile.guard import log_passed_over
from controlplane.compile.naming import outbound_cluster_name
from controlplane.compile.network import TLS_TRANSPORT, tcp_proxy
from controlplane.compile.protos import uint32
from controlplane.compile.proxy import Proxy
from controlplane.compile.scope import SidecarScope
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import MeshService, selects
from controlplane.store.snapshot import resolve_host


def outbound_tcp_chains(
    snapshot: SnapshotReader,
    service: MeshService,
    port: int,
    protocol: str,
    proxy: Proxy,
    scope: SidecarScope | None = None,
) -> list[lc.FilterChain]:
    """Every chain of ``service:port`` for ``proxy``, in match order, ending in a catch-all.

    The first VirtualService (in istiod's order of preference) that has a route for this
    port and proxy decides; one without (HTTP routes only, or matches for other ports or
    sources) is passed over.
    """
    chains: list[lc.FilterChain] = []
    seen: set[bytes] = set()
    catch_all = False
    for vs in snapshot.virtual_services_for(service.hostname, proxy.namespace):
        if scope is not None and not scope.imports_virtual_service(vs):
            continue  # the proxy's Sidecar does not import it
        try:
            catch_all = virtual_service_chains(snapshot, vs, port, protocol, proxy, chains, seen)
        except Exception:  # noqa: BLE001 (one resource never stops a proxy's updates)
            log_passed_over(vs, service.hostname, port, proxy)
            chains.clear()
            seen.clear()
            catch_all = False
        if chains:
            break
    if not catch_all:
        default = outbound_cluster_name(port, None, service.hostname)
        _add(chains, seen, lc.FilterChainMatch(), tcp_proxy(default, [(default, 1)]))
    return chains


def wildcard_port_chains(
    snapshot: SnapshotReader,
    services: Sequence[MeshService],
    port: int,
    proxy: Proxy,
    fallback: str,
) -> list[lc.FilterChain]:
    """The chains of ``0.0.0.0_<port>`` for TCP and TLS hosts without an address
    (ServiceEntries), as istiod merges them into one listener: a TLS host gets chains that
    match its SNI (its VirtualService's ``tls`` routes, else its own name), a TCP host with
    addresses (CIDR blocks) the connections to them, the first TCP host without any every
    other connection, and with none the rest goes to ``fallback``."""
    chains: list[lc.FilterChain] = []
    seen: set[bytes] = set()
    catch_all = False
    for service in services:
        sport = service.port(port)
        if sport is None:
            continue
        if sport.protocol == "TLS":
            before = len(chains)
            for vs in snapshot.virtual_services_for(service.hostname, proxy.namespace):
                try:
                    virtual_service_chains(snapshot, vs, port, "TLS", proxy, chains, seen)
                except Exception:  # noqa: BLE001 (one resource never stops a proxy's updates)
                    log_passed_over(vs, service.hostname, port, proxy)
                    del chains[before:]
                if len(chains) > before:
                    break
            if len(chains) == before:
                cluster = outbound_cluster_name(port, None, service.hostname)
                sni = lc.FilterChainMatch(
                    server_names=[service.hostname], transport_protocol=TLS_TRANSPORT
                )
                _add(chains, seen, sni, tcp_proxy(cluster, [(cluster, 1)]))
        elif service.addresses:
            # Addresses (CIDR blocks, or several): the host takes the connections to them.
            cluster = outbound_cluster_name(port, None, service.hostname)
            prefixes = lc.FilterChainMatch(prefix_ranges=_cidrs(service.addresses))
            _add(chains, seen, prefixes, tcp_proxy(cluster, [(cluster, 1)]))
        elif not catch_all:
            for chain in outbound_tcp_chains(snapshot, service, port, sport.protocol, proxy):
                _add(chains, seen, chain.filter_chain_match, chain.filters[0])
            catch_all = True
    if not catch_all:
        _add(chains, seen, lc.FilterChainMatch(), tcp_proxy(fallback, [(fallback, 1)]))
    return chains


def virtual_service_chains(
    snapshot: SnapshotReader,
    vs: VirtualService,
    port: int,
    protocol: str,
    proxy: Proxy,
    chains: list[lc.FilterChain],
    seen: set[bytes],
) -> bool:
    """Append the chains ``vs`` gives this port; True when the last one matches everything."""
    if protocol == "TLS":
        for tls in vs.spec.tls:
            for sni in tls.match:
                if not _applies(sni, port, proxy):
                    continue
                chain_match = lc.FilterChainMatch(
                    server_names=list(sni.sni_hosts),  # literal: what clients send
                    transport_protocol=TLS_TRANSPORT,
                    prefix_ranges=_cidrs(sni.destination_subnets),
                )
                _add(chains, seen, chain_match, _proxy_filter(snapshot, vs, tls.route, port))
    for route in vs.spec.tcp:
        matches: list[L4MatchAttributes | None] = list(route.match) or [None]
        for match in matches:
            if match is not None and not _applies(match, port, proxy):
                continue
            subnets = match.destination_subnets if match is not None else []
            chain_match = lc.FilterChainMatch(prefix_ranges=_cidrs(subnets))
            _add(chains, seen, chain_match, _proxy_filter(snapshot, vs, route.route, port))
            if not subnets:
                return True
    return False


def _applies(match: L4MatchAttributes | TLSMatchAttributes, port: int, proxy: Proxy) -> bool:
    """Whether a match entry can apply on ``port`` of this sidecar, decided at compile time:
    its port, the proxy's labels and namespace, and a ``gateways`` list naming the mesh."""
    if match.port is not None and match.port != port:
        return False
    if match.gateways and "mesh" not in match.gateways:
        return False
    if match.source_labels and not selects(match.source_labels, proxy.labels):
        return False
    return not (match.source_namespace and match.source_namespace != proxy.namespace)


def _add(
    chains: list[lc.FilterChain], seen: set[bytes], match: lc.FilterChainMatch, proxy: lc.Filter
) -> None:
    """Append a chain unless an earlier one has the same match (Envoy rejects duplicates;
    the earlier one wins anyway)."""
    key = match.SerializeToString(deterministic=True)
    if key in seen:
        return
    seen.add(key)
    chain = lc.FilterChain(filters=[proxy])
    if key:
        chain.filter_chain_match.CopyFrom(match)
    chains.append(chain)


def _cidrs(subnets: Sequence[str]) -> list[address_pb2.CidrRange]:
    out = []
    for subnet in subnets:
        try:
            network = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            continue  # rejected by validation; never reaches a compiled listener
        out.append(
            address_pb2.CidrRange(
                address_prefix=str(network.network_address), prefix_len=uint32(network.prefixlen)
            )
        )
    return out


def _proxy_filter(
    snapshot: SnapshotReader, vs: VirtualService, routes: Sequence[RouteDestination], port: int
) -> lc.Filter:
    clusters = weighted_destinations(snapshot, vs, routes, port)
    return tcp_proxy(clusters[0][0] if len(clusters) == 1 else f"outbound|{port}||", clusters)


def weighted_destinations(
    snapshot: SnapshotReader, vs: VirtualService, routes: Sequence[RouteDestination], port: int
) -> list[tuple[str, int]]:
    """(cluster, weight) of each destination; weight 0 dropped; a lone one gets 1."""
    namespace = vs.metadata.namespace
    out: list[tuple[str, int]] = []
    for dest in routes:
        host = resolve_host(dest.destination.host, namespace)
        number = dest.destination.port.number if dest.destination.port else None
        cluster = outbound_cluster_name(
            _destination_port(snapshot, host, number, port), dest.destination.subset, host
        )
        weight = dest.weight if dest.weight is not None else (1 if len(routes) == 1 else 0)
        if weight > 0:
            out.append((cluster, weight))
    if not out and routes:
        # Validation rejects an all-zero split; a lone weight-0 destination still routes.
        first = routes[0].destination
        host = resolve_host(first.host, namespace)
        out.append((outbound_cluster_name(port, first.subset, host), 1))
    if len(out) == 1:
        out = [(out[0][0], 1)]
    return out


def _destination_port(
    snapshot: SnapshotReader, host: str, requested: int | None, listener_port: int
) -> int:
    """As written, else the service's only port, else the port the connection came in on
    (the same rule ``http_routes`` applies to HTTP destinations)."""
    if requested:
        return requested
    service = snapshot.services.get(host)
    if service is not None and len(service.ports) == 1:
        return service.ports[0].port
    return listener_port
