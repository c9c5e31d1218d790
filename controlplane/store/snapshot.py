"""An immutable view of everything the mesh knows, with the indexes the compiler asks for.

A Snapshot is never mutated. Its indexes are computed on first use and then kept, so every
proxy compiled from the same snapshot shares them; each index declares the kinds it derives
from (``@index``), so a later snapshot takes over those a change left valid. The store builds
snapshots (``store/store.py``); readers that need to know what they read wrap one
(``store/reads.py``); ``store/dependencies.py`` says what a change between two touched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, overload

from controlplane.api.base import ObjectMeta
from controlplane.api.issues import Issue, ResourceKey
from controlplane.api.kube import EndpointSlice, Pod, Service
from controlplane.api.mesh import DEFAULT_MESH, MESH_CONFIG_KEY, MeshConfig, MeshConfigSpec
from controlplane.api.networking import DestinationRule, Subset, TrafficPolicy, VirtualService
from controlplane.api.policy_scope import RefusedPolicy
from controlplane.api.serviceentry import ServiceEntry, WorkloadEntry
from controlplane.store.gamma import is_gamma
from controlplane.store.registry import (
    DOMAIN_SUFFIX,
    MeshEndpoint,
    MeshService,
    endpoints_from_pods,
    endpoints_from_slices,
    mesh_service,
)
from controlplane.store.service_entries import (
    entry_endpoints,
    entry_services,
    selected_workload_entries,
)
from controlplane.store.tokens import (
    WILDCARD_HOST,
    ChangeTokens,
    Token,
    destination_rules_token,
    endpoints_token,
    service_token,
)

_T = TypeVar("_T")
_M = TypeVar("_M")
_NOTHING: Mapping[ResourceKey, Any] = MappingProxyType({})

ROOT_NAMESPACE = "istio-system"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def resolve_host(host: str, namespace: str) -> str:
    """Istio's short-name rule: a name without a dot is in the config's namespace."""
    if host == "*" or "." in host:
        return host
    return f"{host}.{namespace}.svc.{DOMAIN_SUFFIX}"


def host_matches(pattern: str, host: str) -> bool:
    """True when ``pattern`` (possibly ``*.suffix`` or ``*``) covers ``host``."""
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False


def exported_to(export_to: Iterable[str], owner_namespace: str, namespace: str) -> bool:
    entries = list(export_to)
    if not entries or "*" in entries:
        return True
    if "~" in entries:
        return False
    return namespace in entries or ("." in entries and namespace == owner_namespace)


class _HasMetadata(Protocol):
    @property
    def metadata(self) -> ObjectMeta: ...


def created(resource: _HasMetadata) -> tuple[datetime, str, str]:
    """Ordering used for precedence, as istiod sorts configs (pilot/pkg/model): oldest
    creation time first; a tie (Kubernetes keeps seconds) goes to the name, then the
    namespace. File mode's creation time is the time a resource was first seen."""
    meta = resource.metadata
    ts = meta.creation_timestamp or _EPOCH
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts, meta.name, meta.namespace)


@dataclass(frozen=True)
class MergedDestinationRule:
    """What applies to one host for one client namespace after Istio's lookup and merge."""

    host: str
    namespace: str
    traffic_policy: TrafficPolicy | None
    subsets: tuple[Subset, ...]
    sources: tuple[ResourceKey, ...]

    def subset(self, name: str) -> Subset | None:
        for s in self.subsets:
            if s.name == name:
                return s
        return None


@dataclass(frozen=True)
class ResourceStatus:
    """What the control plane made of one resource (read by logs, status writers, analyze)."""

    accepted: bool  # the latest version passed validation on its own
    reconciled: bool  # the latest version is what proxies are being configured with
    issues: tuple[Issue, ...] = ()
    generation: int | None = None
    origin: str | None = None
    # A refused security policy with no good version in effect: the workloads it would have
    # selected, for which it fails closed (compile/rbac.py, compile/authn.py).
    refused: RefusedPolicy | None = None


