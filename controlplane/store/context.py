"""Checks that need the rest of the mesh: a resource valid alone but broken in context."""

from __future__ import annotations

from typing import Any

from controlplane.api.issues import Codes, Issue, Level, ResourceKey
from controlplane.api.kube import Pod
from controlplane.api.networking import Destination, DestinationRule, VirtualService
from controlplane.api.sidecar import Sidecar
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import selects
from controlplane.store.sidecars import root_namespace, scope_of
from controlplane.store.snapshot import (
    created,
    exported_to,
    resolve_host,
    visible_namespaces,
)

# Findings that are errors for `analyze` but must not hold a version back: a VirtualService
# that loses a host to an older one still applies to its other hosts, as in istiod.
_NOT_BLOCKING = frozenset(
    {
        Codes.CONFLICTING_VIRTUAL_SERVICES.id,
        # Sidecars that compete for a workload: istiod applies the oldest, as we do.
        Codes.CONFLICTING_SIDECAR_SELECTORS.id,
        Codes.MULTIPLE_SIDECARS_WITHOUT_SELECTOR.id,
    }
)


def check_virtual_service(snapshot: SnapshotReader, vs: VirtualService) -> list[Issue]:
    """Destinations that point at a subset or port that does not exist, or an unknown host;
    hosts an older mesh-bound VirtualService already claims."""
    key = ResourceKey("VirtualService", vs.metadata.namespace, vs.metadata.name)
    found: list[Issue] = []
    for path, dest in _destinations(vs):
        found += _check_destination(snapshot, vs.metadata.namespace, path, dest)
    found += _check_conflicts(snapshot, vs)
    found += _check_ineffective_matches(vs)
    return [i.with_context(key, None) for i in found]


def _check_ineffective_matches(vs: VirtualService) -> list[Issue]:
    """Routes are tried in order and the first match wins, so a route after a catch-all, or a
    match identical to an earlier one, can never be chosen (istioctl's IST0131)."""
    found: list[Issue] = []
    sections: list[tuple[str, list[Any]]] = [
        ("http", list(vs.spec.http)),
        ("tcp", list(vs.spec.tcp)),
        ("tls", list(vs.spec.tls)),
    ]
    for section, routes in sections:
        seen: dict[str, str] = {}
        catch_all: str | None = None
        for i, route in enumerate(routes):
            matches: list[Any] = list(route.match) or [None]
            for j, match in enumerate(matches):
                path = f"spec.{section}[{i}]" + (f".match[{j}]" if match is not None else "")
                if catch_all is not None:
                    found.append(
                        Issue(
                            Codes.INEFFECTIVE_MATCH,
                            path,
                            f"never used: {catch_all} before it matches every request",
                        )
                    )
                    continue
                fingerprint = _match_fingerprint(match)
                if fingerprint in seen:
                    found.append(
                        Issue(
                            Codes.INEFFECTIVE_MATCH,
                            path,
                            f"never used: {seen[fingerprint]} has the same match",
                        )
                    )
                    continue
                seen[fingerprint] = path
                if _matches_everything(section, match):
                    catch_all = path
    return found


def _match_fingerprint(match: Any) -> str:
    if match is None:
        return ""
    return repr(sorted(match.model_dump(exclude={"name"}, exclude_defaults=True).items()))


def _matches_everything(section: str, match: Any) -> bool:
    if match is None:
        return True
    fields = match.model_dump(exclude={"name"}, exclude_defaults=True)
    if section == "http":
        uri = fields.pop("uri", None)
        if uri not in (None, {"prefix": "/"}, {"regex": ".*"}):
            return False
    return not fields


def _check_conflicts(snapshot: SnapshotReader, vs: VirtualService) -> list[Issue]:
    """istiod applies one VirtualService per host to sidecars: the oldest. A newer one that
    claims the same host is reported (istioctl's IST0109) and ignored for that host."""
    gateways = vs.spec.gateways
    if gateways and "mesh" not in gateways:
        return []
    found: list[Issue] = []
    mine = created(vs)
    for i, host in enumerate(vs.spec.hosts):
        hostname = resolve_host(host, vs.metadata.namespace)
        older = [
            other
            for other in snapshot.virtual_services_claiming(hostname)
            if created(other) < mine
            and (other.metadata.namespace, other.metadata.name)
            != (vs.metadata.namespace, vs.metadata.name)
            and _seen_together(vs, other)
        ]
        if older:
            first = older[0].metadata
            found.append(
                Issue(
                    Codes.CONFLICTING_VIRTUAL_SERVICES,
                    f"spec.hosts[{i}]",
                    f"host {hostname} is also claimed by the older VirtualService "
                    f"{first.namespace}/{first.name} (created {_when(older[0])}; "
                    f"{vs.metadata.namespace}/{vs.metadata.name} was created {_when(vs)}); "
                    "a client that sees both gets only one (one private to its namespace "
                    f"first, else the oldest: {first.namespace}/{first.name})",
                )
            )
    return found


