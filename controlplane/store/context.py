"""Checks that need the rest of the mesh: a resource valid alone but broken in context."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from controlplane.api.issues import Codes, Issue, Level, ResourceKey
from controlplane.api.kube import Pod
from controlplane.api.mesh import EnvoyExtAuthzGrpc, EnvoyExtAuthzHttp, MeshConfigSpec
from controlplane.api.mesh_validation import provider_problems
from controlplane.api.networking import Destination, DestinationRule, VirtualService
from controlplane.api.request_authn import (
    JwksKeySet,
    RequestAuthentication,
    jwks_key,
    key_source,
)
from controlplane.api.security import AuthorizationPolicy
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.sidecar import Sidecar
from controlplane.store.gateway_checks import NOT_BLOCKING as GATEWAY_NOT_BLOCKING
from controlplane.store.gateway_checks import check_gateway_bindings
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import MeshService, selects
from controlplane.store.sidecars import root_namespace as sidecar_root_namespace
from controlplane.store.sidecars import scope_of
from controlplane.store.snapshot import (
    created,
    exported_to,
    resolve_host,
    visible_namespaces,
)

# Findings that are errors for `analyze` but must not hold a version back: a VirtualService
# that loses a host to an older one still applies to its other hosts, as in istiod.
# A CUSTOM policy whose provider cannot be used is applied (it denies what it matches).
# A Gateway whose credential Secret is missing or unusable applies too: that server's TLS
# waits for the Secret, as Envoy waits for the SDS secret (part "gwtls").
_NOT_BLOCKING = (
    frozenset(
        {
            Codes.CONFLICTING_VIRTUAL_SERVICES.id,
            Codes.UNKNOWN_EXTENSION_PROVIDER.id,
            Codes.MULTIPLE_EXTENSION_PROVIDERS.id,
            Codes.GATEWAY_CREDENTIAL_NOT_FOUND.id,
            Codes.GATEWAY_CREDENTIAL_INVALID.id,
            # Sidecars that compete for a workload: istiod applies the oldest, as we do.
            Codes.CONFLICTING_SIDECAR_SELECTORS.id,
            Codes.MULTIPLE_SIDECARS_WITHOUT_SELECTOR.id,
            # Telemetries that compete for a workload: applied in istiod's order.
            Codes.CONFLICTING_TELEMETRY_SELECTORS.id,
            Codes.MULTIPLE_TELEMETRIES_WITHOUT_SELECTOR.id,
        }
    )
    | GATEWAY_NOT_BLOCKING
)


def check_virtual_service(snapshot: SnapshotReader, vs: VirtualService) -> list[Issue]:
    """Destinations that point at a subset or port that does not exist, or an unknown host;
    hosts an older mesh-bound VirtualService already claims."""
    key = ResourceKey("VirtualService", vs.metadata.namespace, vs.metadata.name)
    found: list[Issue] = []
    for path, dest in _destinations(vs):
        found += _check_destination(snapshot, vs.metadata.namespace, path, dest)
    found += _check_conflicts(snapshot, vs)
    found += check_gateway_bindings(snapshot, vs)
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


def check_request_authentication(
    snapshot: SnapshotReader, ra: RequestAuthentication
) -> list[Issue]:
    """What the control plane's fetches of the rules' key sets (``sources/jwks.py``) came to:
    a key set that cannot be fetched now (the last good one stays in effect), or that was
    never fetched (tokens of that issuer are refused). Silent until a fetch was tried."""
    key = ResourceKey("RequestAuthentication", ra.metadata.namespace, ra.metadata.name)
    found: list[Issue] = []
    for i, rule in enumerate(ra.spec.jwt_rules):
        source = key_source(rule)
        if source is None:
            continue
        fetched: JwksKeySet | None = snapshot.get(jwks_key(source))
        if fetched is None or not fetched.spec.error:
            continue
        spec = fetched.spec
        path = f"spec.jwtRules[{i}]." + ("jwksUri" if rule.uri else "issuer")
        since = _utc(spec.failing_since)
        if spec.jwks is None:
            found.append(
                Issue(
                    Codes.JWKS_NEVER_FETCHED,
                    path,
                    f"the key set at {source} could not be fetched (failing since {since}: "
                    f"{spec.error}); tokens of issuer {rule.issuer!r} are refused (401) until "
                    "it is",
                )
            )
        else:
            found.append(
                Issue(
                    Codes.JWKS_REFRESH_FAILING,
                    path,
                    f"the key set at {source} could not be refreshed (failing since {since}: "
                    f"{spec.error}); the key set fetched at {_utc(spec.fetched_at)} stays in "
                    "effect",
                )
            )
    return [i.with_context(key, None) for i in found]


def request_auth_paths(policy: AuthorizationPolicy) -> list[str]:
    """Where an AuthorizationPolicy reads the verified JWT: ``requestPrincipals``,
    ``notRequestPrincipals`` and ``request.auth.*`` conditions."""
    found: list[str] = []
    for i, rule in enumerate(policy.spec.rules or ()):
        for j, entry in enumerate(rule.from_):
            source = entry.source
            if source is None:
                continue
            base = f"spec.rules[{i}].from[{j}].source"
            if source.request_principals:
                found.append(f"{base}.requestPrincipals")
            if source.not_request_principals:
                found.append(f"{base}.notRequestPrincipals")
        for j, condition in enumerate(rule.when):
            if condition.key.startswith("request.auth."):
                found.append(f"spec.rules[{i}].when[{j}]")
    return found


def check_request_principals(
    snapshot: SnapshotReader, policy: AuthorizationPolicy, root_namespace: str
) -> list[Issue]:
    """An AuthorizationPolicy that reads the verified JWT where no RequestAuthentication
    applies: no token is ever verified there, so those conditions never hold (an ALLOW rule
    that needs a principal allows nothing; a DENY on ``notRequestPrincipals`` denies
    everything). Reported once, at the first such field, naming the workloads concerned."""
    paths = request_auth_paths(policy)
    if not paths:
        return []
    key = ResourceKey("AuthorizationPolicy", policy.metadata.namespace, policy.metadata.name)
    namespace = policy.metadata.namespace
    candidates = [
        ra
        for ra in snapshot.of_kind(RequestAuthentication).values()
        if ra.metadata.namespace in (namespace, root_namespace)
        and not (ra.spec.selector is None and (ra.spec.target_ref or ra.spec.target_refs))
    ]
    selector = policy.spec.selector.match_labels if policy.spec.selector is not None else {}
    if policy.spec.selector is None and (policy.spec.target_ref or policy.spec.target_refs):
        return []  # gateways and waypoints: not checked here
    if not candidates:
        reason = (
            "no RequestAuthentication applies to the workloads this policy selects (none in "
            f"namespace {namespace!r} or the root namespace {root_namespace!r}): no token is "
            "verified there, so this condition never holds"
        )
        return [Issue(Codes.JWT_CONDITION_WITHOUT_REQUEST_AUTHENTICATION, paths[0], reason, key)]
    pods = [
        pod
        for pod in snapshot.of_kind(Pod).values()
        if (namespace == root_namespace or pod.metadata.namespace == namespace)
        and selects(dict(selector), pod.metadata.labels)
    ]
    uncovered = sorted(
        f"{pod.metadata.namespace}/{pod.metadata.name}"
        for pod in pods
        if not any(
            _ra_applies(ra, pod.metadata.namespace, pod.metadata.labels, root_namespace)
            for ra in candidates
        )
    )
    if not uncovered:
        return []
    shown = ", ".join(uncovered[:3]) + (
        f" and {len(uncovered) - 3} more" if len(uncovered) > 3 else ""
    )
    reason = (
        f"no RequestAuthentication applies to {shown}: no token is verified there, so this "
        "condition never holds for them"
    )
    return [Issue(Codes.JWT_CONDITION_WITHOUT_REQUEST_AUTHENTICATION, paths[0], reason, key)]


def _ra_applies(
    ra: RequestAuthentication, namespace: str, labels: dict[str, str], root_namespace: str
) -> bool:
    if ra.metadata.namespace not in (namespace, root_namespace):
        return False
    if ra.spec.selector is not None and ra.spec.selector.match_labels:
        return selects(ra.spec.selector.match_labels, labels)
    return True


def _utc(moment: float | None) -> str:
    if moment is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def check_service_entry(snapshot: SnapshotReader, entry: ServiceEntry) -> list[Issue]:
    """Hosts this entry does not define after all: a Kubernetes Service's host (the Service
    wins), or a host an older entry already defines (the older one wins). Warnings: the
    entry's other hosts still apply."""
    key = ResourceKey("ServiceEntry", entry.metadata.namespace, entry.metadata.name)
    mine = (entry.metadata.namespace, entry.metadata.name)
    found: list[Issue] = []
    for i, host in enumerate(entry.spec.hosts):
        service = snapshot.services.get(host)
        if service is None or service.source == mine:
            continue
        path = f"spec.hosts[{i}]"
        if not service.from_service_entry:
            found.append(
                Issue(
                    Codes.SERVICE_ENTRY_HOST_COLLIDES,
                    path,
                    f"host {host} is the Kubernetes Service {service.namespace}/{service.name}: "
                    "the Service defines it, this entry's ports and endpoints for it are not used",
                )
            )
            continue
        other = snapshot.get(ResourceKey("ServiceEntry", *(service.source or ("", ""))))
        detail = ""
        if isinstance(other, ServiceEntry):
            theirs = {p.number: p.protocol.upper() for p in other.spec.ports}
            clashes = sorted(
                f"port {p.number}: {p.protocol.upper() or 'unset'} here, "
                f"{theirs[p.number] or 'unset'} there"
                for p in entry.spec.ports
                if p.number in theirs and theirs[p.number] != p.protocol.upper()
            )
            if clashes:
                detail = (
                    f"; conflicting protocols ({', '.join(clashes)}, "
                    "istioctl IST0177 ConflictingServiceEntryProtocol)"
                )
        found.append(
            Issue(
                Codes.CONFLICTING_SERVICE_ENTRIES,
                path,
                f"host {host} is already defined by the older ServiceEntry "
                f"{service.namespace}/{service.source[1] if service.source else ''}: "
                f"that one applies{detail}",
            )
        )
    return [i.with_context(key, None) for i in found]


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
        where = " (the mesh default)" if namespace == sidecar_root_namespace(snapshot) else ""
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