class _Index(cached_property[_T]):
    """A derived index of a Snapshot: computed on first use, then kept; ``kinds`` are the
    resource kinds it derives from, so a snapshot can take it over from a previous one
    when none of them changed."""

    def __init__(self, func: Callable[[Snapshot], _T], kinds: frozenset[str]) -> None:
        super().__init__(func)
        self.kinds = kinds

    def __set_name__(self, owner: type, name: str) -> None:
        super().__set_name__(owner, name)
        _INDEXES.append(self)

    def computed(self, snapshot: Snapshot) -> bool:
        return self.attrname in vars(snapshot)

    def take_over(self, snapshot: Snapshot, previous: Snapshot) -> None:
        """Give ``snapshot`` the index ``previous`` computed (a cached property stores its
        value in the instance; setting it there is how one is handed over)."""
        if self.computed(previous) and not self.computed(snapshot):
            assert self.attrname is not None
            vars(snapshot)[self.attrname] = vars(previous)[self.attrname]


class _Carried(Protocol):
    kinds: frozenset[str]

    def computed(self, snapshot: Snapshot) -> bool: ...

    def take_over(self, snapshot: Snapshot, previous: Snapshot) -> None: ...


# Every index of a Snapshot, registered where it is defined (by ``index``).
_INDEXES: list[_Carried] = []


def index(*kinds: str) -> Callable[[Callable[[Snapshot], _T]], _Index[_T]]:
    """Declare a Snapshot index derived from the resources of ``kinds``."""

    def declare(func: Callable[[Snapshot], _T]) -> _Index[_T]:
        return _Index(func, frozenset(kinds))

    return declare


