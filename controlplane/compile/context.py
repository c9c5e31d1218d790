"""What every generator of one snapshot shares: the read-tracking view, the memo, and the
answers more than one xDS type needs (the services a namespace sees, a workload's
PeerAuthentication and AuthorizationPolicies, refused policies).

``SnapshotCompiler`` (``compile/compiler.py``) is a CompileContext that also knows the
generators; the generators (``cds``, ``eds``, ``lds``, ``rds``) take a CompileContext, so they
import nothing of each other or of the compiler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

from controlplane.api.mesh import DEFAULT_MESH, MESH_CONFIG_KEY, MeshConfig, MeshConfigSpec
from controlplane.api.networking import VirtualService
from controlplane.api.policy_scope import RefusedPolicy
from controlplane.api.request_authn import RequestAuthentication
from controlplane.api.security import AuthorizationPolicy, PeerAuthentication
from controlplane.api.sidecar import Sidecar
from controlplane.compile.authn import MtlsPolicy, resolve_mtls
from controlplane.compile.extauthz import provider_names, resolve_providers
from controlplane.compile.gateway import (
    MergedGateway,
    gateways_for,
    is_router,
    merge_gateways,
    port_translation,
)
from controlplane.compile.inbound import InboundPort
from controlplane.compile.inbound_security import InboundSecurity
from controlplane.compile.jwt import WorkloadJwt, resolve_jwt
from controlplane.compile.memo import Family, Memo, MemoKey
from controlplane.compile.proxy import ROUTER, Proxy
from controlplane.compile.rbac import WorkloadPolicies, policies_for
from controlplane.compile.scope import SidecarScope, scope_of, scoped_services, select_sidecar
from controlplane.compile.scope import root_namespace as mesh_root_namespace
from controlplane.compile.telemetry import WorkloadTelemetry, resolve_telemetry
from controlplane.compile.tracking import TrackedSnapshot
from controlplane.store.registry import MeshService
from controlplane.store.snapshot import Snapshot, exported_to
from controlplane.store.tokens import Token

_T = TypeVar("_T")


class CompileContext:
    """One snapshot as the generators see it.

    ``snapshot`` is the Snapshot itself; ``reads`` is the view every build reads through, so
    that what it read is recorded (``compile/tracking.py``); ``cached`` memoizes a build
    under a typed key (``compile/memo.py``).
    """

    def __init__(
        self,
        snapshot: Snapshot,
        previous: CompileContext | None = None,
        touched: frozenset[Token] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.reads = TrackedSnapshot(snapshot)
        self.memo: Memo = Memo(self.reads, previous.memo if previous is not None else None, touched)
        # Read from the snapshot itself: it shapes memo keys, not values, so it is no build's
        # dependency.
        self.uses_source_labels = any(
            m.source_labels
            for vs in snapshot.of_kind(VirtualService).values()
            for section in (vs.spec.http, vs.spec.tcp, vs.spec.tls)
            for route in section
            for m in route.match
        )

    @property
    def builds(self) -> int:
        """Memo misses: how much this compiler actually built."""
        return self.memo.builds

    def cached(self, key: MemoKey, build: Callable[[], _T]) -> _T:
        """The value built for ``key`` (see ``Memo.cached``)."""
        return self.memo.cached(key, build)

    _cached = cached  # the name the memo's tests use

    def memo_dependencies(self) -> Mapping[MemoKey, frozenset[Token]]:
        """Memo key -> the dependency tokens recorded for it (for tests and debugging)."""
        return self.memo.dependencies()

    def source_labels(self, proxy: Proxy) -> tuple[tuple[str, str], ...]:
        """The proxy's labels where some route matches on them (``sourceLabels``), else ():
        part of the key of everything routes shape."""
        return proxy.labels_key if self.uses_source_labels else ()

    # ---- services -----------------------------------------------------------------------

    def visible_services(self, namespace: str) -> tuple[MeshService, ...]:
        """The services a proxy in ``namespace`` sees (exportTo), by hostname."""

        def build() -> tuple[MeshService, ...]:
            return tuple(
                svc
                for host, svc in sorted(self.reads.services.items())
                if exported_to(svc.export_to, svc.namespace, namespace)
            )

        return self.memo.cached((Family.SERVICES, namespace), build)

    # ---- gateways ---------------------------------------------------------------------------

    def gateway_key(self, proxy: Proxy) -> tuple[Hashable, ...]:
        """What a router proxy's gateway config depends on besides the snapshot: its labels
        (which Gateways select it) and its Services' port translation."""
        return (proxy.labels_key, port_translation(self.reads, proxy), proxy.namespace)

    def merged_gateway(self, proxy: Proxy) -> MergedGateway:
        """The Gateways that select a router proxy, merged by port (compile/gateway.py)."""
        key: MemoKey = (Family.GATEWAY_MERGE, *self.gateway_key(proxy))

        def build() -> MergedGateway:
            return merge_gateways(
                gateways_for(self.reads, proxy), port_translation(self.reads, proxy)
            )

        return self.memo.cached(key, build)

    def sidecar_scope(self, proxy: Proxy) -> SidecarScope:
        """The scope the Sidecar in effect gives ``proxy`` (compile/scope.py). A gateway
        (router proxy) is never scoped by a Sidecar, as in istiod."""
        namespace = proxy.namespace
        if is_router(proxy):
            return SidecarScope(namespace)
        labels = proxy.labels_key
        key: MemoKey = (Family.SIDECAR_SCOPE, namespace, labels)

        def build() -> SidecarScope:
            sidecars = self.reads.of_kind(Sidecar).values()
            if not sidecars:
                return SidecarScope(namespace)
            root = mesh_root_namespace(self.reads)
            return scope_of(select_sidecar(sidecars, namespace, dict(labels), root), namespace)

        return self.memo.cached(key, build)

    def scoped_services(self, scope: SidecarScope) -> tuple[MeshService, ...]:
        """The services (only the ports imported) a proxy of ``scope`` sees, by hostname."""
        if not scope.scoped:
            return self.visible_services(scope.namespace)

        def build() -> tuple[MeshService, ...]:
            visible = self.visible_services(scope.namespace)
            return scoped_services(self.reads, scope, visible)

        return self.memo.cached((Family.SCOPED_SERVICES, scope), build)

    def services_for(self, proxy: Proxy) -> tuple[MeshService, ...]:
        """The services ``proxy`` sees: exported to its namespace and imported by its Sidecar."""
        return self.scoped_services(self.sidecar_scope(proxy))

    # ---- security: PeerAuthentication, AuthorizationPolicy --------------------------------

    def peer_authentication(self, namespace: str, labels: Mapping[str, str]) -> MtlsPolicy:
        """The workload's effective PeerAuthentication (compile/authn.py)."""
        key: MemoKey = (Family.PEER_AUTHENTICATION, namespace, tuple(sorted(labels.items())))

        def build() -> MtlsPolicy:
            return resolve_mtls(
                self.reads.of_kind(PeerAuthentication).values(),
                namespace,
                labels,
                rejected=self.rejected("PeerAuthentication"),
            )

        return self.memo.cached(key, build)

    def authorization_policies(self, namespace: str, labels: Mapping[str, str]) -> WorkloadPolicies:
        """The AuthorizationPolicies that select the workload (compile/rbac.py)."""
        key: MemoKey = (Family.AUTHORIZATION, namespace, tuple(sorted(labels.items())))

        def build() -> WorkloadPolicies:
            mesh = self.mesh()
            found = policies_for(
                self.reads.of_kind(AuthorizationPolicy).values(),
                namespace,
                labels,
                root_namespace=mesh.root_namespace,
                rejected=self.rejected("AuthorizationPolicy"),
                trust_domains=(mesh.trust_domain, *mesh.trust_domain_aliases),
            )
            names = provider_names(found.of("CUSTOM"))
            if not names:
                return found
            # CUSTOM: the providers they name, from the mesh config and the registry.
            providers = resolve_providers(self.reads.mesh, self.reads.services, names)
            return dataclasses.replace(found, providers=providers)

        return self.memo.cached(key, build)

    def request_authentication(self, namespace: str, labels: Mapping[str, str]) -> WorkloadJwt:
        """The JWT rules (and key sets) that apply to the workload (compile/jwt.py)."""
        key: MemoKey = (Family.REQUEST_AUTHENTICATION, namespace, tuple(sorted(labels.items())))

        def build() -> WorkloadJwt:
            return resolve_jwt(
                self.reads,
                self.reads.of_kind(RequestAuthentication).values(),
                namespace,
                labels,
                self.root_namespace(),
            )

        return self.memo.cached(key, build)

    def root_namespace(self) -> str:
        """The mesh config's rootNamespace (read, so that a change of it is seen)."""
        found: MeshConfig | None = self.reads.get(MESH_CONFIG_KEY)
        return (found or DEFAULT_MESH).spec.root_namespace

    def mesh(self) -> MeshConfigSpec:
        """The mesh config in effect, read through the tracking view (a change to it
        rebuilds what read it)."""
        found: MeshConfig | None = self.reads.get(MESH_CONFIG_KEY)
        return (found or DEFAULT_MESH).spec

    def rejected(self, kind: str) -> tuple[RefusedPolicy, ...]:
        """Refused policies of ``kind`` with no good version, each with the scope it would
        have had (security fails closed for exactly that scope)."""
        return self.memo.cached((Family.REJECTED, kind), lambda: self.reads.rejected(kind))

    def inbound_security(self, proxy: Proxy, port: InboundPort | None) -> InboundSecurity:
        """The mTLS mode and policies of one inbound port (None: ports no Service declares)."""
        mtls = self.peer_authentication(proxy.namespace, proxy.labels)
        policies = self.authorization_policies(proxy.namespace, proxy.labels)
        mode = mtls.mode if port is None else mtls.for_port(port.target_port)
        jwt = self.request_authentication(proxy.namespace, proxy.labels)
        return InboundSecurity.of(mode, bool(proxy.identity), policies, jwt)

    # ---- telemetry (part "telemetry") -----------------------------------------------------

    def telemetry(self, proxy: Proxy) -> WorkloadTelemetry:
        """What the proxy's listeners log and trace, per side (compile/telemetry.py)."""
        router = proxy.proxy_type == ROUTER
        # Node metadata (MESH_ID, CLUSTER_ID for Istio's tags) is not read, and the labels
        # only when some Telemetry could select by them or tracing (whose Istio tags name the
        # canonical service) may be on: proxies that differ only in what is not read keep
        # sharing one shape (cache/shapes.py). Decided from the snapshot itself, like
        # ``uses_source_labels``: it shapes the key, not the value.
        metadata: dict[str, str] = {}
        labels = proxy.labels if self._telemetry_reads_labels(proxy.namespace) else {}
        key: MemoKey = (
            Family.TELEMETRY,
            proxy.namespace,
            tuple(sorted(labels.items())),
            router,
        )

        def build() -> WorkloadTelemetry:
            return resolve_telemetry(
                self.reads,
                proxy.namespace,
                labels,
                self.root_namespace(),
                router,
                metadata,
                lambda: {s.hostname: s for s in self.services_for(proxy)},
            )

        return self.memo.cached(key, build)

    def _telemetry_reads_labels(self, namespace: str) -> bool:
        mesh = self.snapshot.mesh
        if mesh.enable_tracing or mesh.default_providers.tracing:
            return True
        local = self.snapshot.in_namespace("Telemetry", namespace)
        root = self.snapshot.in_namespace("Telemetry", mesh.root_namespace)
        return any(not t.spec.namespace_wide for t in local) or any(
            t.spec.tracing for t in (*local, *root)
        )