# ---- CUSTOM AuthorizationPolicy: its extension provider (part "meshcfg") -------------------


def resolve_ext_authz(
    mesh: MeshConfigSpec, services: Mapping[str, MeshService], name: str
) -> tuple[EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc | None, MeshService | None, str | None]:
    """The ext_authz provider ``name`` as istiod looks it up (``getExtAuthz``,
    ``LookupCluster``): its config and service, or why a CUSTOM policy cannot use it."""
    if not name:
        return None, None, "no provider specified in authorization policy"
    found = [p for p in mesh.extension_providers if p.name == name]
    if not found:
        available = ", ".join(sorted(p.name for p in mesh.extension_providers)) or "none"
        return (
            None,
            None,
            (
                f"the mesh config defines no extension provider {name!r} (extensionProviders: "
                f"{available})"
            ),
        )
    provider = found[0]
    config = provider.envoy_ext_authz_http or provider.envoy_ext_authz_grpc
    if config is None:
        return None, None, f"extension provider {name!r} is not envoyExtAuthzHttp/Grpc"
    problems = provider_problems(provider)
    if len(found) > 1:
        problems.append(("name", f"extension provider name must be unique: {name!r}"))
    if problems:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in problems)
        return config, None, f"extension provider {name!r} is invalid: {reasons}"
    namespace, _, hostname = config.service.rpartition("/")
    service = services.get(hostname)
    if service is None or (namespace and service.namespace != namespace):
        return (
            config,
            None,
            (
                f"extension provider {name!r}: could not find service {config.service} in the "
                "service registry"
            ),
        )
    return config, service, None