def _when(vs: VirtualService) -> str:
    ts = vs.metadata.creation_timestamp
    if ts is None:
        return "at an unknown time"
    return ts.isoformat(timespec="seconds").replace("+00:00", "Z")


def _seen_together(a: VirtualService, b: VirtualService) -> bool:
    """Whether some namespace sees both (only then can they compete for a client)."""
    reach_a = visible_namespaces(a.spec.export_to, a.metadata.namespace)
    reach_b = visible_namespaces(b.spec.export_to, b.metadata.namespace)
    if reach_a is None or reach_b is None:
        return (reach_a or reach_b) != frozenset()
    return bool(reach_a & reach_b)


def check_destination_rule(snapshot: SnapshotReader, dr: DestinationRule) -> list[Issue]:
    """Subsets whose labels select none of the host's endpoints (requests to them get 503)."""
    key = ResourceKey("DestinationRule", dr.metadata.namespace, dr.metadata.name)
    hostname = resolve_host(dr.spec.host, dr.metadata.namespace)
    if hostname not in snapshot.services:
        return []  # wildcard or external host: nothing to compare against
    endpoints = snapshot.endpoints(hostname)
    found: list[Issue] = []
    for i, subset in enumerate(dr.spec.subsets):
        if not any(selects(subset.labels, ep.labels) for ep in endpoints):
            labels = ",".join(f"{k}={v}" for k, v in sorted(subset.labels.items())) or "(none)"
            found.append(
                Issue(
                    Codes.DESTINATION_RULE_NO_PODS,
                    f"spec.subsets[{i}].labels",
                    f"subset {subset.name!r} ({labels}) selects no pod of {hostname}",
                )
            )
    return [i.with_context(key, None) for i in found]


def _destinations(vs: VirtualService) -> list[tuple[str, Destination]]:
    out: list[tuple[str, Destination]] = []
    for i, http in enumerate(vs.spec.http):
        for j, route in enumerate(http.route):
            out.append((f"spec.http[{i}].route[{j}].destination", route.destination))
        if http.mirror is not None:
            out.append((f"spec.http[{i}].mirror", http.mirror))
        for j, mirror in enumerate(http.mirrors):
            out.append((f"spec.http[{i}].mirrors[{j}].destination", mirror.destination))
    l4_sections: list[tuple[str, list[Any]]] = [
        ("tcp", list(vs.spec.tcp)),
        ("tls", list(vs.spec.tls)),
    ]
    for proto, routes in l4_sections:
        for i, l4 in enumerate(routes):
            for j, route in enumerate(l4.route):
                out.append((f"spec.{proto}[{i}].route[{j}].destination", route.destination))
    return out


def _check_destination(
    snapshot: SnapshotReader, namespace: str, path: str, dest: Destination
) -> list[Issue]:
    host = resolve_host(dest.host, namespace)
    service = snapshot.services.get(host)
    found: list[Issue] = []
    if service is None:
        found.append(
            Issue(Codes.HOST_NOT_FOUND, f"{path}.host", f"no service in the mesh is named {host!r}")
        )
    elif not exported_to(service.export_to, service.namespace, namespace):
        # Clients in this namespace get no cluster for it: requests would get 503.
        found.append(
            Issue(
                Codes.HOST_NOT_FOUND,
                f"{path}.host",
                f"service {host} is not exported to namespace {namespace!r} "
                "(its networking.istio.io/exportTo annotation)",
            )
        )
    elif (
        dest.port is not None
        and dest.port.number is not None
        and service.port(dest.port.number) is None
    ):
        have = ", ".join(str(p.port) for p in service.ports) or "none"
        found.append(
            Issue(
                Codes.PORT_NOT_FOUND,
                f"{path}.port.number",
                f"service {host} has no port {dest.port.number} (ports: {have})",
            )
        )
    if dest.subset:
        rule = snapshot.destination_rule(host, namespace)
        if rule is None or rule.subset(dest.subset) is None:
            where = (
                "no DestinationRule"
                if rule is None
                else f"DestinationRule {rule.sources[0].namespace}/{rule.sources[0].name}"
            )
            found.append(
                Issue(
                    Codes.SUBSET_NOT_FOUND,
                    f"{path}.subset",
                    f"subset {dest.subset!r} of host {host} is not defined ({where} defines it)",
                )
            )
    return found


