"""`controlplane describe pod|service NAME`: what the mesh makes of one workload or service.

Like ``istioctl x describe pod`` (istioctl/pkg/describe): for each Service that selects the
pod, the DestinationRule that applies to its host (and which of its subsets hold this pod),
the VirtualService that routes it (its routes, their destinations and weights; any other
VirtualService claiming the host is named as shadowed), then the workload's own side: its
identity, its effective PeerAuthentication (mode, per-port modes, the policies that decided
it), the AuthorizationPolicies and RequestAuthentications that select it, the Sidecar that
scopes it and the Gateways it serves. Unlike istioctl, it also says which resources written
for this workload were refused and why (the same findings as status and ``analyze``), and
what each refusal does meanwhile.

Every answer comes from the same code the compiler uses for this proxy
(``SnapshotCompiler``'s lookups of PeerAuthentication, AuthorizationPolicy, Sidecar scope;
the Snapshot's VirtualService and DestinationRule lookups), so describe cannot disagree with
what the proxy is sent. Pure: reads a Snapshot, returns a dict (``-o json``) rendered by
``render_text``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from controlplane.analyze.loading import Loaded
from controlplane.api.issues import Issue, Level, ResourceKey
from controlplane.api.networking import HTTPRoute, VirtualService
from controlplane.api.policy_scope import RefusedPolicy
from controlplane.api.policy_scope import describe as describe_refusal
from controlplane.api.telemetry import Telemetry
from controlplane.compile import SnapshotCompiler
from controlplane.compile.gateway import bound_virtual_services
from controlplane.compile.jwt import applies_to
from controlplane.compile.proxy import ROUTER, SIDECAR, TRANSPARENT, Proxy
from controlplane.compile.telemetry import SideTelemetry, applicable_telemetries
from controlplane.store.registry import MeshService, pod_ip, selects
from controlplane.store.snapshot import Snapshot, resolve_host

# The kinds describe reports on, in the order it lists them.
KINDS = (
    "VirtualService",
    "DestinationRule",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Gateway",
    "Sidecar",
)


class NotFound(LookupError):
    """The pod or service named is not in the mesh read."""


def key_text(key: ResourceKey) -> str:
    return f"{key.kind} {key.namespace}/{key.name}"


def _key(resource: Any) -> ResourceKey:
    return ResourceKey(resource.kind, resource.metadata.namespace, resource.metadata.name)


WORKLOAD_NAME_LABEL = "service.istio.io/workload-name"


def workload_of(pod: Any) -> str:
    """The workload a pod belongs to, as istiod names it (pkg/kube's workload meta): the
    ``service.istio.io/workload-name`` label, else the Deployment a ReplicaSet's pod comes
    from (its name without ``-<pod-template-hash>-<suffix>``), else the pod's own name."""
    labels = pod.metadata.labels or {}
    name: str = pod.metadata.name
    if labels.get(WORKLOAD_NAME_LABEL):
        return str(labels[WORKLOAD_NAME_LABEL])
    template_hash = labels.get("pod-template-hash")
    if template_hash and f"-{template_hash}-" in name:
        return name.rsplit(f"-{template_hash}-", 1)[0]
    return name


def workload_proxy(snapshot: Snapshot, pod: Any) -> Proxy:
    """The proxy the pod's sidecar (or gateway Envoy) would present, with the identity its
    certificate carries: ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``."""
    namespace = pod.metadata.namespace
    labels = dict(pod.metadata.labels or {})
    account = pod.spec.service_account_name or "default"
    ip = pod_ip(pod) or ""
    router = is_gateway_pod(snapshot, pod)
    kind = ROUTER if router else SIDECAR
    trust_domain = snapshot.mesh.trust_domain
    return Proxy(
        node_id=f"{kind}~{ip}~{pod.metadata.name}.{namespace}~{namespace}.svc.cluster.local",
        namespace=namespace,
        labels=labels,
        service_account=account,
        ips=(ip,) if ip else (),
        workload_name=workload_of(pod),
        mode=TRANSPARENT,
        trust_domain=trust_domain,
        identity=f"spiffe://{trust_domain}/ns/{namespace}/sa/{account}",
        proxy_type=kind,
        metadata={"INTERCEPTION_MODE": "NONE"} if router else {},
    )


def is_gateway_pod(snapshot: Snapshot, pod: Any) -> bool:
    """A pod some Gateway selects by its labels runs a gateway (router) proxy."""
    labels = pod.metadata.labels or {}
    return any(
        gw.spec.selector and selects(gw.spec.selector, labels)
        for gw in snapshot.of_kind("Gateway").values()
    )


def find_pod(snapshot: Snapshot, name: str, namespace: str) -> Any:
    pod = snapshot.get(ResourceKey("Pod", namespace, name))
    if pod is None:
        raise NotFound(f"pod {namespace}/{name} not found")
    return pod


def services_of(snapshot: Snapshot, namespace: str, labels: Mapping[str, str]) -> list[MeshService]:
    """The Kubernetes Services of ``namespace`` whose selector matches ``labels``."""
    return sorted(
        (
            s
            for s in snapshot.services.values()
            if not s.from_service_entry
            and s.namespace == namespace
            and s.selector
            and selects(s.selector, labels)
        ),
        key=lambda s: s.hostname,
    )


# ---- the pieces ------------------------------------------------------------------------------


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")


def _match_text(route: HTTPRoute) -> list[str]:
    return [json.dumps(_dump(m), sort_keys=True, separators=(",", ":")) for m in route.match]


def _destinations(
    destinations: Iterable[Any], pod_subsets: set[str] | None, host: str, vs_namespace: str
) -> list[dict[str, Any]]:
    items = list(destinations)
    given = [d.weight for d in items]
    # As Envoy is configured: one destination takes all; weights are relative (istiod
    # normalizes them to a total of 100 the same way).
    weights = [100] if len(items) == 1 else [w or 0 for w in given]
    total = sum(weights) or 1
    out = []
    for d, weight in zip(items, weights, strict=True):
        dest = d.destination
        entry: dict[str, Any] = {
            "host": dest.host,
            "subset": dest.subset,
            "port": dest.port.number if dest.port is not None else None,
            "weight": weight,
            "percent": round(100 * weight / total, 1),
        }
        if pod_subsets is not None:
            same_host = resolve_host(dest.host, vs_namespace) == host
            entry["thisPod"] = same_host and (dest.subset is None or dest.subset in pod_subsets)
        out.append(entry)
    return out


def _virtual_service(
    snapshot: Snapshot, host: str, namespace: str, pod_subsets: set[str] | None
) -> dict[str, Any] | None:
    found = snapshot.virtual_services_for(host, namespace)
    if not found:
        return None
    vs: VirtualService = found[0]
    routes = _routes(vs, pod_subsets, host)
    reaches = (
        None
        if pod_subsets is None
        else any(d.get("thisPod") for r in routes for d in r["destinations"])
    )
    return {
        "resource": key_text(_key(vs)),
        "routes": routes,
        # For a pod: whether any route can send traffic to it (istioctl warns when none can).
        "reachesPod": reaches,
        # Other VirtualServices for the same host: istiod applies only the first
        # (IST0109 ConflictingMeshGatewayVirtualServiceHosts when they are in one namespace).
        "shadowed": [key_text(_key(v)) for v in found[1:]],
    }


def _routes(vs: VirtualService, pod_subsets: set[str] | None, host: str) -> list[dict[str, Any]]:
    """Every route of ``vs``: its match and its destinations with their weights."""
    routes = []
    for index, route in enumerate(vs.spec.http):
        entry: dict[str, Any] = {
            "protocol": "http",
            "name": route.name or f"http[{index}]",
            "match": _match_text(route),
            "destinations": _destinations(route.route, pod_subsets, host, vs.metadata.namespace),
        }
        if route.redirect is not None:
            entry["redirect"] = _dump(route.redirect)
        if route.direct_response is not None:
            entry["directResponse"] = _dump(route.direct_response)
        if route.fault is not None:
            entry["fault"] = _dump(route.fault)
        routes.append(entry)
    l4: tuple[tuple[str, list[Any]], ...] = (("tcp", list(vs.spec.tcp)), ("tls", list(vs.spec.tls)))
    for protocol, rules in l4:
        for index, rule in enumerate(rules):
            routes.append(
                {
                    "protocol": protocol,
                    "name": f"{protocol}[{index}]",
                    "match": [
                        json.dumps(_dump(m), sort_keys=True, separators=(",", ":"))
                        for m in rule.match
                    ],
                    "destinations": _destinations(
                        rule.route, pod_subsets, host, vs.metadata.namespace
                    ),
                }
            )
    return routes


def _destination_rule(
    snapshot: Snapshot, host: str, namespace: str, labels: Mapping[str, str] | None
) -> dict[str, Any] | None:
    rule = snapshot.destination_rule(host, namespace)
    if rule is None:
        return None
    policy = rule.traffic_policy
    tls = policy.tls.mode if policy is not None and policy.tls is not None else None
    subsets = []
    for subset in rule.subsets:
        entry: dict[str, Any] = {"name": subset.name, "labels": dict(subset.labels)}
        if labels is not None:
            entry["matchesPod"] = selects(subset.labels, labels)
        subsets.append(entry)
    return {
        "resources": [key_text(k) for k in rule.sources],
        "host": rule.host,
        "subsets": subsets,
        # No mode: istiod's auto mTLS (ISTIO_MUTUAL to endpoints that run a sidecar).
        "tlsMode": tls or "auto (ISTIO_MUTUAL to sidecars)",
    }


def _pod_subsets(
    snapshot: Snapshot, host: str, namespace: str, labels: Mapping[str, str]
) -> set[str]:
    rule = snapshot.destination_rule(host, namespace)
    if rule is None:
        return set()
    return {s.name for s in rule.subsets if selects(s.labels, labels)}


def _service(
    snapshot: Snapshot, service: MeshService, labels: Mapping[str, str] | None
) -> dict[str, Any]:
    namespace = service.namespace
    host = service.hostname
    pod_subsets = _pod_subsets(snapshot, host, namespace, labels) if labels is not None else None
    return {
        "name": service.name,
        "namespace": namespace,
        "host": host,
        "ports": [
            {
                "port": p.port,
                "name": p.name,
                "protocol": p.protocol,
                "targetPort": p.target_port,
            }
            for p in service.ports
        ],
        "destinationRule": _destination_rule(snapshot, host, namespace, labels),
        "virtualService": _virtual_service(snapshot, host, namespace, pod_subsets),
    }


# ---- refusals and findings ---------------------------------------------------------------------


def _selector_of(content: Any, field_name: str) -> Mapping[str, str] | None:
    """``spec.<field>.matchLabels`` (or the field itself for a Gateway), or None."""
    spec = content.get("spec") if isinstance(content, Mapping) else None
    if not isinstance(spec, Mapping):
        return None
    raw = spec.get(field_name)
    if isinstance(raw, Mapping) and field_name != "selector":
        raw = raw.get("matchLabels")
    elif isinstance(raw, Mapping) and "matchLabels" in raw:
        raw = raw.get("matchLabels")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def _refused_applies(
    key: ResourceKey,
    content: Any,
    *,
    namespace: str,
    labels: Mapping[str, str] | None,
    hosts: set[str],
    root: str,
) -> bool:
    """Whether a refused document was written for this workload (or service), read from the
    document as written: best effort, erring wide (as ``api/policy_scope.py`` does)."""
    spec = content.get("spec") if isinstance(content, Mapping) else None
    if key.kind in ("VirtualService", "DestinationRule"):
        if not isinstance(spec, Mapping):
            return key.namespace == namespace
        written = spec.get("hosts") if key.kind == "VirtualService" else [spec.get("host")]
        if not isinstance(written, list):
            return key.namespace == namespace
        return any(
            isinstance(h, str) and (resolve_host(h, key.namespace) in hosts) for h in written
        )
    if key.namespace not in (namespace, root) and key.kind != "Gateway":
        return False
    if labels is None:  # a service: its workloads' policies are not its own
        return key.kind not in ("PeerAuthentication", "AuthorizationPolicy", "Sidecar") and (
            key.namespace == namespace
        )
    field_name = {"Sidecar": "workloadSelector", "Gateway": "selector"}.get(key.kind, "selector")
    selector = _selector_of(content, field_name)
    if selector is None:
        return key.namespace == namespace  # unreadable: errs wide
    if key.kind == "Gateway":
        return bool(selector) and selects(selector, labels)
    return selects(selector, labels)


def _refused(
    loaded: Loaded,
    *,
    namespace: str,
    labels: Mapping[str, str] | None,
    hosts: set[str],
) -> list[dict[str, Any]]:
    snapshot = loaded.snapshot
    content = loaded.read.refused_content()
    root = snapshot.mesh.root_namespace
    policies: dict[ResourceKey, RefusedPolicy] = {
        r.key: r
        for kind in ("AuthorizationPolicy", "PeerAuthentication")
        for r in snapshot.rejected(kind)
    }
    out = []
    for key, status in sorted(snapshot.status.items(), key=lambda kv: str(kv[0])):
        if key.kind not in KINDS or status.accepted:
            continue
        if not _refused_applies(
            key, content.get(key), namespace=namespace, labels=labels, hosts=hosts, root=root
        ):
            continue
        errors = [i for i in status.issues if i.severity is Level.ERROR] or list(status.issues)
        in_effect = key in snapshot.of_kind(key.kind)
        if in_effect:
            effect = "the last accepted version is still served"
        elif key in policies:
            effect = describe_refusal(policies[key], root)[0]
        else:
            effect = "nothing of it reaches the proxies"
        out.append(
            {
                "resource": key_text(key),
                "origin": status.origin,
                # The refusal's consequence is said once, as "effect".
                "reasons": [_issue_text(i) for i in errors if i.reason != effect],
                "effect": effect,
            }
        )
    return out


def _issue_text(issue: Issue) -> str:
    return f"[{issue.code.id} {issue.code.title}] {issue.field_message}"


def _findings(snapshot: Snapshot, keys: Iterable[ResourceKey]) -> list[dict[str, Any]]:
    out = []
    for key in sorted(set(keys), key=str):
        status = snapshot.status.get(key)
        if status is None or not status.accepted:
            continue
        for issue in status.issues:
            out.append(
                {
                    "resource": key_text(key),
                    "level": str(issue.severity),
                    "message": _issue_text(issue),
                }
            )
    return out


def _parse(text: str) -> ResourceKey:
    kind, _, rest = text.partition(" ")
    namespace, _, name = rest.partition("/")
    return ResourceKey(kind, namespace, name)


# ---- pods and services -------------------------------------------------------------------------


def describe_pod(loaded: Loaded, name: str, namespace: str = "default") -> dict[str, Any]:
    snapshot = loaded.snapshot
    pod = find_pod(snapshot, name, namespace)
    proxy = workload_proxy(snapshot, pod)
    labels = dict(proxy.labels)
    compiler = SnapshotCompiler(snapshot)
    services = [_service(snapshot, s, labels) for s in services_of(snapshot, namespace, labels)]
    mtls = compiler.peer_authentication(namespace, labels)
    authz = compiler.authorization_policies(namespace, labels)
    root = snapshot.mesh.root_namespace
    request_authn = [
        _key(ra)
        for ra in sorted(
            snapshot.of_kind("RequestAuthentication").values(), key=lambda r: str(_key(r))
        )
        if applies_to(ra, namespace, labels, root)
    ]
    scope = compiler.sidecar_scope(proxy)
    telemetries = [  # part "telemetry": weakest first, as they apply
        _key(t)
        for t in applicable_telemetries(
            snapshot.of_kind(Telemetry).values(), namespace, labels, root
        )
    ]
    telemetry = compiler.telemetry(proxy)
    served = [
        gw
        for gw in sorted(snapshot.of_kind("Gateway").values(), key=lambda r: str(_key(r)))
        if gw.spec.selector and selects(gw.spec.selector, labels)
    ]
    gateways = [_key(gw) for gw in served]
    gateway_routes = [_gateway_routes(snapshot, gw, namespace) for gw in served]
    applied: list[ResourceKey] = [*mtls.sources, *request_authn, *gateways, *telemetries]
    for action in ("CUSTOM", "DENY", "ALLOW", "AUDIT"):
        applied += [_key(p) for p in authz.of(action)]
    if scope.sidecar is not None:
        applied.append(scope.sidecar)
    for svc in services:
        if svc["virtualService"]:
            applied.append(_parse(svc["virtualService"]["resource"]))
        if svc["destinationRule"]:
            applied += [_parse(r) for r in svc["destinationRule"]["resources"]]
    for entry in gateway_routes:
        applied += [_parse(v["resource"]) for v in entry["virtualServices"]]
    hosts = {s["host"] for s in services}
    return {
        "pod": {
            "name": name,
            "namespace": namespace,
            "ip": proxy.ips[0] if proxy.ips else None,
            "labels": labels,
            "workload": proxy.workload_name,
            "serviceAccount": proxy.service_account,
            "identity": proxy.identity,
            "proxyType": proxy.proxy_type,
        },
        "services": services,
        "mtls": {
            "mode": mtls.mode,
            "portModes": {str(p): m for p, m in mtls.port_modes},
            "policies": [key_text(k) for k in mtls.sources],
        },
        "authorization": {
            action: [key_text(_key(p)) for p in authz.of(action)]
            for action in ("CUSTOM", "DENY", "ALLOW", "AUDIT")
            if authz.of(action)
        },
        "requestAuthentication": [key_text(k) for k in request_authn],
        "sidecar": key_text(scope.sidecar) if scope.sidecar is not None else None,
        "telemetry": {
            "resources": [key_text(k) for k in telemetries],
            "outbound": _side_text(telemetry.client),
            "inbound": _side_text(telemetry.server),
        },
        # What it may call (the services its Sidecar imports, or every exported one), as the
        # compiler builds its outbound clusters and routes.
        "outbound": sorted({s.hostname for s in compiler.services_for(proxy)}),
        "gateways": [key_text(k) for k in gateways],
        # For a gateway pod: each Gateway's servers and the VirtualServices bound to it.
        "gatewayRoutes": gateway_routes,
        "refused": _refused(loaded, namespace=namespace, labels=labels, hosts=hosts),
        "findings": _findings(snapshot, applied),
    }


def _gateway_routes(snapshot: Snapshot, gateway: Any, namespace: str) -> dict[str, Any]:
    name = f"{gateway.metadata.namespace}/{gateway.metadata.name}"
    bound = bound_virtual_services(snapshot, name, namespace)
    return {
        "gateway": key_text(_key(gateway)),
        "servers": [
            {
                "port": s.port.number if s.port is not None else None,
                "protocol": s.port.protocol if s.port is not None else None,
                "hosts": list(s.hosts),
            }
            for s in gateway.spec.servers
        ],
        "virtualServices": [
            {
                "resource": key_text(_key(vs)),
                "hosts": list(vs.spec.hosts),
                "routes": _routes(vs, None, ""),
            }
            for vs in bound
        ],
    }


def describe_service(loaded: Loaded, name: str, namespace: str = "default") -> dict[str, Any]:
    snapshot = loaded.snapshot
    service = next(
        (
            s
            for s in snapshot.services.values()
            if s.name == name and s.namespace == namespace and not s.from_service_entry
        ),
        None,
    )
    if service is None:
        raise NotFound(f"service {namespace}/{name} not found")
    described = _service(snapshot, service, None)
    pods = sorted(
        (
            p
            for p in snapshot.of_kind("Pod").values()
            if p.metadata.namespace == namespace
            and service.selector
            and selects(service.selector, p.metadata.labels or {})
        ),
        key=lambda p: p.metadata.name,
    )
    rule = snapshot.destination_rule(service.hostname, namespace)
    described["pods"] = [
        {
            "name": p.metadata.name,
            "subsets": sorted(
                s.name
                for s in (rule.subsets if rule else ())
                if selects(s.labels, p.metadata.labels or {})
            ),
        }
        for p in pods
    ]
    applied = []
    if described["virtualService"]:
        applied.append(_parse(described["virtualService"]["resource"]))
    if described["destinationRule"]:
        applied += [_parse(r) for r in described["destinationRule"]["resources"]]
    described["refused"] = _refused(
        loaded, namespace=namespace, labels=None, hosts={service.hostname}
    )
    described["findings"] = _findings(snapshot, applied)
    return {"service": described}


# ---- text ----------------------------------------------------------------------------------------


def _route_lines(vs: Mapping[str, Any], mark: bool) -> list[str]:
    lines = [f"VirtualService: {vs['resource']}"]
    for route in vs["routes"]:
        when = " when " + " or ".join(route["match"]) if route["match"] else " (default)"
        lines.append(f"   {route['protocol']} route {route['name']}{when}")
        for d in route["destinations"]:
            target = d["host"] + (f" subset {d['subset']}" if d["subset"] else "")
            if d["port"]:
                target += f" port {d['port']}"
            pod = "   <- this pod" if mark and d.get("thisPod") else ""
            lines.append(f"      {d['percent']:g}% -> {target} (weight {d['weight']}){pod}")
        for extra in ("redirect", "directResponse", "fault"):
            if extra in route:
                lines.append(f"      {extra}: {json.dumps(route[extra], sort_keys=True)}")
    if mark and vs.get("reachesPod") is False:
        lines.append(
            f"   WARNING: No destinations match pod subsets (checked {len(vs['routes'])} routes)"
        )
    for other in vs["shadowed"]:
        lines.append(f"   shadowed (not applied, the one above wins): {other}")
    return lines


def _service_lines(svc: Mapping[str, Any], mark: bool) -> list[str]:
    ports = ", ".join(
        f"{p['name'] or '-'} {p['port']}/{p['protocol']}"
        + (f" -> {p['targetPort']}" if p["targetPort"] is not None else "")
        for p in svc["ports"]
    )
    lines = [f"Service: {svc['name']} ({svc['host']})", f"   Ports: {ports}"]
    dr = svc["destinationRule"]
    if dr is None:
        lines.append("DestinationRule: none")
    else:
        lines.append(f"DestinationRule: {', '.join(dr['resources'])} for {dr['host']}")
        if mark:
            matching = [s["name"] for s in dr["subsets"] if s.get("matchesPod")]
            others = [s["name"] for s in dr["subsets"] if not s.get("matchesPod")]
            lines.append(f"   Matching subsets: {', '.join(matching) or 'none'}")
            if others:
                lines.append(f"   (Non-matching subsets: {', '.join(others)})")
        else:
            lines.append(f"   Subsets: {', '.join(s['name'] for s in dr['subsets']) or 'none'}")
        lines.append(f"   Traffic policy TLS mode: {dr['tlsMode']}")
    vs = svc["virtualService"]
    if vs is None:
        lines.append("VirtualService: none (default route: all endpoints of the service)")
    else:
        lines += _route_lines(vs, mark)
    return lines


def _tail_lines(described: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if described["refused"]:
        lines.append("Refused (not applied):")
        for r in described["refused"]:
            where = f" ({r['origin']})" if r["origin"] else ""
            lines.append(f"   {r['resource']}{where}")
            lines += [f"      why: {reason}" for reason in r["reasons"]]
            lines.append(f"      meanwhile: {r['effect']}")
    if described["findings"]:
        lines.append("Findings on the resources that apply:")
        lines += [f"   {f['level']} {f['resource']}: {f['message']}" for f in described["findings"]]
    return lines


def _side_text(side: SideTelemetry) -> dict[str, Any]:
    """One side's access log files (with their format) and tracing, for describe."""
    logs = [f"{log.path} ({'JSON' if log.json else 'text'})" for log in side.access_logs]
    tracing = side.tracing
    traced = None
    if tracing is not None:
        provider = tracing.provider.name if tracing.provider is not None else "none"
        traced = f"{provider} ({tracing.sampling:g}% sampled)"
    return {"accessLogs": logs, "tracing": traced}


def render_text(described: Mapping[str, Any]) -> str:
    rule = "-" * 20
    if "service" in described:
        svc = described["service"]
        lines = _service_lines(svc, False)
        lines.append("Pods:")
        for p in svc["pods"]:
            subsets = f" (subsets: {', '.join(p['subsets'])})" if p["subsets"] else ""
            lines.append(f"   {p['name']}{subsets}")
        lines += _tail_lines(svc)
        return "\n".join(lines) + "\n"
    pod = described["pod"]
    lines = [
        f"Pod: {pod['name']}.{pod['namespace']}",
        f"   IP: {pod['ip'] or '-'}   Proxy: {pod['proxyType']}",
        f"   Identity: {pod['identity']}",
    ]
    for svc in described["services"]:
        lines.append(rule)
        lines += _service_lines(svc, True)
    if not described["services"]:
        lines += [rule, "Service: none selects this pod"]
    lines.append(rule)
    mtls = described["mtls"]
    lines.append("Effective PeerAuthentication:")
    modes = ", ".join(f"port {p}: {m}" for p, m in mtls["portModes"].items())
    lines.append(f"   Workload mTLS mode: {mtls['mode']}" + (f" ({modes})" if modes else ""))
    if mtls["policies"]:
        lines.append(f"   Applied PeerAuthentication: {', '.join(mtls['policies'])}")
    authz = described["authorization"]
    if authz:
        lines.append("AuthorizationPolicies:")
        for action, keys in authz.items():
            lines.append(f"   {action}: {', '.join(keys)}")
    else:
        lines.append("AuthorizationPolicies: none (all requests allowed)")
    if described["requestAuthentication"]:
        lines.append(f"RequestAuthentication: {', '.join(described['requestAuthentication'])}")
    lines.append(f"Sidecar: {described['sidecar'] or 'none (sees every exported service)'}")
    outbound = described["outbound"]
    shown = ", ".join(outbound[:10]) + (
        f", ... ({len(outbound)} in all)" if len(outbound) > 10 else ""
    )
    lines.append(f"   Outbound services: {shown or 'none'}")
    telemetry = described.get("telemetry")
    if telemetry is not None:
        applied = ", ".join(telemetry["resources"]) or "none"
        lines.append(f"Telemetry: {applied}")
        for side in ("outbound", "inbound"):
            logs = ", ".join(telemetry[side]["accessLogs"]) or "none"
            traced = telemetry[side]["tracing"] or "off"
            lines.append(f"   {side}: access logs {logs}; tracing {traced}")
    for entry in described["gatewayRoutes"]:
        lines.append(f"Gateway: {entry['gateway']}")
        for server in entry["servers"]:
            hosts = ", ".join(server["hosts"])
            lines.append(f"   server {server['port']}/{server['protocol']}: {hosts}")
        for vs in entry["virtualServices"]:
            _, *routes = _route_lines({**vs, "shadowed": []}, False)
            lines.append(f"   VirtualService: {vs['resource']} (hosts: {', '.join(vs['hosts'])})")
            lines += ["   " + line for line in routes]
        if not entry["virtualServices"]:
            lines.append("   WARNING: no VirtualService is bound to this Gateway")
    lines += _tail_lines(described)
    return "\n".join(lines) + "\n"