def check_custom_provider(snapshot: SnapshotReader, policy: Any) -> list[Issue]:
    """CP0421 for a CUSTOM AuthorizationPolicy whose provider cannot be used (it then denies
    what its rules match, as istiod does); nothing for other policies."""
    spec = policy.spec
    if spec.action != "CUSTOM" or spec.provider is None or not spec.provider.name:
        return []
    _, _, error = resolve_ext_authz(snapshot.mesh, snapshot.services, spec.provider.name)
    if error is None:
        return []
    key = ResourceKey("AuthorizationPolicy", policy.metadata.namespace, policy.metadata.name)
    return [
        Issue(
            Codes.UNKNOWN_EXTENSION_PROVIDER,
            "spec.provider.name",
            f"{error}; requests its rules match are denied (fail closed, as istiod does)",
            key,
        )
    ]


def check_provider_conflicts(
    snapshot: SnapshotReader, policies: list[Any]
) -> dict[ResourceKey, list[Issue]]:
    """CP0422 for each enforced CUSTOM policy that selects a Pod which another CUSTOM policy
    naming a different provider also selects (istiod: one provider per workload)."""
    root = snapshot.mesh.root_namespace
    enforced = [p for p in policies if not _dry_run(p) and p.spec.provider is not None]
    found: dict[ResourceKey, list[Issue]] = {}
    if len({p.spec.provider.name for p in enforced}) < 2:
        return found
    for pod in snapshot.of_kind("Pod").values():
        meta = pod.metadata
        selecting = [p for p in enforced if _selects(p, meta.namespace, meta.labels, root)]
        providers = sorted({p.spec.provider.name for p in selecting})
        if len(providers) < 2:
            continue
        for policy in selecting:
            key = ResourceKey(
                "AuthorizationPolicy", policy.metadata.namespace, policy.metadata.name
            )
            if key in found:
                continue
            found[key] = [
                Issue(
                    Codes.MULTIPLE_EXTENSION_PROVIDERS,
                    "spec.provider.name",
                    f"Pod {meta.namespace}/{meta.name} is selected by CUSTOM policies naming "
                    f"{len(providers)} providers ({', '.join(providers)}); istiod allows one "
                    "provider per workload: requests they match are denied there",
                    key,
                )
            ]
    return found


def _dry_run(policy: Any) -> bool:
    value = policy.metadata.annotations.get("istio.io/dry-run", "")
    return str(value).strip() in ("1", "t", "T", "TRUE", "true", "True")


def _selects(policy: Any, namespace: str, labels: Mapping[str, str], root: str) -> bool:
    spec = policy.spec
    if policy.metadata.namespace not in (namespace, root):
        return False
    if spec.selector is None:
        return not (spec.target_ref is not None or spec.target_refs)
    return selects(spec.selector.match_labels, labels)