class _Lookups:
    """Per-host answers a snapshot computes on demand (endpoints, merged DestinationRules).
    ``None``: none asked for yet. A dict may be shared with a snapshot of the same
    resources, so that what one looks up the other finds."""

    __slots__ = ("endpoints", "rules")

    def __init__(self) -> None:
        self.endpoints: dict[str, tuple[MeshEndpoint, ...]] | None = None
        self.rules: dict[tuple[str, str], MergedDestinationRule | None] | None = None


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything the mesh knows at one version: effective resources by kind, the status of
    each Istio resource, and where each came from.

    Contract: a Snapshot is never changed once built. Its indexes and lookups are caches of
    pure functions of ``resources``: computed on first use, kept, and handed to a later
    snapshot by the store or the compiler where the change between them left them valid
    (``take_over``, ``share_derived``). Reading records nothing; a reader that needs to know
    what it read wraps the snapshot (``store/reads.py``, ``compile/tracking.py``). Safe to
    read from several threads: a race at worst computes an index twice.
    """

    version: int
    resources: Mapping[str, Mapping[ResourceKey, Any]]
    status: Mapping[ResourceKey, ResourceStatus] = field(default_factory=dict)
    origins: Mapping[ResourceKey, str] = field(default_factory=dict)
    # What the change from the previous published snapshot touched (None: not known).
    change: ChangeTokens | None = None
    # part "gwapi": the status the Gateway API specification defines for each Gateway API
    # resource of this controller (store/gatewayapi.py); output only, never a change.
    gateway_api_status: Mapping[ResourceKey, Mapping[str, Any]] = field(default_factory=dict)
    _lookups: _Lookups = field(default_factory=_Lookups, init=False, repr=False, compare=False)

    # ---- handing derived state over ------------------------------------------------------

    def take_over(self, previous: Snapshot, changed_kinds: Iterable[str]) -> None:
        """Take ``previous``'s indexes that derive from none of ``changed_kinds``."""
        kinds = set(changed_kinds)
        for found in _INDEXES:
            if found.kinds.isdisjoint(kinds):
                found.take_over(self, previous)

    def take_over_lookups(self, previous: Snapshot, touched: frozenset[Token]) -> None:
        """Take ``previous``'s endpoint and DestinationRule lookups that the change between
        them (its ``touched`` tokens) left valid."""
        mine, theirs = self._lookups, previous._lookups
        if theirs.endpoints is not None and mine.endpoints is None:
            mine.endpoints = {
                host: found
                for host, found in list(theirs.endpoints.items())
                if endpoints_token(host) not in touched
            }
        if theirs.rules is not None and mine.rules is None:
            if destination_rules_token(WILDCARD_HOST) in touched:
                mine.rules = {}
            else:
                mine.rules = {
                    key: rule
                    for key, rule in list(theirs.rules.items())
                    if destination_rules_token(key[0]) not in touched
                    and service_token(key[0]) not in touched
                }

    def share_derived(self, same: Snapshot) -> None:
        """Take every index and lookup of ``same``, a snapshot of the same resources. The
        lookups are shared, not copied: what one looks up the other finds (the store's next
        probe then inherits what the compiler looked up in the published one)."""
        for found in _INDEXES:
            found.take_over(self, same)
        mine, theirs = self._lookups, same._lookups
        if theirs.endpoints is None:
            theirs.endpoints = {}
        if theirs.rules is None:
            theirs.rules = {}
        if mine.endpoints is None:
            mine.endpoints = theirs.endpoints
        if mine.rules is None:
            mine.rules = theirs.rules

    # ---- raw access ---------------------------------------------------------------------

    @overload
    def of_kind(self, kind: type[_M]) -> Mapping[ResourceKey, _M]: ...

    @overload
    def of_kind(self, kind: str) -> Mapping[ResourceKey, Any]: ...

    def of_kind(self, kind: type[object] | str) -> Mapping[ResourceKey, Any]:
        """The effective resources of one kind, by key (``kind``: the model class, typed,
        or the kind's name)."""
        name = kind if isinstance(kind, str) else kind.__name__
        return self.resources.get(name, _NOTHING)

    def get(self, key: ResourceKey) -> Any | None:
        return self.of_kind(key.kind).get(key)

    def in_namespace(self, kind: str, namespace: str) -> tuple[Any, ...]:
        """The effective resources of ``kind`` in ``namespace`` (for kinds with few resources:
        a scan)."""
        return tuple(r for k, r in self.of_kind(kind).items() if k.namespace == namespace)

    @property
    def mesh(self) -> MeshConfigSpec:
        """The mesh config in effect (its last good version), or Istio's defaults."""
        found: MeshConfig | None = self.of_kind(MeshConfig).get(MESH_CONFIG_KEY)
        return (found or DEFAULT_MESH).spec

    def rejected(self, kind: str) -> tuple[RefusedPolicy, ...]:
        """Resources of ``kind`` whose latest version was refused and that have no good
        version in effect, with the scope each would have had: nothing of them reaches
        proxies, and security fails closed for exactly that scope."""
        effective = self.of_kind(kind)
        found = (
            s.refused or RefusedPolicy(k)
            for k, s in self.status.items()
            if k.kind == kind and not s.accepted and k not in effective
        )
        return tuple(sorted(found, key=lambda r: str(r.key)))

    # ---- services and endpoints -----------------------------------------------------------

    @property
    def services(self) -> Mapping[str, MeshService]:
        """hostname -> service."""
        return self._services

    @index("Service", "ServiceEntry")
    def _services(self) -> Mapping[str, MeshService]:
        """Kubernetes Services, then the hosts of ServiceEntries that no Service (and no
        older entry) already defines: a colliding host is reported by analyze (CP0540)."""
        out: dict[str, MeshService] = {}
        for svc in self.of_kind(Service).values():
            ms = mesh_service(svc)
            out[ms.hostname] = ms
        for entry in sorted(self.of_kind(ServiceEntry).values(), key=created):
            for ms in entry_services(entry):
                out.setdefault(ms.hostname, ms)
        return out

    def service_entry_of(self, service: MeshService) -> ServiceEntry | None:
        """The ServiceEntry a registry host comes from (None: a Kubernetes Service)."""
        if service.source is None:
            return None
        found: ServiceEntry | None = self.of_kind(ServiceEntry).get(
            ResourceKey("ServiceEntry", *service.source)
        )
        return found

    @index("WorkloadEntry")
    def _workload_entries_by_namespace(self) -> Mapping[str, tuple[WorkloadEntry, ...]]:
        out: dict[str, list[WorkloadEntry]] = defaultdict(list)
        for we in self.of_kind(WorkloadEntry).values():
            out[we.metadata.namespace].append(we)
        return {ns: tuple(sorted(v, key=lambda w: w.metadata.name)) for ns, v in out.items()}

    @index("Service", "ServiceEntry")
    def _services_by_namespace(self) -> Mapping[str, tuple[MeshService, ...]]:
        grouped: dict[str, list[MeshService]] = defaultdict(list)
        for service in self._services.values():
            grouped[service.namespace].append(service)
        return {ns: tuple(v) for ns, v in grouped.items()}

    def services_in(self, namespace: str) -> tuple[MeshService, ...]:
        """The services of one namespace, in the order they were read."""
        return self._services_by_namespace.get(namespace, ())

    @index("Pod")
    def _pods_by_namespace(self) -> Mapping[str, tuple[Pod, ...]]:
        out: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.of_kind(Pod).values():
            out[pod.metadata.namespace].append(pod)
        return {ns: tuple(sorted(p, key=lambda x: x.metadata.name)) for ns, p in out.items()}

    @index("Pod")
    def _pods_by_label(self) -> Mapping[tuple[str, str, str], tuple[Pod, ...]]:
        out: dict[tuple[str, str, str], list[Pod]] = defaultdict(list)
        for namespace, pods in self._pods_by_namespace.items():
            for pod in pods:
                for label in pod.metadata.labels.items():
                    out[(namespace, *label)].append(pod)
        return {k: tuple(v) for k, v in out.items()}

    def _pods_selected(self, service: MeshService) -> tuple[Pod, ...]:
        """Candidates for a service's selector: the pods carrying its rarest label pair (the
        selector itself is applied by the registry), so a mesh of N services and M pods costs
        far less than N x M label comparisons."""
        if not service.selector:
            return ()
        found = self._pods_by_label
        return min(
            (found.get((service.namespace, k, v), ()) for k, v in service.selector.items()),
            key=len,
        )

    @index("EndpointSlice")
    def _slices_by_service(self) -> Mapping[tuple[str, str], tuple[EndpointSlice, ...]]:
        out: dict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
        for eps in self.of_kind(EndpointSlice).values():
            owner = eps.metadata.labels.get("kubernetes.io/service-name")
            if owner:
                out[(eps.metadata.namespace, owner)].append(eps)
        return {k: tuple(sorted(v, key=lambda s: s.metadata.name)) for k, v in out.items()}

    def slices_of(self, namespace: str, service_name: str) -> tuple[EndpointSlice, ...]:
        """The EndpointSlices a service owns (label ``kubernetes.io/service-name``)."""
        return self._slices_by_service.get((namespace, service_name), ())

    def slice_owners(self, namespace: str) -> Iterable[tuple[str, tuple[EndpointSlice, ...]]]:
        """(service name, its EndpointSlices) for every owner in ``namespace``."""
        for (ns, owner), slices in self._slices_by_service.items():
            if ns == namespace:
                yield owner, slices

    def endpoints(self, hostname: str) -> tuple[MeshEndpoint, ...]:
        """Every endpoint of every port of a service (computed once per snapshot)."""
        cache = self._lookups.endpoints
        if cache is None:
            cache = self._lookups.endpoints = {}
        found = cache.get(hostname)
        if found is None:
            service = self._services.get(hostname)
            entry = self.service_entry_of(service) if service is not None else None
            if service is None:
                found = ()
            elif entry is not None:
                found = entry_endpoints(
                    service,
                    entry,
                    self._pods_by_namespace.get(service.namespace, ()),
                    self._workload_entries_by_namespace.get(service.namespace, ()),
                )
            else:
                slices = self._slices_by_service.get((service.namespace, service.name))
                if slices:
                    in_namespace = self._pods_by_namespace.get(service.namespace, ())
                    pods = {p.metadata.name: p for p in in_namespace}
                    found = endpoints_from_slices(service, slices, pods)
                else:
                    found = endpoints_from_pods(service, self._pods_selected(service))
                workloads = self._workload_entries_by_namespace.get(service.namespace, ())
                if workloads:
                    found = tuple(
                        sorted(
                            found + selected_workload_entries(service, workloads),
                            key=lambda e: (e.service_port, e.address, e.port),
                        )
                    )
            cache[hostname] = found
        return found

    @index("Service", "Pod", "EndpointSlice", "ServiceEntry", "WorkloadEntry")
    def _targets_by_address(self) -> Mapping[str, tuple[tuple[MeshService, MeshEndpoint], ...]]:
        out: dict[str, list[tuple[MeshService, MeshEndpoint]]] = defaultdict(list)
        for svc in sorted(self.of_kind(Service).values(), key=created):
            service = mesh_service(svc)
            for ep in self.endpoints(service.hostname):
                out[ep.address].append((service, ep))
        # Hosts of ServiceEntries whose workloads are in the mesh (MESH_INTERNAL), after the
        # Services: a VM's sidecar accepts their ports too.
        for entry in sorted(self.of_kind(ServiceEntry).values(), key=created):
            for service in entry_services(entry):
                if service.mesh_external or self._services.get(service.hostname) != service:
                    continue
                for ep in self.endpoints(service.hostname):
                    out[ep.address].append((service, ep))
        return {address: tuple(v) for address, v in out.items()}

    def service_targets(self, address: str) -> tuple[tuple[MeshService, MeshEndpoint], ...]:
        """The (service, endpoint) pairs served at ``address``: what a workload with that IP
        must accept inbound. Oldest Service first: it decides a port two Services share."""
        return self._targets_by_address.get(address, ())

    # ---- VirtualServices ------------------------------------------------------------------

    @index("VirtualService")
    def _virtual_services_by_host(self) -> Mapping[str, tuple[VirtualService, ...]]:
        # The users' VirtualServices and those the store converts Gateway API routes into
        # (store/gatewayapi.py, store/gamma.py), as istiod keeps them: oldest first.
        out: dict[str, list[VirtualService]] = defaultdict(list)
        for vs in sorted(self.of_kind(VirtualService).values(), key=created):
            for host in vs.spec.hosts:
                out[resolve_host(host, vs.metadata.namespace)].append(vs)
        return {h: tuple(v) for h, v in out.items()}

    @index("VirtualService")
    def _wildcard_virtual_service_hosts(self) -> tuple[str, ...]:
        return tuple(h for h in self._virtual_services_by_host if h.startswith("*"))

    def virtual_services_for(
        self, hostname: str, client_namespace: str
    ) -> tuple[VirtualService, ...]:
        """Mesh-bound VirtualServices visible from ``client_namespace`` that cover ``hostname``,
        in istiod's order of preference; when several claim one host the first applies.

        As istiod indexes them for a sidecar: those private to the client's namespace
        (``exportTo: ["."]``) first, then those exported to it by name, then public ones;
        oldest first within each group. Exact host matches come before wildcard ones.
        """
        index = self._virtual_services_by_host
        exact = [
            vs
            for vs in index.get(hostname, ())
            if self._vs_applies(vs, client_namespace)
            and (not is_gamma(vs) or self._gamma_applies(vs, hostname, client_namespace))
        ]
        if exact:
            return _by_preference(exact, client_namespace)
        best: tuple[VirtualService, ...] = ()
        best_len = -1
        for pattern in self._wildcard_virtual_service_hosts:
            items = index[pattern]
            if host_matches(pattern, hostname) and len(pattern) > best_len:
                visible = [vs for vs in items if self._vs_applies(vs, client_namespace)]
                if visible:
                    best, best_len = _by_preference(visible, client_namespace), len(pattern)
        return best

    def virtual_services_claiming(self, hostname: str) -> tuple[VirtualService, ...]:
        """Every mesh-bound VirtualService whose hosts resolve to exactly ``hostname``,
        oldest first, whatever their exportTo (for conflict reports)."""
        return tuple(
            vs
            for vs in self._virtual_services_by_host.get(hostname, ())
            if _mesh_bound(vs) and not is_gamma(vs)
        )

    def _gamma_applies(self, vs: VirtualService, hostname: str, client_namespace: str) -> bool:
        """As istiod: a mesh route reaches a client only from the Service's own namespace
        (the producer's route) or from the client's namespace (the consumer's route)."""
        namespace = vs.metadata.namespace
        if namespace == client_namespace:
            return True
        service = self._services.get(hostname)
        return service is not None and service.namespace == namespace

    @staticmethod
    def _vs_applies(vs: VirtualService, client_namespace: str) -> bool:
        if not _mesh_bound(vs):
            return False
        return exported_to(vs.spec.export_to, vs.metadata.namespace, client_namespace)

    # ---- DestinationRules -----------------------------------------------------------------

    @index("DestinationRule")
    def _destination_rules_by_namespace(self) -> Mapping[str, tuple[DestinationRule, ...]]:
        out: dict[str, list[DestinationRule]] = defaultdict(list)
        for dr in sorted(self.of_kind(DestinationRule).values(), key=created):
            out[dr.metadata.namespace].append(dr)
        return {ns: tuple(v) for ns, v in out.items()}

    def destination_rule(
        self, hostname: str, client_namespace: str
    ) -> MergedDestinationRule | None:
        """Istio's lookup: the client's namespace, then the service's, then the root namespace.

        The first namespace with a matching rule wins whole; within it the most specific host
        wins, and several rules for that host merge (subsets unioned, the first traffic
        policy kept).
        """
        cache = self._lookups.rules
        if cache is None:
            cache = self._lookups.rules = {}
        key = (hostname, client_namespace)
        if key in cache:
            return cache[key]
        service = self._services.get(hostname)
        order = [client_namespace]
        if service is not None and service.namespace not in order:
            order.append(service.namespace)
        if ROOT_NAMESPACE not in order:
            order.append(ROOT_NAMESPACE)
        result = None
        for namespace in order:
            result = self._rule_in_namespace(hostname, namespace, client_namespace)
            if result is not None:
                break
        cache[key] = result
        return result

    def _rule_in_namespace(
        self, hostname: str, namespace: str, client_namespace: str
    ) -> MergedDestinationRule | None:
        best_host: str | None = None
        matches: list[DestinationRule] = []
        for dr in self._destination_rules_by_namespace.get(namespace, ()):
            if dr.spec.workload_selector is not None:
                continue  # workload-scoped rules apply to the selected workloads only
            # A rule is always visible in its own namespace (istiod keeps every rule of a
            # namespace in that namespace's local index); elsewhere only where exported.
            if namespace != client_namespace and not exported_to(
                dr.spec.export_to, dr.metadata.namespace, client_namespace
            ):
                continue
            host = resolve_host(dr.spec.host, dr.metadata.namespace)
            if not host_matches(host, hostname):
                continue
            if best_host is None or _more_specific(host, best_host):
                best_host, matches = host, [dr]
            elif host == best_host:
                matches.append(dr)
        if not matches or best_host is None:
            return None
        subsets: list[Subset] = []
        names: set[str] = set()
        policy: TrafficPolicy | None = None
        for dr in matches:
            if policy is None and dr.spec.traffic_policy is not None:
                policy = dr.spec.traffic_policy
            for subset in dr.spec.subsets:
                if subset.name not in names:
                    names.add(subset.name)
                    subsets.append(subset)
        return MergedDestinationRule(
            host=best_host,
            namespace=namespace,
            traffic_policy=policy,
            subsets=tuple(subsets),
            sources=tuple(
                ResourceKey("DestinationRule", d.metadata.namespace, d.metadata.name)
                for d in matches
            ),
        )


