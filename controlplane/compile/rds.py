"""RDS: the route configurations of one proxy.

Transparent mode: one configuration per HTTP service port (named ``"<port>"``, as the
``0.0.0.0_<port>`` listener asks for), with one virtual host per service and port. Local
mode: one configuration for the local outbound port, with a virtual host per HTTP port of
every visible service. Each virtual host is memoized apart from its configuration, so one
VirtualService change rebuilds one host, not all of them. Routes are built by ``routes.py``
and ``http_routes.py``.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.compile import resources as types
from controlplane.compile.context import CompileContext
from controlplane.compile.gateway import gateway_route_configuration, is_router
from controlplane.compile.generator import Built, Generator
from controlplane.compile.inbound import RESERVED_PORTS
from controlplane.compile.memo import Family, MemoKey
from controlplane.compile.naming import local_route_name
from controlplane.compile.outbound_policy import REGISTRY_ONLY, outbound_mode
from controlplane.compile.proxy import TRANSPARENT, Proxy
from controlplane.compile.resources import CompiledResource
from controlplane.compile.routes import (
    build_route_configuration,
    build_virtual_host,
    domains_for,
    port_route_configuration,
)
from controlplane.compile.scope import SidecarScope
from controlplane.compile.vhds import VirtualHostMap, on_demand_route_configuration
from controlplane.store.registry import MeshService


def generate(context: CompileContext, proxy: Proxy, built: Built) -> dict[str, CompiledResource]:
    """Every route configuration the listeners of ``proxy`` name (for an on-demand sidecar,
    without virtual hosts: those come over VHDS, ``vhds.py``)."""
    if is_router(proxy):
        return _gateway_routes(context, proxy)
    full = full_routes(context, proxy)
    if not proxy.on_demand:
        return full
    return {name: _on_demand_routes(context, name) for name in full}


def _on_demand_routes(context: CompileContext, name: str) -> CompiledResource:
    key: MemoKey = (Family.ON_DEMAND_ROUTES, name)
    return context.memo.cached(
        key, lambda: CompiledResource(name, on_demand_route_configuration(name))
    )


def generate_virtual_hosts(
    context: CompileContext, proxy: Proxy, built: Built
) -> VirtualHostMap | dict[str, CompiledResource]:
    """VHDS: the virtual hosts an on-demand sidecar may ask for (none for other proxies)."""
    if is_router(proxy) or not proxy.on_demand:
        return {}
    full = full_routes(context, proxy)
    # Not memoized itself: it wraps the memoized virtual hosts, and the cache compares two
    # maps by those (``cache/shapes.py``), so an unchanged map is carried over.
    return VirtualHostMap({name: found.message for name, found in full.items()})


def full_routes(context: CompileContext, proxy: Proxy) -> dict[str, CompiledResource]:
    """A sidecar's route configurations with every virtual host it may reach."""
    routes: dict[str, CompiledResource] = {}
    if proxy.mode == TRANSPARENT:
        for port in http_ports(context.services_for(proxy)):
            found = port_routes(context, proxy, port)
            routes[found.name] = found
    elif proxy.local_outbound_port:
        found = local_routes(context, proxy)
        routes[found.name] = found
    return routes


def _gateway_routes(context: CompileContext, proxy: Proxy) -> dict[str, CompiledResource]:
    """One route configuration per route name of the merged Gateways (``http.8080``)."""
    key: MemoKey = (Family.GATEWAY_ROUTES, *context.gateway_key(proxy))

    def build() -> dict[str, CompiledResource]:
        merged = context.merged_gateway(proxy)
        out: dict[str, CompiledResource] = {}
        for name, servers in merged.routes.items():
            config = gateway_route_configuration(context.reads, proxy, name, servers)
            out[name] = CompiledResource(name, config)
        return out

    return dict(context.memo.cached(key, build))


def http_ports(services: tuple[MeshService, ...]) -> list[int]:
    """The HTTP service ports a transparent proxy gets a listener and a route table for."""
    return sorted(
        {
            sport.port
            for service in services
            for sport in service.ports
            if sport.protocol != "UDP" and sport.port not in RESERVED_PORTS and sport.is_http
        }
    )


def port_routes(context: CompileContext, proxy: Proxy, port: int) -> CompiledResource:
    labels = context.source_labels(proxy)
    mode = outbound_mode(context.reads, proxy)
    scope = context.sidecar_scope(proxy)
    key: MemoKey = (Family.PORT_ROUTES, port, proxy.namespace, labels, mode, scope)

    def build() -> CompiledResource:
        services = context.scoped_services(scope)
        config = port_route_configuration(
            context.reads,
            services,
            port,
            proxy,
            lambda service, domains: _virtual_host(
                context, service, port, proxy, domains, labels, scope
            ),
            registry_only=mode == REGISTRY_ONLY,
        )
        return CompiledResource(config.name, config)

    return context.memo.cached(key, build)


def local_routes(context: CompileContext, proxy: Proxy) -> CompiledResource:
    port = proxy.local_outbound_port
    assert port is not None
    labels = context.source_labels(proxy)
    scope = context.sidecar_scope(proxy)
    key: MemoKey = (Family.LOCAL_ROUTES, port, proxy.namespace, labels, scope)

    def build() -> CompiledResource:
        hosts = []
        for service in context.scoped_services(scope):
            ports = [p for p in service.ports if p.is_http]
            for i, sport in enumerate(ports):
                domains = domains_for(service, sport.port, proxy.namespace, with_bare_names=i == 0)
                hosts.append(
                    _virtual_host(context, service, sport.port, proxy, domains, labels, scope)
                )
        config = build_route_configuration(local_route_name(port), hosts)
        return CompiledResource(config.name, config)

    return context.memo.cached(key, build)


def _virtual_host(
    context: CompileContext,
    service: MeshService,
    port: int,
    proxy: Proxy,
    domains: list[str],
    labels: tuple[tuple[str, str], ...],
    scope: SidecarScope,
) -> rc.VirtualHost:
    # One virtual host changes when one VirtualService does: memoized apart from the
    # route configuration so that a change rebuilds one host, not all of them.
    key: MemoKey = (
        Family.VIRTUAL_HOST,
        service.hostname,
        port,
        proxy.namespace,
        labels,
        tuple(domains),
        scope,
    )

    def build() -> rc.VirtualHost:
        return build_virtual_host(context.reads, service, port, proxy, domains, scope)

    return context.memo.cached(key, build)


RDS = Generator(
    types.ROUTE,
    frozenset(
        {
            "Service",
            "VirtualService",
            "DestinationRule",
            "ServiceEntry",
            "MeshConfig",
            "Gateway",
            "Pod",
            "EndpointSlice",
            "Sidecar",
        }
    ),
    generate,
)


VHDS = Generator(types.VIRTUAL_HOST, RDS.pushed_by, generate_virtual_hosts)
