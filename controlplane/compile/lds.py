"""LDS: the listeners of one proxy.

Transparent mode: ``virtualOutbound`` (15001), a ``0.0.0.0_<port>`` listener per HTTP
service port (sniffing plaintext TCP to its fallback clusters where the protocol is not
declared), a ``<VIP>_<port>`` listener per TCP or TLS service port, and ``virtualInbound``
(15006) with a filter chain per port the workload serves, secured as its PeerAuthentication
and AuthorizationPolicies say. Local mode: the local outbound listener, one listener per
explicit local TCP port, and one inbound listener per served port. Listener bodies are
built by ``outbound.py``, ``inbound.py``, ``inbound_security.py``
and ``tcp.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import partial

from envoy.config.listener.v3 import listener_pb2

from controlplane.compile import resources as types
from controlplane.compile.context import CompileContext
from controlplane.compile.gateway import gateway_listener, is_router
from controlplane.compile.generator import Built, Generator
from controlplane.compile.inbound import (
    RESERVED_PORTS,
    InboundPort,
    inbound_filter_chains,
    inbound_ports,
    local_inbound_listener,
    virtual_inbound_listener,
)
from controlplane.compile.memo import Family, MemoKey
from controlplane.compile.naming import (
    BLACKHOLE_CLUSTER,
    WILDCARD_ADDRESS,
    outbound_cluster_name,
)
from controlplane.compile.outbound import (
    http_port_listener,
    local_outbound_listener,
    local_tcp_listener,
    sniffing_port_listener,
    tcp_port_listener,
    virtual_outbound_listener,
)
from controlplane.compile.outbound_policy import fallback_cluster, outbound_mode
from controlplane.compile.proxy import TRANSPARENT, Proxy
from controlplane.compile.resources import CompiledResource
from controlplane.compile.tcp import outbound_tcp_chains, wildcard_port_chains
from controlplane.compile.telemetry import SideTelemetry
from controlplane.compile.telemetry_filters import with_telemetry
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import resolve_host


def generate(context: CompileContext, proxy: Proxy, built: Built) -> dict[str, CompiledResource]:
    """Every listener ``proxy`` should have (a gateway's, or a sidecar's in transparent or
    local mode)."""
    if is_router(proxy):
        return _gateway_listeners(context, proxy)
    ports = inbound_ports(context.reads, proxy)
    listeners: dict[str, CompiledResource] = {}
    if proxy.mode == TRANSPARENT:
        _transparent_outbound(context, proxy, listeners)
        found = _virtual_inbound(context, proxy, ports)
        listeners[found.name] = found
        return listeners
    if proxy.local_outbound_port:
        found = _local_listener(context, proxy, proxy.local_outbound_port)
        listeners[found.name] = found
    for found in _local_tcp_listeners(context, proxy):
        listeners.setdefault(found.name, found)
    for port in ports:
        found = _local_inbound(context, proxy, port)
        listeners.setdefault(found.name, found)
    return listeners


def _message(
    context: CompileContext,
    key: MemoKey,
    factory: Callable[[], listener_pb2.Listener],
    side: SideTelemetry,
) -> CompiledResource:
    """A listener built by ``factory`` (from ``key`` alone), with ``side``'s access logs and
    tracing (part "telemetry"), memoized."""

    def build() -> CompiledResource:
        message = with_telemetry(factory(), side)
        return CompiledResource(message.name, message)

    return context.memo.cached((key[0], *key[1:], side), build)


def _client(context: CompileContext, proxy: Proxy) -> SideTelemetry:
    """The telemetry of the proxy's outbound (and gateway) listeners: istiod's CLIENT mode."""
    return context.telemetry(proxy).client


def _server(context: CompileContext, proxy: Proxy) -> SideTelemetry:
    """The telemetry of the proxy's inbound listeners: istiod's SERVER mode."""
    return context.telemetry(proxy).server


# ---- gateways (router mode) ------------------------------------------------------------------


def _gateway_listeners(context: CompileContext, proxy: Proxy) -> dict[str, CompiledResource]:
    """One listener per merged server port (compile/gateway.py)."""
    side = _client(context, proxy)
    key: MemoKey = (Family.GATEWAY_LISTENERS, *(*context.gateway_key(proxy), side))

    def build() -> dict[str, CompiledResource]:
        merged = context.merged_gateway(proxy)
        out: dict[str, CompiledResource] = {}
        for port in merged.listeners:
            listener = gateway_listener(context.reads, proxy, port)
            if listener is not None:
                listener = with_telemetry(listener, side)
                out.setdefault(listener.name, CompiledResource(listener.name, listener))
        return out

    return dict(context.memo.cached(key, build))


# ---- transparent mode: outbound -------------------------------------------------------------


def _transparent_outbound(
    context: CompileContext, proxy: Proxy, listeners: dict[str, CompiledResource]
) -> None:
    """virtualOutbound, a ``0.0.0.0_<port>`` listener per HTTP service port (its routes:
    RDS ``"<port>"``), a ``<VIP>_<port>`` listener per TCP/TLS service port."""
    fallback = fallback_cluster(outbound_mode(context.reads, proxy))
    side = _client(context, proxy)
    found = _message(
        context,
        (Family.VIRTUAL_OUTBOUND, fallback),
        partial(virtual_outbound_listener, fallback),
        side,
    )
    listeners[found.name] = found
    services = context.services_for(proxy)
    http_ports: set[int] = set()
    # Undeclared ports are sniffed: (VIP, cluster) of the services whose TCP falls back.
    sniffed: dict[int, list[tuple[str, str]]] = {}
    # TCP and TLS ports of hosts without an address (ServiceEntries): 0.0.0.0_<port>.
    wildcard: dict[int, list[MeshService]] = {}
    for service in services:
        for sport in service.ports:
            if sport.protocol == "UDP" or sport.port in RESERVED_PORTS:
                continue
            if sport.is_http:
                http_ports.add(sport.port)
                if sport.protocol == "UNKNOWN":
                    targets = sniffed.setdefault(sport.port, [])
                    if service.cluster_ip:
                        cluster = outbound_cluster_name(sport.port, None, service.hostname)
                        targets.append((service.cluster_ip, cluster))
            elif service.cluster_ip:
                tcp = _tcp_listener(context, proxy, service, sport.port, sport.protocol)
                listeners.setdefault(tcp.name, tcp)
            elif service.from_service_entry:
                wildcard.setdefault(sport.port, []).append(service)
    for port, claimed in sorted(wildcard.items()):
        # An HTTP port's 0.0.0.0_<port> listener is the HTTP one (istiod lets it win too).
        if port not in http_ports:
            found = _wildcard_listener(context, proxy, port, tuple(claimed), fallback, side)
            listeners[found.name] = found
    for port in sorted(http_ports):
        if port in sniffed:
            vips = tuple(sorted(set(sniffed[port])))
            found = _message(
                context,
                (Family.SNIFFED_PORT_LISTENER, port, vips, fallback),
                partial(sniffing_port_listener, port, vips, fallback),
                side,
            )
        else:
            found = _message(
                context,
                (Family.HTTP_PORT_LISTENER, port),
                partial(http_port_listener, port),
                side,
            )
        listeners[found.name] = found


def _wildcard_listener(
    context: CompileContext,
    proxy: Proxy,
    port: int,
    services: tuple[MeshService, ...],
    fallback: str,
    side: SideTelemetry,
) -> CompiledResource:
    hosts = tuple(s.hostname for s in services)
    labels = context.source_labels(proxy)
    key: MemoKey = (
        Family.TCP_PORT_LISTENER,
        WILDCARD_ADDRESS,
        port,
        hosts,
        proxy.namespace,
        labels,
        fallback,
        side,
    )

    def build() -> CompiledResource:
        chains = wildcard_port_chains(context.reads, services, port, proxy, fallback)
        listener = with_telemetry(tcp_port_listener(WILDCARD_ADDRESS, port, chains), side)
        return CompiledResource(listener.name, listener)

    return context.memo.cached(key, build)


def _tcp_chains_key(
    context: CompileContext, proxy: Proxy, service: MeshService, port: int, protocol: str
) -> tuple[Hashable, ...]:
    labels = context.source_labels(proxy)
    scope = context.sidecar_scope(proxy)
    return (service.hostname, port, protocol, proxy.namespace, labels, scope)


def _tcp_listener(
    context: CompileContext, proxy: Proxy, service: MeshService, port: int, protocol: str
) -> CompiledResource:
    vip = service.cluster_ip
    assert vip is not None
    side = _client(context, proxy)
    key: MemoKey = (
        Family.TCP_PORT_LISTENER,
        vip,
        _tcp_chains_key(context, proxy, service, port, protocol),
        side,
    )

    def build() -> CompiledResource:
        scope = context.sidecar_scope(proxy)
        chains = outbound_tcp_chains(context.reads, service, port, protocol, proxy, scope)
        listener = with_telemetry(tcp_port_listener(vip, port, chains), side)
        return CompiledResource(listener.name, listener)

    return context.memo.cached(key, build)


# ---- inbound ----------------------------------------------------------------------------------


def _virtual_inbound(
    context: CompileContext, proxy: Proxy, ports: tuple[InboundPort, ...]
) -> CompiledResource:
    security = tuple(context.inbound_security(proxy, port) for port in ports)
    passthrough = context.inbound_security(proxy, None)
    side = _server(context, proxy)
    key: MemoKey = (Family.VIRTUAL_INBOUND, proxy.mode, ports, security, passthrough, side)

    def build() -> CompiledResource:
        listener = virtual_inbound_listener(
            proxy,
            [inbound_filter_chains(proxy, p, s) for p, s in zip(ports, security, strict=True)],
            passthrough,
        )
        listener = with_telemetry(listener, side)
        return CompiledResource(listener.name, listener)

    return context.memo.cached(key, build)


def _local_inbound(context: CompileContext, proxy: Proxy, port: InboundPort) -> CompiledResource:
    security = context.inbound_security(proxy, port)
    side = _server(context, proxy)
    key: MemoKey = (Family.LOCAL_INBOUND_LISTENER, proxy.mode, port, security, side)

    def build() -> CompiledResource:
        listener = local_inbound_listener(port, inbound_filter_chains(proxy, port, security))
        listener = with_telemetry(listener, side)
        return CompiledResource(listener.name, listener)

    return context.memo.cached(key, build)


# ---- local mode -------------------------------------------------------------------------------


def _local_listener(context: CompileContext, proxy: Proxy, port: int) -> CompiledResource:
    return _message(
        context,
        (Family.LOCAL_LISTENER, port),
        partial(local_outbound_listener, port),
        _client(context, proxy),
    )


def _local_tcp_listeners(context: CompileContext, proxy: Proxy) -> list[CompiledResource]:
    out: list[CompiledResource] = []
    if not proxy.local_tcp_ports:
        return out
    # Exported to the proxy's namespace and imported by its Sidecar (with this port).
    seen = {s.hostname: s for s in context.services_for(proxy)}
    scope = context.sidecar_scope(proxy)
    side = _client(context, proxy)
    for host, port, local_port in proxy.local_tcp_ports:
        service = seen.get(resolve_host(host, proxy.namespace))
        if service is None:
            continue
        sport = service.port(port)
        if sport is None:
            continue
        protocol = "TCP" if sport.is_http else sport.protocol
        if protocol == "TLS" and service.from_service_entry and not service.cluster_ip:
            out.append(_local_sni_listener(context, proxy, port, local_port))
            continue
        key: MemoKey = (
            Family.LOCAL_TCP_LISTENER,
            local_port,
            _tcp_chains_key(context, proxy, service, port, protocol),
            side,
        )

        def build(
            service: MeshService = service,
            port: int = port,
            protocol: str = protocol,
            local_port: int = local_port,
        ) -> CompiledResource:
            chains = outbound_tcp_chains(context.reads, service, port, protocol, proxy, scope)
            listener = with_telemetry(local_tcp_listener(local_port, chains), side)
            return CompiledResource(listener.name, listener)

        out.append(context.memo.cached(key, build))
    return out


def _local_sni_listener(
    context: CompileContext, proxy: Proxy, port: int, local_port: int
) -> CompiledResource:
    """Local mode, a TLS ServiceEntry host without an address: the local port routes by SNI
    over every such host of ``port``, as ``0.0.0.0_<port>`` does with interception; a name no host
    claims is refused."""
    services = tuple(
        s
        for s in context.visible_services(proxy.namespace)
        if s.from_service_entry
        and not s.cluster_ip
        and (p := s.port(port)) is not None
        and p.protocol == "TLS"
    )
    hosts = tuple(s.hostname for s in services)
    labels = context.source_labels(proxy)
    side = _client(context, proxy)
    key: MemoKey = (
        Family.LOCAL_TCP_LISTENER,
        local_port,
        port,
        hosts,
        proxy.namespace,
        labels,
        side,
    )

    def build() -> CompiledResource:
        chains = wildcard_port_chains(context.reads, services, port, proxy, BLACKHOLE_CLUSTER)
        listener = with_telemetry(local_tcp_listener(local_port, chains), side)
        return CompiledResource(listener.name, listener)

    return context.memo.cached(key, build)


LDS = Generator(
    types.LISTENER,
    frozenset(
        {
            "Service",
            "Pod",
            "EndpointSlice",
            "VirtualService",
            "DestinationRule",
            "PeerAuthentication",
            "AuthorizationPolicy",
            "RequestAuthentication",
            "JwksKeySet",
            "MeshConfig",  # CUSTOM's providers (compile/extauthz.py)
            "ServiceEntry",
            "WorkloadEntry",
            "Gateway",
            "Sidecar",
            "Telemetry",  # access logs and tracing (compile/telemetry.py)
        }
    ),
    generate,
)
