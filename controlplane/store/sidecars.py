"""The scope a Sidecar resource gives a proxy (pure: read by the compiler and the store's
in-context checks; ``compile/scope.py`` applies it to a Proxy): which services (and ports) it may reach, and
which VirtualServices apply to it.

As istiod (pilot/pkg/model/sidecar.go, push_context.go ``getSidecarScope``): for a proxy in
namespace N, the Sidecar in effect is the oldest one in N whose ``workloadSelector`` labels
the proxy carries; else the oldest one in N without a selector (the namespace default); else
the oldest one without a selector in the mesh's root namespace (``rootNamespace``, the mesh
default), read with N as its namespace (so ``./*`` means the proxy's own namespace). No Sidecar
at all: everything exported to N.

Egress hosts are ``namespace/dnsName``: namespace ``*``, ``.`` or a name, dnsName ``*``,
``*.suffix`` or an FQDN; a ``~`` before the namespace excludes what it matches (``~/*``
imports nothing). An egress listener with a port imports only that port of its services.
Services a selected VirtualService routes to are imported too (for their clusters), as istiod
infers them. A Sidecar without egress listeners imports ``*/*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from controlplane.api.issues import ResourceKey
from controlplane.api.mesh import DEFAULT_MESH, MESH_CONFIG_KEY
from controlplane.api.networking import Destination, VirtualService
from controlplane.api.resources import key_of
from controlplane.api.sidecar import Sidecar
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import created, exported_to, resolve_host

WILDCARD = "*"


def root_namespace(snapshot: SnapshotReader) -> str:
    """The mesh config's ``rootNamespace`` (read through ``snapshot``, so it is tracked)."""
    found = snapshot.get(MESH_CONFIG_KEY)
    return (found or DEFAULT_MESH).spec.root_namespace


def select_sidecar(
    sidecars: Iterable[Sidecar], namespace: str, labels: Mapping[str, str], root: str
) -> Sidecar | None:
    """The Sidecar in effect for a workload in ``namespace`` with ``labels`` (istiod's
    precedence, see the module docstring), or None."""
    ordered = sorted(sidecars, key=created)
    own = [s for s in ordered if s.metadata.namespace == namespace]
    for sidecar in own:
        selector = sidecar.spec.workload_selector
        if selector is not None and all(labels.get(k) == v for k, v in selector.labels.items()):
            return sidecar
    for sidecar in own:
        if sidecar.spec.workload_selector is None:
            return sidecar
    for sidecar in ordered:
        if sidecar.metadata.namespace == root and sidecar.spec.workload_selector is None:
            return sidecar
    return None


# ---- the scope ------------------------------------------------------------------------------


def _host_covers(pattern: str, host: str) -> bool:
    """``host`` (possibly a wildcard itself) is within ``pattern`` (istiod's SubsetOf)."""
    if pattern == WILDCARD or pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return False


def _hosts_match(a: str, b: str) -> bool:
    """Either host covers the other (istiod's bidirectional Matches, used for VS hosts)."""
    return _host_covers(a, b) or _host_covers(b, a)


@dataclass(frozen=True)
class HostImport:
    namespace: str  # "*" or a namespace ("." already resolved)
    host: str  # "*", "*.suffix" or an FQDN
    excluded: bool = False


@dataclass(frozen=True)
class EgressImport:
    """One egress listener: the hosts it imports, on ``port`` only when set."""

    port: int | None
    hosts: tuple[HostImport, ...]

    def _excluded(self, namespace: str, host: str) -> bool:
        return any(
            h.excluded and h.namespace in (namespace, WILDCARD) and _host_covers(h.host, host)
            for h in self.hosts
        )

    def imports_service(self, service: MeshService) -> bool:
        if self._excluded(service.namespace, service.hostname):
            return False
        return any(
            not h.excluded
            and h.namespace in (service.namespace, WILDCARD)
            and _host_covers(h.host, service.hostname)
            for h in self.hosts
        )

    def imports_virtual_service(self, vs: VirtualService) -> bool:
        namespace = vs.metadata.namespace
        for raw in vs.spec.hosts:
            host = resolve_host(raw, namespace)
            if self._excluded(namespace, host):
                continue
            if any(
                not h.excluded
                and h.namespace in (namespace, WILDCARD)
                and _hosts_match(h.host, host)
                for h in self.hosts
            ):
                return True
        return False