# ---- Sidecar ---------------------------------------------------------------------------------

# The in-context findings about Sidecars (part "sidecar", codes CP056x): reported by the store
# like the CP03xx ones.
SIDECAR_CONTEXT_CODES = frozenset(
    {
        Codes.SIDECAR_HIDES_ROUTED_HOST,
        Codes.CONFLICTING_SIDECAR_SELECTORS,
        Codes.MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
    }
)


def check_sidecar(snapshot: SnapshotReader, sidecar: Sidecar) -> list[Issue]:
    """A Sidecar that hides the hosts of a VirtualService of its own namespace (its workloads
    do not get those routes), and Sidecars that compete for the same workloads (istioctl's
    IST0110 and IST0111: istiod applies the oldest)."""
    key = ResourceKey("Sidecar", sidecar.metadata.namespace, sidecar.metadata.name)
    found = _check_hidden_virtual_services(snapshot, sidecar)
    found += _check_competing_sidecars(snapshot, sidecar)
    return [i.with_context(key, None) for i in found]


def _check_hidden_virtual_services(snapshot: SnapshotReader, sidecar: Sidecar) -> list[Issue]:
    namespace = sidecar.metadata.namespace
    scope = scope_of(sidecar, namespace)
    found: list[Issue] = []
    for vs in sorted(snapshot.of_kind(VirtualService).values(), key=created):
        gateways = vs.spec.gateways
        if vs.metadata.namespace != namespace or (gateways and "mesh" not in gateways):
            continue
        if not vs.spec.hosts or scope.imports_virtual_service(vs):
            continue
        hosts = ", ".join(resolve_host(h, namespace) for h in vs.spec.hosts)
        found.append(
            Issue(
                Codes.SIDECAR_HIDES_ROUTED_HOST,
                "spec.egress",
                f"hides {hosts}, which VirtualService {namespace}/{vs.metadata.name} routes: "
                "the workloads this Sidecar applies to do not get those routes (import the "
                f"host, e.g. './{resolve_host(vs.spec.hosts[0], namespace)}')",
            )
        )
    return found


def _check_competing_sidecars(snapshot: SnapshotReader, sidecar: Sidecar) -> list[Issue]:
    namespace = sidecar.metadata.namespace
    peers = sorted(
        (s for s in snapshot.of_kind(Sidecar).values() if s.metadata.namespace == namespace),
        key=created,
    )
    if sidecar.spec.workload_selector is None:
        defaults = [s.metadata.name for s in peers if s.spec.workload_selector is None]
        if len(defaults) < 2:
            return []
        where = " (the mesh default)" if namespace == root_namespace(snapshot) else ""
        return [
            Issue(
                Codes.MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
                "spec",
                f"the Sidecars {', '.join(defaults)} in namespace {namespace}{where} have no "
                f"workload selector (istioctl IST0111); only the oldest, {defaults[0]}, applies",
            )
        ]
    selected = [s for s in peers if s.spec.workload_selector is not None]
    if len(selected) < 2:
        return []
    found: list[Issue] = []
    for pod in snapshot.of_kind(Pod).values():
        if pod.metadata.namespace != namespace:
            continue
        labels = pod.metadata.labels
        rivals = [
            s.metadata.name
            for s in selected
            if s.spec.workload_selector is not None
            and selects(s.spec.workload_selector.labels, labels)
        ]
        if len(rivals) > 1 and sidecar.metadata.name in rivals:
            found.append(
                Issue(
                    Codes.CONFLICTING_SIDECAR_SELECTORS,
                    "spec.workloadSelector",
                    f"the Sidecars {', '.join(rivals)} in namespace {namespace} select the same "
                    f"workload pod {pod.metadata.name} (istioctl IST0110); only the oldest, "
                    f"{rivals[0]}, applies to it",
                )
            )
            break
    return found


def blocking(issues: list[Issue]) -> list[Issue]:
    """The in-context findings that keep a new version from replacing the last good one."""
    return [i for i in issues if i.severity is Level.ERROR and i.code.id not in _NOT_BLOCKING]