def _by_preference(
    virtual_services: list[VirtualService], client_namespace: str
) -> tuple[VirtualService, ...]:
    """Stable sort (the input is oldest first) into istiod's groups for one client namespace:
    private to it, exported to it by name, public."""

    def group(vs: VirtualService) -> tuple[int, int]:
        # Within each group, a Gateway API mesh route of the client's own namespace comes
        # first (istiod's "consumer override", pilot/pkg/model/virtualservice.go).
        consumer = 0 if is_gamma(vs) and vs.metadata.namespace == client_namespace else 1
        export = vs.spec.export_to
        if "." in export and vs.metadata.namespace == client_namespace:
            return (0, consumer)
        if client_namespace in export:
            return (1, consumer)
        return (2, consumer)

    return tuple(sorted(virtual_services, key=group))


def visible_namespaces(export_to: Iterable[str], owner_namespace: str) -> frozenset[str] | None:
    """The namespaces an exportTo list reaches (None: every namespace)."""
    entries = list(export_to)
    if not entries or "*" in entries:
        return None
    return frozenset(owner_namespace if e == "." else e for e in entries if e != "~")


def _mesh_bound(vs: VirtualService) -> bool:
    """Sidecars get a VirtualService only if it names no gateways or names ``mesh``."""
    gateways = vs.spec.gateways
    return not gateways or "mesh" in gateways


def _more_specific(a: str, b: str) -> bool:
    """Exact beats wildcard; a longer wildcard beats a shorter one."""
    a_wild, b_wild = a.startswith("*"), b.startswith("*")
    if a_wild != b_wild:
        return not a_wild
    return len(a) > len(b)
