"""An immutable view of everything the mesh knows, with the indexes the compiler asks for.

A Snapshot is never mutated. Its indexes are computed on first use and then kept, so every
proxy compiled from the same snapshot shares them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from types import MappingProxyType
from typing import Any

from controlplane.api.issues import Issue, ResourceKey
from controlplane.api.kube import EndpointSlice, Namespace, Pod, Service
from controlplane.api.networking import DestinationRule, Subset, TrafficPolicy, VirtualService
from controlplane.store import dependencies as deps
from controlplane.store.registry import (
    DOMAIN_SUFFIX,
    MeshEndpoint,
    MeshService,
    endpoints_from_pods,
    endpoints_from_slices,
    mesh_service,
)

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


def created(resource: Any) -> tuple[datetime, str, str]:
    """Ordering used for precedence: oldest first, then namespace/name."""
    meta = resource.metadata
    ts = meta.creation_timestamp or _EPOCH
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts, meta.namespace, meta.name)


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


@dataclass(frozen=True, eq=False)
class Snapshot:
    version: int
    resources: Mapping[str, Mapping[ResourceKey, Any]]
    status: Mapping[ResourceKey, ResourceStatus] = field(default_factory=dict)
    origins: Mapping[ResourceKey, str] = field(default_factory=dict)
    # Records which accessors a compile build reads (see store/dependencies.py). Accessors
    # record a token; internal helpers use the untracked ``_kind`` so they record nothing.
    _tracker: deps.Tracker = field(
        default_factory=deps.Tracker, init=False, repr=False, compare=False
    )

    # ---- dependency recording -------------------------------------------------------------

    def start_recording(self, family: object = None, seeded: bool = True) -> deps.Recorder:
        """Begin recording what a build of ``family`` reads, nested in any recording already
        active (see store/dependencies.py for what the caller's reads contribute)."""
        return self._tracker.push(family, seeded)

    def reused(self, family: object, tokens: Iterable[deps.Token]) -> None:
        """A memoized build of ``family`` with dependencies ``tokens`` was reused."""
        self._tracker.consumed(family)
        self._tracker.read_all(tokens)

    def stop_recording(self, recorder: deps.Recorder) -> None:
        self._tracker.pop(recorder)

    def depends_on(self, tokens: Iterable[deps.Token]) -> None:
        """Count ``tokens`` (a nested build's) as read by every active recording."""
        self._tracker.read_all(tokens)

    def forget_reads(self) -> None:
        """Reads made outside any recording so far are no later build's dependency."""
        self._tracker.forget()

    def _kind(self, kind: str) -> Mapping[ResourceKey, Any]:
        return self.resources.get(kind, MappingProxyType({}))

    # ---- raw access ---------------------------------------------------------------------

    def of_kind(self, kind: str) -> Mapping[ResourceKey, Any]:
        self._tracker.read(deps.kind_token(kind))
        return self._kind(kind)

    def get(self, key: ResourceKey) -> Any | None:
        self._tracker.read(deps.key_token(key))
        return self._kind(key.kind).get(key)

    def rejected(self, kind: str) -> tuple[ResourceKey, ...]:
        """Resources of ``kind`` whose latest version was refused and that have no good
        version in effect: nothing of them reaches proxies (security fails closed on these)."""
        effective = self.of_kind(kind)
        found = (
            k
            for k, s in self.status.items()
            if k.kind == kind and not s.accepted and k not in effective
        )
        return tuple(sorted(found, key=str))

    # ---- services and endpoints -----------------------------------------------------------

    @property
    def services(self) -> Mapping[str, MeshService]:
        """hostname -> service."""
        self._tracker.read(deps.kind_token("Service"))
        return self._services

    @cached_property
    def _services(self) -> Mapping[str, MeshService]:
        out: dict[str, MeshService] = {}
        svc: Service
        for svc in self._kind("Service").values():
            ms = mesh_service(svc)
            out[ms.hostname] = ms
        return out

    @cached_property
    def _pods_by_namespace(self) -> Mapping[str, tuple[Pod, ...]]:
        out: dict[str, list[Pod]] = defaultdict(list)
        pod: Pod
        for pod in self._kind("Pod").values():
            out[pod.metadata.namespace].append(pod)
        return {ns: tuple(sorted(p, key=lambda x: x.metadata.name)) for ns, p in out.items()}

    def pods_in(self, namespace: str) -> tuple[Pod, ...]:
        self._tracker.read(deps.namespace_token("Pod", namespace))
        return self._pods_by_namespace.get(namespace, ())

    @cached_property
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
        index = self._pods_by_label
        return min(
            (index.get((service.namespace, k, v), ()) for k, v in service.selector.items()),
            key=len,
        )

    @cached_property
    def _slices_by_service(self) -> Mapping[tuple[str, str], tuple[EndpointSlice, ...]]:
        out: dict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
        eps: EndpointSlice
        for eps in self._kind("EndpointSlice").values():
            owner = eps.metadata.labels.get("kubernetes.io/service-name")
            if owner:
                out[(eps.metadata.namespace, owner)].append(eps)
        return {k: tuple(sorted(v, key=lambda s: s.metadata.name)) for k, v in out.items()}

    @cached_property
    def _endpoints(self) -> dict[str, tuple[MeshEndpoint, ...]]:
        return {}

    def endpoints(self, hostname: str) -> tuple[MeshEndpoint, ...]:
        """Every endpoint of every port of a service (computed once per snapshot)."""
        self._tracker.read(deps.endpoints_token(hostname))
        return self._endpoints_of(hostname)

    def _endpoints_of(self, hostname: str) -> tuple[MeshEndpoint, ...]:
        cache = self._endpoints
        found = cache.get(hostname)
        if found is None:
            service = self._services.get(hostname)
            if service is None:
                found = ()
            else:
                slices = self._slices_by_service.get((service.namespace, service.name))
                if slices:
                    in_namespace = self._pods_by_namespace.get(service.namespace, ())
                    pods = {p.metadata.name: p for p in in_namespace}
                    found = endpoints_from_slices(service, slices, pods)
                else:
                    found = endpoints_from_pods(service, self._pods_selected(service))
            cache[hostname] = found
        return found

    @cached_property
    def _targets_by_address(self) -> Mapping[str, tuple[tuple[MeshService, MeshEndpoint], ...]]:
        out: dict[str, list[tuple[MeshService, MeshEndpoint]]] = defaultdict(list)
        svc: Service
        for svc in sorted(self._kind("Service").values(), key=created):
            service = mesh_service(svc)
            for ep in self._endpoints_of(service.hostname):
                out[ep.address].append((service, ep))
        return {address: tuple(v) for address, v in out.items()}

    def service_targets(self, address: str) -> tuple[tuple[MeshService, MeshEndpoint], ...]:
        """The (service, endpoint) pairs served at ``address``: what a workload with that IP
        must accept inbound. Oldest Service first: it decides a port two Services share."""
        self._tracker.read(deps.targets_token(address), deps.targets_token(deps.ANY_ADDRESS))
        return self._targets_by_address.get(address, ())

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        key = ResourceKey("Namespace", "", namespace)
        self._tracker.read(deps.key_token(key))
        ns: Namespace | None = self._kind("Namespace").get(key)
        return ns.metadata.labels if ns else {}

    # ---- VirtualServices ------------------------------------------------------------------

    @cached_property
    def _virtual_services_by_host(self) -> Mapping[str, tuple[VirtualService, ...]]:
        out: dict[str, list[VirtualService]] = defaultdict(list)
        vs: VirtualService
        for vs in sorted(self._kind("VirtualService").values(), key=created):
            for host in vs.spec.hosts:
                out[resolve_host(host, vs.metadata.namespace)].append(vs)
        return {h: tuple(v) for h, v in out.items()}

    @cached_property
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
        self._tracker.read(
            deps.virtual_services_token(hostname), deps.virtual_services_token(deps.WILDCARD_HOST)
        )
        index = self._virtual_services_by_host
        exact = [vs for vs in index.get(hostname, ()) if self._vs_applies(vs, client_namespace)]
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
        self._tracker.read(deps.virtual_services_token(hostname))
        return tuple(
            vs for vs in self._virtual_services_by_host.get(hostname, ()) if _mesh_bound(vs)
        )

    @staticmethod
    def _vs_applies(vs: VirtualService, client_namespace: str) -> bool:
        if not _mesh_bound(vs):
            return False
        return exported_to(vs.spec.export_to, vs.metadata.namespace, client_namespace)

    # ---- DestinationRules -----------------------------------------------------------------

    @cached_property
    def _destination_rules_by_namespace(self) -> Mapping[str, tuple[DestinationRule, ...]]:
        out: dict[str, list[DestinationRule]] = defaultdict(list)
        dr: DestinationRule
        for dr in sorted(self._kind("DestinationRule").values(), key=created):
            out[dr.metadata.namespace].append(dr)
        return {ns: tuple(v) for ns, v in out.items()}

    @cached_property
    def _merged_rules(self) -> dict[tuple[str, str], MergedDestinationRule | None]:
        return {}

    def destination_rule(
        self, hostname: str, client_namespace: str
    ) -> MergedDestinationRule | None:
        """Istio's lookup: the client's namespace, then the service's, then the root namespace.

        The first namespace with a matching rule wins whole; within it the most specific host
        wins, and several rules for that host merge (subsets unioned, the first traffic
        policy kept).
        """
        self._tracker.read(
            deps.destination_rules_token(hostname),
            deps.destination_rules_token(deps.WILDCARD_HOST),
            deps.service_token(hostname),
        )
        cache = self._merged_rules
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

    def group(vs: VirtualService) -> int:
        export = vs.spec.export_to
        if "." in export and vs.metadata.namespace == client_namespace:
            return 0
        if client_namespace in export:
            return 1
        return 2

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
