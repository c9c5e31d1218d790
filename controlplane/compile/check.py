"""Does one resource compile? The store's last check before a version replaces the last good.

``check_resource`` compiles what one VirtualService or DestinationRule becomes (the routes
and TCP/TLS chains of every service port it routes, the clusters of every service it
applies to) for a sidecar of its namespace, against the mesh the store is settling. Any
exception is a finding (``CP0307 CompileFailed``) naming the resource and, when it can be
narrowed down, the field (``spec.http[2]``, ``spec.subsets[0]``); the store then keeps the
last good version serving, and status and ``analyze`` say why. The generators keep a guard
of their own (``guarded``) for what this check cannot see (a failure on one proxy only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from controlplane.api.issues import Codes, Issue, ResourceKey
from controlplane.api.networking import DestinationRule, VirtualService
from controlplane.api.security import AuthorizationPolicy, PeerAuthentication
from controlplane.api.telemetry import Telemetry
from controlplane.compile.authn import resolve_mtls
from controlplane.compile.clusters import service_clusters
from controlplane.compile.http_routes import routes_from_virtual_service
from controlplane.compile.proxy import TRANSPARENT, Proxy
from controlplane.compile.rbac import WorkloadPolicies, http_rbac_filters, network_rbac_filters
from controlplane.compile.tcp import virtual_service_chains
from controlplane.compile.telemetry import access_logs, merge_tracing, tracing_settings
from controlplane.compile.telemetry_filters import access_log, hcm_tracing
from controlplane.compile.tls import UpstreamSecurity, secure_cluster
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import MergedDestinationRule, host_matches, resolve_host

log = logging.getLogger("controlplane.compile")

_REASON_LIMIT = 300


def check_resource(snapshot: SnapshotReader, resource: Any) -> list[Issue]:
    """``[]`` if ``resource`` compiles, else one CompileFailed finding (see module doc)."""
    if isinstance(resource, VirtualService):
        return _check(snapshot, resource, _compile_virtual_service, _virtual_service_parts)
    if isinstance(resource, DestinationRule):
        return _check(snapshot, resource, _compile_destination_rule, _destination_rule_parts)
    if isinstance(resource, AuthorizationPolicy):
        return _check(snapshot, resource, _compile_authorization_policy, _policy_rule_parts)
    if isinstance(resource, PeerAuthentication):
        return _check(snapshot, resource, _compile_peer_authentication, _no_parts)
    if isinstance(resource, Telemetry):  # part "telemetry"
        return _check(snapshot, resource, _compile_telemetry, _no_parts)
    return []


def compile_failure(key: ResourceKey, path: str, exc: BaseException) -> Issue:
    """The finding for ``exc`` raised while compiling ``path`` of ``key``."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > _REASON_LIMIT:
        text = text[:_REASON_LIMIT] + "..."
    return Issue(
        Codes.COMPILE_FAILED,
        path,
        f"compiling this resource failed ({text}); it is not applied, its last good version "
        "(if any) keeps serving",
        key,
    )


def key_of(resource: Any) -> ResourceKey:
    return ResourceKey(resource.kind, resource.metadata.namespace, resource.metadata.name)


_Compile = Callable[[SnapshotReader, Any], None]
_Parts = Callable[[Any], Iterator[tuple[str, Any]]]


def _check(
    snapshot: SnapshotReader, resource: Any, compile_: _Compile, parts: _Parts
) -> list[Issue]:
    try:
        compile_(snapshot, resource)
    except Exception as exc:  # noqa: BLE001 (any failure refuses the resource, never the mesh)
        path = ""
        # Narrow it down to one part of the spec: the first part that fails alone.
        for part_path, part in parts(resource):
            try:
                compile_(snapshot, part)
            except Exception:  # noqa: BLE001
                path = part_path
                break
        log.warning("%s: %s failed to compile", key_of(resource), path or "spec", exc_info=exc)
        return [compile_failure(key_of(resource), path, exc)]
    return []


def _sidecar(namespace: str) -> Proxy:
    return Proxy(
        node_id=f"compile-check~0.0.0.0~check.{namespace}~{namespace}.svc.cluster.local",
        namespace=namespace,
        mode=TRANSPARENT,
    )


def _services_for(snapshot: SnapshotReader, hosts: list[str], namespace: str) -> list[MeshService]:
    patterns = [resolve_host(h, namespace) for h in hosts]
    services = snapshot.services
    if not any("*" in p for p in patterns):
        # Exact hosts (the common case): looked up, not matched against every service, which
        # made checking the first listing quadratic (issue 14: 400 checks x 1,000 services).
        return [services[h] for h in sorted(set(patterns)) if h in services]
    return [
        svc
        for hostname, svc in sorted(services.items())
        if any(host_matches(p, hostname) for p in patterns)
    ]


def _compile_virtual_service(snapshot: SnapshotReader, vs: VirtualService) -> None:
    namespace = vs.metadata.namespace
    proxy = _sidecar(namespace)
    for service in _services_for(snapshot, vs.spec.hosts, namespace):
        for port in service.ports:
            if port.protocol == "UDP":
                continue
            if port.is_http:
                routes_from_virtual_service(snapshot, vs, port.port, proxy)
            else:
                for protocol in ("TCP", "TLS"):
                    virtual_service_chains(snapshot, vs, port.port, protocol, proxy, [], set())


def _virtual_service_parts(vs: VirtualService) -> Iterator[tuple[str, VirtualService]]:
    for section in ("http", "tcp", "tls"):
        for i, route in enumerate(getattr(vs.spec, section)):
            spec = vs.spec.model_copy(update={"http": [], "tcp": [], "tls": [], section: [route]})
            yield f"spec.{section}[{i}]", vs.model_copy(update={"spec": spec})


def _compile_destination_rule(snapshot: SnapshotReader, dr: DestinationRule) -> None:
    namespace = dr.metadata.namespace
    rule = MergedDestinationRule(
        host=resolve_host(dr.spec.host, namespace),
        namespace=namespace,
        traffic_policy=dr.spec.traffic_policy,
        subsets=tuple(dr.spec.subsets),
        sources=(key_of(dr),),
    )
    for service in _services_for(snapshot, [dr.spec.host], namespace):
        for cluster in service_clusters(service, rule):
            secure_cluster(cluster, rule, UpstreamSecurity(auto_mtls=False))


def _destination_rule_parts(dr: DestinationRule) -> Iterator[tuple[str, DestinationRule]]:
    if dr.spec.traffic_policy is not None:
        spec = dr.spec.model_copy(update={"subsets": []})
        yield "spec.trafficPolicy", dr.model_copy(update={"spec": spec})
    for i, subset in enumerate(dr.spec.subsets):
        spec = dr.spec.model_copy(update={"traffic_policy": None, "subsets": [subset]})
        yield f"spec.subsets[{i}]", dr.model_copy(update={"spec": spec})


def _compile_authorization_policy(snapshot: SnapshotReader, policy: AuthorizationPolicy) -> None:
    policies = WorkloadPolicies({policy.spec.action: (policy,)})
    http_rbac_filters(policies)
    network_rbac_filters(policies)


def _policy_rule_parts(
    policy: AuthorizationPolicy,
) -> Iterator[tuple[str, AuthorizationPolicy]]:
    for i, rule in enumerate(policy.spec.rules or ()):
        spec = policy.spec.model_copy(update={"rules": [rule]})
        yield f"spec.rules[{i}]", policy.model_copy(update={"spec": spec})


def _compile_peer_authentication(snapshot: SnapshotReader, pa: PeerAuthentication) -> None:
    namespace = pa.metadata.namespace
    selector = pa.spec.selector
    labels = dict(selector.match_labels) if selector is not None else {}
    mtls = resolve_mtls([pa], namespace, labels)
    for port in pa.spec.port_level_mtls:
        mtls.for_port(port)


def _no_parts(resource: Any) -> Iterator[tuple[str, Any]]:
    return iter(())


def _compile_telemetry(snapshot: SnapshotReader, telemetry: Telemetry) -> None:
    """The access logs and tracing this Telemetry alone gives each side."""
    mesh = snapshot.mesh
    spec = telemetry.spec
    merged = merge_tracing(mesh, spec.tracing)
    namespace = telemetry.metadata.namespace
    for mode in ("CLIENT", "SERVER"):
        for log in access_logs(mesh, [spec.access_logging], mode):
            access_log(log)
        settings = tracing_settings(
            mesh, snapshot.services, merged, mode, False, (namespace, {}, {})
        )
        if settings is not None:
            hcm_tracing(settings)
