"""How istiod merges the Gateways one gateway proxy gets (pilot/pkg/model/gateway.go
``mergeGateways``): servers by port into listeners, route configuration names, and the
servers it skips because they conflict with one merged before them.

Pure and shared: ``compile/gateway.py`` builds listeners and routes from the merge, and the
in-context checks (``store/gateway_checks.py``) report the servers it skips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controlplane.api.gateway import (
    Gateway,
    Server,
    is_http_server,
    is_passthrough,
    is_tls_server,
    sanitize_hosts,
    server_protocol,
)
from controlplane.api.issues import ResourceKey

WILDCARD_ADDRESS = "0.0.0.0"


@dataclass(frozen=True)
class GatewayServer:
    """One server of one Gateway, as merged onto a listener port."""

    gateway: str  # "ns/name", as VirtualServices name it
    key: ResourceKey
    index: int  # its place in spec.servers
    server: Server
    hosts: tuple[str, ...]  # ``./host`` and ``*/host`` resolved: ``ns/host`` or ``host``
    number: int  # the server's port number as written (VirtualService matches use it)
    port: int  # the listener port (the Service's target port where one declares ``number``)
    route_name: str  # "" for servers without HTTP routes (TCP, TLS passthrough)

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def bind(self) -> str:
        return self.server.bind or ""

    @property
    def protocol(self) -> str:
        assert self.server.port is not None
        return server_protocol(self.server.port)

    @property
    def path(self) -> str:
        return f"spec.servers[{self.index}]"


@dataclass(frozen=True)
class ListenerPort:
    """The servers sharing one listener (port and bind)."""

    port: int
    bind: str
    protocol: str
    servers: tuple[GatewayServer, ...]

    @property
    def name(self) -> str:
        return f"{self.bind or WILDCARD_ADDRESS}_{self.port}"


@dataclass(frozen=True)
class SkippedServer:
    """A server istiod would leave out (a conflict with a server merged before it)."""

    server: GatewayServer
    reason: str


@dataclass(frozen=True)
class MergedGateway:
    """Every Gateway a router proxy gets, merged as istiod merges them."""

    gateways: tuple[ResourceKey, ...]
    listeners: tuple[ListenerPort, ...]
    routes: Mapping[str, tuple[GatewayServer, ...]] = field(default_factory=dict)
    skipped: tuple[SkippedServer, ...] = ()


def merge_gateways(
    gateways: Sequence[Gateway], translation: Sequence[tuple[int, int]] = ()
) -> MergedGateway:
    """istiod's mergeGateways for legacy (label-selected) Gateways."""
    order: list[tuple[int, str]] = []
    by_listener: dict[tuple[int, str], list[GatewayServer]] = {}
    protocols: dict[tuple[int, str], str] = {}
    plaintext: dict[int, tuple[int, str]] = {}
    routes: dict[str, list[GatewayServer]] = {}
    tls_hosts: dict[int, dict[str, str]] = {}
    skipped: list[SkippedServer] = []
    keys: list[ResourceKey] = []
    for gw in gateways:
        meta = gw.metadata
        key = ResourceKey("Gateway", meta.namespace, meta.name)
        keys.append(key)
        for index, server in enumerate(gw.spec.servers):
            if server.port is None:
                continue
            number = server.port.number
            port = _translate(number, translation)
            entry = GatewayServer(
                gateway=f"{meta.namespace}/{meta.name}",
                key=key,
                index=index,
                server=server,
                hosts=sanitize_hosts(server.hosts, meta.namespace),
                number=number,
                port=port,
                route_name=route_name(server, port, meta.name, meta.namespace),
            )
            reason = _merge_one(entry, order, by_listener, protocols, plaintext, routes, tls_hosts)
            if reason:
                skipped.append(SkippedServer(entry, reason))
    listeners = tuple(
        ListenerPort(port, bind, protocols[(port, bind)], tuple(by_listener[(port, bind)]))
        for port, bind in order
    )
    return MergedGateway(
        tuple(keys), listeners, {k: tuple(v) for k, v in routes.items()}, tuple(skipped)
    )


def _translate(number: int, translation: Sequence[tuple[int, int]]) -> int:
    for service_port, target in translation:
        if service_port == number:
            return target
    return number


def _merge_one(
    entry: GatewayServer,
    order: list[tuple[int, str]],
    by_listener: dict[tuple[int, str], list[GatewayServer]],
    protocols: dict[tuple[int, str], str],
    plaintext: dict[int, tuple[int, str]],
    routes: dict[str, list[GatewayServer]],
    tls_hosts: dict[int, dict[str, str]],
) -> str:
    """Add one server; return why it was skipped ("" when merged)."""
    server, port, bind = entry.server, entry.port, entry.bind
    listener = (port, bind)
    if server.tls is not None:
        known = tls_hosts.setdefault(port, {})
        duplicates = [h for h in server.hosts if known.get(h) == bind]
        if duplicates:
            return f"duplicate host names on port {port}: {', '.join(duplicates)}"
        known.update({h: bind for h in server.hosts})
    http = is_http_server(server)
    if not any(p == port for p, _ in order):
        _add(entry, listener, order, by_listener, protocols, routes, http)
        if not is_tls_server(server):
            plaintext[port] = listener
        return ""
    current = plaintext.get(port)
    if current is not None:
        current_protocol = protocols[current]
        mergeable = http and (current_protocol in _HTTP or current_protocol == entry.protocol)
        if not mergeable and current[1] == bind:
            return (
                f"port {port} ({entry.protocol}) conflicts with the {current_protocol} server "
                "merged before it"
            )
        if not entry.route_name and current[1] == bind:
            return f"port {port}: a second {entry.protocol} server on a plain text port"
        if listener not in by_listener:
            _add(entry, listener, order, by_listener, protocols, routes, http)
        else:
            by_listener[listener].append(entry)
            if http:
                routes.setdefault(entry.route_name, []).append(entry)
        return ""
    if not is_tls_server(server):
        plaintext[port] = listener
        _add(entry, listener, order, by_listener, protocols, routes, http)
        return ""
    if http:
        if entry.route_name in routes:
            return f"port {port}: HTTPS port name {server.port.name!r} is not unique"  # type: ignore[union-attr]
        routes[entry.route_name] = [entry]
    if listener in by_listener:
        by_listener[listener].append(entry)
    else:
        order.append(listener)
        by_listener[listener] = [entry]
        protocols[listener] = entry.protocol
    return ""


_HTTP = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})


def _add(
    entry: GatewayServer,
    listener: tuple[int, str],
    order: list[tuple[int, str]],
    by_listener: dict[tuple[int, str], list[GatewayServer]],
    protocols: dict[tuple[int, str], str],
    routes: dict[str, list[GatewayServer]],
    http: bool,
) -> None:
    order.append(listener)
    by_listener[listener] = [entry]
    protocols[listener] = entry.protocol
    if http:
        routes[entry.route_name] = [entry]


def route_name(server: Server, port: int, name: str, namespace: str) -> str:
    """istiod's gatewayRDSRouteName: ``http.<port>`` (plain HTTP, the listener port),
    ``https.<number>.<port name>.<gateway>.<namespace>`` (terminated HTTPS), else ""."""
    assert server.port is not None
    bind = f".{server.bind}" if server.bind else ""
    protocol = server_protocol(server.port)
    if protocol in _HTTP:
        return f"http.{port}{bind}"
    if protocol == "HTTPS" and not is_passthrough(server):
        return f"https.{server.port.number}.{server.port.name}.{name}.{namespace}{bind}"
    return ""
