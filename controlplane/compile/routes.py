"""RDS structure: route configurations and virtual hosts per service port, with Istio's
domains; the routes inside come from ``http_routes`` (a VirtualService) or a default route."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from controlplane.compile import http_routes
from controlplane.compile.http_routes import route_action_defaults, routes_from_virtual_service
from controlplane.compile.naming import outbound_cluster_name, virtual_host_name
from controlplane.compile.proxy import Proxy
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import Snapshot


def domains_for(
    service: MeshService, port: int, client_namespace: str, with_bare_names: bool
) -> list[str]:
    """The Host/:authority values that reach ``service:port``, as Istio resolves them from the
    client's namespace: FQDN, ``name.ns.svc``, ``name.ns`` and (same namespace) ``name``,
    each with ``:port``, and without it when ``with_bare_names``."""
    names = [
        service.hostname,
        f"{service.name}.{service.namespace}.svc",
        f"{service.name}.{service.namespace}",
    ]
    if client_namespace == service.namespace:
        names.append(service.name)
    if service.cluster_ip:
        names.append(service.cluster_ip)
    out: list[str] = []
    for name in names:
        if with_bare_names:
            out.append(name)
        out.append(f"{name}:{port}")
    return out


def build_virtual_host(
    snapshot: Snapshot, service: MeshService, port: int, proxy: Proxy, domains: list[str]
) -> rc.VirtualHost:
    virtual_services = snapshot.virtual_services_for(service.hostname, proxy.namespace)
    if virtual_services:
        routes = routes_from_virtual_service(snapshot, virtual_services[0], port, proxy)
    else:
        hash_lb = http_routes.default_hash_policy(snapshot, service.hostname, port, proxy.namespace)
        routes = [default_route(service.hostname, port, hash_lb)]
    return rc.VirtualHost(
        name=virtual_host_name(service.hostname, port), domains=domains, routes=routes
    )


def default_route(
    hostname: str, port: int, hash_lb: rc.RouteAction.HashPolicy | None = None
) -> rc.Route:
    """What a service without a VirtualService gets: everything to its port's cluster (with
    the DestinationRule's consistent-hash policy, if it has one). As in istiod, this default
    route keeps the default retry policy whole, previous-hosts predicate included."""
    action = rc.RouteAction(cluster=outbound_cluster_name(port, None, hostname))
    if hash_lb is not None:
        action.hash_policy.append(hash_lb)
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=route_action_defaults(action, None, None),
    )


def build_route_configuration(
    name: str, virtual_hosts: Iterable[rc.VirtualHost]
) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=list(virtual_hosts),
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )
