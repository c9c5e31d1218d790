"""RDS structure: route configurations and virtual hosts per service port, with Istio's
domains; the routes inside come from ``http_routes`` (a VirtualService) or a default route."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from controlplane.compile import http_routes
from controlplane.compile.guard import log_passed_over
from controlplane.compile.http_routes import route_action_defaults, routes_from_virtual_service
from controlplane.compile.naming import (
    ALLOW_ANY_VHOST,
    BLOCK_ALL_VHOST,
    PASSTHROUGH_CLUSTER,
    outbound_cluster_name,
    route_config_name,
    virtual_host_name,
)
from controlplane.compile.proxy import Proxy
from controlplane.compile.scope import SidecarScope
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import MeshService


def domains_for(
    service: MeshService,
    port: int,
    client_namespace: str,
    with_bare_names: bool,
    with_ports: bool = True,
) -> list[str]:
    """The Host/:authority values that reach ``service:port``, as Istio resolves them from the
    client's namespace: FQDN, ``name.ns.svc``, ``name.ns``, (same namespace) ``name`` and the
    VIP; each with ``:port`` unless not ``with_ports``, and without it when
    ``with_bare_names``."""
    names = [service.hostname]
    if not service.from_service_entry:
        # A ServiceEntry host is literal: it has no short forms (istiod adds them only to
        # hosts in the cluster's domain).
        names += [f"{service.name}.{service.namespace}.svc", f"{service.name}.{service.namespace}"]
        if client_namespace == service.namespace:
            names.append(service.name)
    if service.cluster_ip:
        names.append(service.cluster_ip)
    out: list[str] = []
    for name in names:
        if with_bare_names or not with_ports:
            out.append(name)
        if with_ports:
            out.append(f"{name}:{port}")
    return out


def build_virtual_host(
    snapshot: SnapshotReader,
    service: MeshService,
    port: int,
    proxy: Proxy,
    domains: list[str],
    scope: SidecarScope | None = None,
) -> rc.VirtualHost:
    # As istiod: a VirtualService that yields no route for this proxy and port (its matches
    # name other ports or source labels, or it has only tcp routes) is passed over, and a
    # service no VirtualService routes gets the default route. A VirtualService the proxy's
    # Sidecar does not import (none of its hosts) does not apply to it.
    routes: list[rc.Route] = []
    for vs in snapshot.virtual_services_for(service.hostname, proxy.namespace):
        if scope is not None and not scope.imports_virtual_service(vs):
            continue
        try:
            routes = routes_from_virtual_service(snapshot, vs, port, proxy)
        except Exception:  # noqa: BLE001 (one resource never stops a proxy's updates)
            # What the store's compile check (compile/check.py) could not see, e.g. a
            # failure for one proxy only: this VirtualService is passed over here.
            log_passed_over(vs, service.hostname, port, proxy)
            routes = []
        if routes:
            break
    if not routes:
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
    name: str, virtual_hosts: Iterable[rc.VirtualHost], ignore_port: bool = False
) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=list(virtual_hosts),
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        ignore_port_in_host_matching=ignore_port,
    )


def allow_any_virtual_host() -> rc.VirtualHost:
    """The fallback of an outbound route configuration (outbound traffic policy ALLOW_ANY):
    a Host no service claims goes on to its original destination."""
    action = route_action_defaults(rc.RouteAction(cluster=PASSTHROUGH_CLUSTER), None, None)
    action.ClearField("retry_policy")
    return rc.VirtualHost(
        name=ALLOW_ANY_VHOST,
        domains=["*"],
        routes=[rc.Route(name=ALLOW_ANY_VHOST, match=rc.RouteMatch(prefix="/"), route=action)],
        include_request_attempt_count=True,
    )


def block_all_virtual_host() -> rc.VirtualHost:
    """The fallback under REGISTRY_ONLY: a Host no service claims is refused with a 502, as
    istiod's ``block_all`` does."""
    return rc.VirtualHost(
        name=BLOCK_ALL_VHOST,
        domains=["*"],
        routes=[
            rc.Route(
                name=BLOCK_ALL_VHOST,
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(status=502),
            )
        ],
        include_request_attempt_count=True,
    )


def port_route_configuration(
    snapshot: SnapshotReader,
    services: Iterable[MeshService],
    port: int,
    proxy: Proxy,
    virtual_host: Callable[[MeshService, list[str]], rc.VirtualHost] | None = None,
    registry_only: bool = False,
) -> route_pb2.RouteConfiguration:
    """Transparent mode: RDS ``"9080"``, one virtual host per service with an HTTP port 9080,
    then ``allow_any`` (or ``block_all`` when ``registry_only``). As istiod does for sidecars, the domains carry no port and Envoy
    ignores the Host header's port when matching: every service in this table has this port,
    so ``reviews`` and ``reviews:9080`` reach the same virtual host.

    ``virtual_host`` builds one service's host from its domains (the compiler memoizes them,
    so that one VirtualService's change rebuilds one host)."""
    hosts = []
    for service in services:
        sport = service.port(port)
        if sport is None or not sport.is_http:
            continue
        domains = domains_for(
            service, port, proxy.namespace, with_bare_names=True, with_ports=False
        )
        if virtual_host is None:
            hosts.append(build_virtual_host(snapshot, service, port, proxy, domains))
        else:
            hosts.append(virtual_host(service, domains))
    hosts.append(block_all_virtual_host() if registry_only else allow_any_virtual_host())
    return build_route_configuration(route_config_name(port), hosts, ignore_port=True)