@dataclass(frozen=True)
class SidecarScope:
    """What a proxy in ``namespace`` may reach. ``sidecar`` None: no Sidecar applies and the
    proxy sees everything exported to its namespace. Hashable: compiled resources that depend
    on the scope are memoized under it, so proxies of one scope share them and proxies of
    different scopes never do."""

    namespace: str
    sidecar: ResourceKey | None = None
    egress: tuple[EgressImport, ...] = ()

    @property
    def scoped(self) -> bool:
        return self.sidecar is not None

    def imports_virtual_service(self, vs: VirtualService) -> bool:
        return not self.scoped or any(e.imports_virtual_service(vs) for e in self.egress)


def scope_of(sidecar: Sidecar | None, namespace: str) -> SidecarScope:
    """The scope ``sidecar`` gives a proxy in ``namespace`` (its config namespace)."""
    if sidecar is None:
        return SidecarScope(namespace)
    listeners = sidecar.spec.egress
    egress = []
    if not listeners:
        egress.append(EgressImport(None, (HostImport(WILDCARD, WILDCARD),)))
    for listener in listeners:
        hosts = []
        for entry in listener.hosts:
            ns, slash, host = entry.partition("/")
            if not slash:
                continue  # refused by validation; istiod skips it too
            excluded = ns.startswith("~")
            ns = ns.removeprefix("~") or WILDCARD
            if ns == ".":
                ns = namespace
            hosts.append(HostImport(ns, host, excluded))
        port = listener.port.number if listener.port is not None and listener.port.number else None
        egress.append(EgressImport(port, tuple(hosts)))
    return SidecarScope(namespace, key_of(sidecar), tuple(egress))


def scoped_services(
    snapshot: SnapshotReader, scope: SidecarScope, visible: tuple[MeshService, ...]
) -> tuple[MeshService, ...]:
    """The services (with only the ports imported) of ``visible`` that ``scope`` imports,
    explicitly or as destinations of the VirtualServices it selects; by hostname."""
    if not scope.scoped:
        return visible
    by_host = {s.hostname: s for s in visible}
    ports: dict[str, set[int]] = {}

    def add(service: MeshService, only: int | None) -> None:
        found = ports.setdefault(service.hostname, set())
        found.update(p.port for p in service.ports if only is None or p.port == only)

    for listener in scope.egress:
        for service in visible:
            if listener.imports_service(service):
                add(service, listener.port)
        for vs in _selected_virtual_services(snapshot, scope, listener):
            for destination in _destinations(vs):
                target = by_host.get(resolve_host(destination.host, vs.metadata.namespace))
                if target is None:
                    continue
                number = destination.port.number if destination.port else None
                add(target, listener.port if listener.port is not None else number)
    out = []
    for host in sorted(ports):
        service = by_host[host]
        kept = tuple(p for p in service.ports if p.port in ports[host])
        if not kept:
            continue
        out.append(service if len(kept) == len(service.ports) else replace(service, ports=kept))
    return tuple(out)


def _selected_virtual_services(
    snapshot: SnapshotReader, scope: SidecarScope, listener: EgressImport
) -> list[VirtualService]:
    return [
        vs
        for vs in sorted(snapshot.of_kind(VirtualService).values(), key=created)
        if _mesh_visible(vs, scope.namespace) and listener.imports_virtual_service(vs)
    ]


def _mesh_visible(vs: VirtualService, namespace: str) -> bool:
    gateways = vs.spec.gateways
    if gateways and "mesh" not in gateways:
        return False
    return exported_to(vs.spec.export_to, vs.metadata.namespace, namespace)


def _destinations(vs: VirtualService) -> list[Destination]:
    out: list[Destination] = []
    for http in vs.spec.http:
        out += [r.destination for r in http.route]
        if http.mirror is not None:
            out.append(http.mirror)
        out += [m.destination for m in http.mirrors]
    for section in (vs.spec.tcp, vs.spec.tls):
        for route in section:
            out += [r.destination for r in route.route]
    return out
