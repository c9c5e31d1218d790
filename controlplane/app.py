"""The composition root: a ``ControlPlane`` is options plus a source, every part started and
stopped on one ``AsyncExitStack``.

File mode (`controlplane serve`, ``sources.files.DirectorySource``) and cluster mode
(`controlplane run`, ``sources.kube.cluster.ClusterSource``) differ only in the source they
hand it; the source brings its own extras (a directory watcher; the kopf thread, webhooks
and peering). What starts, and in which order, is declared once, in ``ControlPlane._parts``;
teardown runs in the reverse order, also when a later part fails to start:

    store, context-issue logger  (built before anything else)
    source.open                  load what exists: a scan, or the cluster connection
    the xDS side                 compiled-config cache, ADS server, debug server, mesh CA
    1 publishing (the cache's debounce)  2 xDS port  3 debug port  4 certificate rotation
    5 status writer  6 source extras

Everything that knows how the xDS side is built (the hub, the servers, how security plugs
into them) sits in one section below, ``_xds_side``. The command line (``controlplane.cli``)
only builds ``Options`` and a source and calls ``ControlPlane.run``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import grpc
from aiohttp import web

from controlplane.api.issues import Issue, Level, ResourceKey
from controlplane.api.mesh import DEFAULT_TRUST_DOMAIN, MESH_CONFIG_KEY, MESH_CONFIG_KIND
from controlplane.ca import (
    CAError,
    CertificateAuthority,
    DirectoryKeyStore,
    Identity,
    KeyStore,
    issue_token,
)
from controlplane.ca.authority import CLOCK_SKEW
from controlplane.ca.bundle import CABundle
from controlplane.ca.rotation import certificate_renewal_time
from controlplane.ca.service import CertificateServicer
from controlplane.cache import (
    CacheMux,
    CompiledCache,
    GatewayCredentials,
    SecretCache,
    XdsMetrics,
)
from controlplane.cache.ca_guard import CaGuard
from controlplane.cache.interface import SECRET
from controlplane.compile.check import check_resource
from controlplane.sources import MeshCa
from controlplane.sources.jwks import (
    DEFAULT_EVICTION,
    DEFAULT_REFRESH_INTERVAL,
    DEFAULT_RETRY_INTERVAL,
    JwksFetcher,
)
from controlplane.status.gatewayapi import (
    GatewayApiStatusWriter,
    KubernetesGatewayApiStatusClient,
)
from controlplane.status.programmed import ProgrammedTracker
from controlplane.status.writer import MemoryStatusClient, StatusClient, StatusWriter
from controlplane.store import ChangeSet, ResourceStatus, Snapshot, Store, found_by_store
from controlplane.store.liveness import DEFAULT_STALL_AFTER, WatchLiveness
from controlplane.web import DebugPage
from controlplane.web.page import Conditions, status_conditions
from controlplane.xds.debug import DebugServer
from controlplane.xds.identity import (
    DEFAULT_AUDIENCE,
    DEFAULT_TOKEN_TTL,
    TokenAuthenticator,
    TokenVerifier,
    bearer_token,
    control_plane_tokens,
)
from controlplane.xds.progress import proxy_progress
from controlplane.xds.server import XdsServer

log = logging.getLogger("controlplane")


@dataclass(frozen=True)
class Options:
    """What the control plane serves, and where (both modes; a source adds its own)."""

    host: str = "127.0.0.1"
    xds_port: int = 15010
    debug_port: int = 15014
    # The debug port binds loopback unless told otherwise (in a pod: the probes and
    # Prometheus need it; /debug/* still answers loopback clients or the token only).
    debug_host: str = "127.0.0.1"
    debug_token: str | None = None  # lets a remote client read /debug/* (Bearer)
    debounce: float = 0.1  # quiet period before a push (s)
    max_delay: float = 10.0  # longest a push may wait (s)
    endpoint_max_delay: float = 1.0  # longest a push of endpoint changes alone may wait (s)
    # The mesh CA, when the source names one. Its trust domain: this, or (None) the mesh
    # config's ``trustDomain`` as the source read it at start (istiod's), else cluster.local.
    trust_domain: str | None = None
    workload_cert_ttl: float = 24 * 3600.0
    require_token: bool = False
    token_audience: str = DEFAULT_AUDIENCE
    xds_tls: bool = False  # serve xDS over TLS with a certificate of the mesh CA
    # RequestAuthentication jwksUri key sets: how often a good one is fetched again, and the
    # first wait before retrying a failed fetch (doubling up to the refresh interval).
    jwks_refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    jwks_retry_interval: float = DEFAULT_RETRY_INTERVAL
    jwks_eviction: float = DEFAULT_EVICTION  # a key set not refreshed this long is dropped
    # A source watch with no event and no in-step listing this long fails /healthz.
    watch_stall_after: float = DEFAULT_STALL_AFTER
    # The Programmed condition (status/programmed.py): off only to measure what it costs.
    programmed: bool = True


class Source(Protocol):
    """What the control plane asks of a source (``controlplane.sources``), in this order."""

    async def open(self, store: Store) -> None:
        """Connect and load what exists into ``store``, before anything serves."""

    def ready(self) -> bool:
        """Whether the store holds the whole mesh yet (the debug port's /ready)."""

    def mesh_ca(self) -> MeshCa | None:
        """Where the mesh CA lives; None: no CA, SDS or proxy authentication."""

    def status_client(self) -> StatusClient | None:
        """Where status goes; None: nothing is written back."""

    def is_leader(self) -> bool:
        """Whether this replica writes status now."""

    def running(self) -> AbstractAsyncContextManager[None]:
        """The source's extras, started on entry and stopped on exit."""

    def announce(self, host: str, xds_port: int, debug_port: int, debug_host: str) -> None:
        """Log the one line that says the control plane serves."""

    async def wait(self) -> None:
        """Return when the source stops on its own (a failure); never for most."""

    def exit_code(self) -> int:
        """The process's exit status once everything stopped."""


class ControlPlane:
    """The store, the xDS side and the source's extras, started and stopped together.

    ``async with ControlPlane(options, source):`` serves until the block ends; ``run()``
    serves until SIGINT or SIGTERM (or until the source stops on its own) and returns the
    process's exit status.
    """

    def __init__(self, options: Options, source: Source) -> None:
        self.options = options
        self.source = source
        self.store = Store(compile_check=check_resource)
        self.xds: XdsSide | None = None  # once started
        self._stack: AsyncExitStack | None = None

    def _parts(self, side: XdsSide) -> list[Callable[[], AbstractAsyncContextManager[None]]]:
        """Everything that runs, in start order; each stops after those started later."""
        return [
            side.publishing,
            side.serving_xds,
            side.serving_debug,
            side.tracking_programmed,
            side.rotating_certificates,
            self._writing_status,
            self._fetching_jwks,
            self.source.running,
        ]

    async def start(self) -> None:
        ContextIssueLogger(self.store)
        await self.source.open(self.store)
        self.options = dataclasses.replace(
            self.options, trust_domain=_trust_domain(self.options, self.store)
        )
        side = self.xds = await _xds_side(
            self.options,
            self.store,
            self.source.mesh_ca(),
            self.source.ready,
            getattr(self.source, "liveness", None),
        )
        async with AsyncExitStack() as stack:
            for part in self._parts(side):
                await stack.enter_async_context(part())
            self._stack = stack.pop_all()  # started: stop() unwinds it
        self._post_ca_findings(side)
        self.source.announce(
            self.options.host, side.xds_port, side.debug_port, self.options.debug_host
        )

    def _post_ca_findings(self, side: XdsSide) -> None:
        """In cluster mode, a root close to expiry is also a Warning Event on the CA's
        Secret (written by the leader, as status is)."""
        client = self.source.status_client()
        guard = side.security.guard if side.security is not None else None
        keystore = guard.keystore if guard is not None else None
        namespace = getattr(keystore, "namespace", None)
        if client is None or guard is None or namespace is None:
            return
        source = self.source

        def post(issue: Issue) -> None:
            if not source.is_leader():
                return
            name = str(getattr(keystore, "source", None) or "cacerts")
            event = ca_expiry_event(namespace, name, issue)
            try:
                client.create_event(namespace, event)
            except Exception as exc:  # an Event is advice; the log line and metric remain
                log.warning("posting the root expiry Event failed: %s", exc)

        def on_finding(issue: Issue) -> None:
            asyncio.get_running_loop().run_in_executor(None, post, issue)

        guard.on_finding = on_finding
        if guard.finding is not None:
            guard.on_finding(guard.finding)

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def run(self) -> int:
        """Serve until SIGINT/SIGTERM or until the source stops; return the exit status."""
        async with self:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await _first_of(stop.wait(), self.source.wait())
            finally:
                log.info("shutting down")
        return self.source.exit_code()

    def _fetching_jwks(self) -> AbstractAsyncContextManager[None]:
        """The key sets RequestAuthentications name by jwksUri, fetched and kept fresh."""
        fetcher = JwksFetcher(
            self.store,
            self.options.jwks_refresh_interval,
            self.options.jwks_retry_interval,
            self.options.jwks_eviction,
        )
        return fetcher.running()

    @asynccontextmanager
    async def _writing_status(self) -> AsyncIterator[None]:
        """Status back onto resources, where the source keeps them (only while leading)."""
        client = self.source.status_client()
        programmed = self.xds.programmed if self.xds is not None else None
        if client is None and programmed is None:
            yield
            return
        if client is None:
            # File mode: the statuses a cluster would get, kept in memory (and counted).
            client = MemoryStatusClient()
        writer = StatusWriter(self.store, client, self.source.is_leader, programmed=programmed)
        if self.xds is not None:
            self.xds.status_writer = writer
        writer.start()
        # part "gwapi": the Gateway API status (the specification's own shape).
        api_client = getattr(client, "api_client", None)
        gateway_api = None
        if api_client is not None:
            gateway_api = GatewayApiStatusWriter(
                self.store, KubernetesGatewayApiStatusClient(api_client), self.source.is_leader
            )
            gateway_api.start()
        try:
            yield
        finally:
            if gateway_api is not None:
                await gateway_api.stop()
            await writer.stop()


def ca_expiry_event(namespace: str, secret: str, issue: Issue) -> dict[str, Any]:
    """A Warning Event on the Secret holding the mesh CA, naming the finding."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{secret}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Secret",
            "name": secret,
            "namespace": namespace,
        },
        "reason": issue.code.title,
        "message": f"[{issue.code.id}] {issue.field_message}",
        "type": "Warning",
        "source": {"component": "controlplane"},
        "reportingComponent": "controlplane",
        "reportingInstance": "controlplane",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _trust_domain(options: Options, store: Store) -> str:
    """The mesh CA's trust domain, decided once at start (certificates carry it): the
    ``--trust-domain`` option when given, else the mesh config's ``trustDomain``. A later
    change of the mesh config's is logged, not applied: it takes a restart (and new
    certificates), as the CA's root names it. Authorization reads ``snapshot.mesh`` (the
    trust domain and its aliases) and follows the mesh config at once."""
    mesh = store.snapshot.mesh
    chosen = options.trust_domain or mesh.trust_domain
    if options.trust_domain and MESH_CONFIG_KEY in store.snapshot.of_kind(MESH_CONFIG_KIND):
        if options.trust_domain != mesh.trust_domain:
            log.warning(
                "--trust-domain %s overrides the mesh config's trustDomain %s for the mesh CA",
                options.trust_domain,
                mesh.trust_domain,
            )

    def changed(snapshot: Snapshot, change: ChangeSet) -> None:
        if MESH_CONFIG_KEY in change.changed and snapshot.mesh.trust_domain != chosen:
            log.warning(
                "the mesh config's trustDomain is now %s; the mesh CA keeps %s until a restart",
                snapshot.mesh.trust_domain,
                chosen,
            )

    store.subscribe(changed)
    return chosen


async def _first_of(*waits: Awaitable[object]) -> None:
    """Wait until one of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class ContextIssueLogger:
    """Logs, once, each in-context problem the store finds (a source logs the rest)."""

    def __init__(self, store: Store) -> None:
        self._seen: dict[ResourceKey, frozenset[Issue]] = {}
        store.subscribe(self._on_change)

    def _on_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        for key in change.status_changed | change.changed:
            status = snapshot.status.get(key)
            issues = frozenset(i for i in (status.issues if status else ()) if found_by_store(i))
            before = self._seen.get(key, frozenset())
            for issue in sorted(issues - before, key=str):
                located = issue.with_context(None, status.origin if status else None)
                suffix = ""
                if issue.severity is Level.ERROR and status is not None and not status.reconciled:
                    suffix = " (keeping the last good version)"
                level = logging.ERROR if issue.severity is Level.ERROR else logging.WARNING
                log.log(level, "%s%s", located, suffix)
            for issue in sorted(before - issues, key=str):
                log.info(
                    "resolved: %s", issue.with_context(None, status.origin if status else None)
                )
            if issues:
                self._seen[key] = issues
            else:
                self._seen.pop(key, None)


# ---------------------------------------------------------------------------------------------
# The xDS side: the only code that knows how the hub, the ADS server, the debug server and the
# mesh's security (CA, SDS, proxy authentication, CertificateService, TLS on the xDS port) are
# constructed and joined. ``_xds_side`` builds it; ``XdsSide`` starts and stops its parts.
# ---------------------------------------------------------------------------------------------


@dataclass
class XdsSide:
    """The ADS server, the debug server and the certificate rotation, each a part to run."""

    options: Options
    hub: CompiledCache
    server: XdsServer
    debug: DebugServer
    security: MeshSecurity | None = None
    credentials: grpc.ServerCredentials | None = None
    programmed: ProgrammedTracker | None = None
    status_writer: StatusWriter | None = None  # once writing
    xds_port: int = 0  # as bound, once serving
    debug_port: int = 0

    @asynccontextmanager
    async def publishing(self) -> AsyncIterator[None]:
        """The compiled-config cache follows the store (debounced) until the end."""
        self.hub.start()
        try:
            yield
        finally:
            await self.hub.stop()

    @asynccontextmanager
    async def serving_xds(self) -> AsyncIterator[None]:
        self.xds_port = await self.server.start(
            self.options.host, self.options.xds_port, self.credentials
        )
        try:
            yield
        finally:
            await self.server.stop(grace=0.5)

    @asynccontextmanager
    async def serving_debug(self) -> AsyncIterator[None]:
        self.debug_port = await self.debug.start(self.options.debug_host, self.options.debug_port)
        try:
            yield
        finally:
            await self.debug.stop()

    @asynccontextmanager
    async def tracking_programmed(self) -> AsyncIterator[None]:
        """The Programmed verdict of every resource, kept current from the proxies' ACKs."""
        tracker = self.programmed
        if tracker is None:
            yield
            return
        tracker.start()
        try:
            yield
        finally:
            await tracker.stop()

    @asynccontextmanager
    async def rotating_certificates(self) -> AsyncIterator[None]:
        security = self.security
        if security is None:
            yield
            return
        security.start()
        try:
            yield
        finally:
            await security.stop()


def _export_liveness(liveness: WatchLiveness, metrics: XdsMetrics) -> None:
    metrics.gauge(
        "controlplane_watch_last_refresh_age_seconds",
        "Seconds since each source watch delivered an event or was proved in step by a listing.",
        lambda: {(kind,): age for kind, age in liveness.ages().items()},
        ("kind",),
    )

    def stalled() -> dict[tuple[str, ...], float]:
        now_stalled = liveness.stalled()
        return {(kind,): float(kind in now_stalled) for kind in liveness.ages()}

    metrics.gauge(
        "controlplane_watch_stalled",
        "1 for a watch with no event and no in-step listing within the stall limit.",
        stalled,
        ("kind",),
    )


async def _xds_side(
    options: Options,
    store: Store,
    ca: MeshCa | None,
    ready: Callable[[], bool],
    liveness: WatchLiveness | None = None,
) -> XdsSide:
    """The compiled-config cache, the ADS server and the debug server over ``store``, with
    the mesh CA of ``ca`` wired in (certificates over SDS, proxies authenticated,
    CertificateService, optional TLS)."""
    metrics = XdsMetrics()
    hub = CompiledCache(
        store,
        debounce=options.debounce,
        max_delay=options.max_delay,
        endpoint_max_delay=options.endpoint_max_delay,
        metrics=metrics,
    )
    security = await _mesh_security(options, ca)
    if security is None:
        server = XdsServer(CacheMux(hub), metrics=metrics)
    else:
        # Gateway credentials (credentialName Secrets) need a proved identity: served only
        # with the mesh CA on, as istiod serves them only to verified proxies.
        security.provider.serve_credentials(GatewayCredentials(store))
        server = XdsServer(
            CacheMux(hub, {SECRET: security.provider}),
            authenticator=security.authenticator,
            metrics=metrics,
            services=[security.certificates],
        )
    debug = DebugServer(
        server,
        hub,
        ready=ready,
        debug_token=options.debug_token,
        stalled=liveness.stalled if liveness is not None else dict,
    )
    if liveness is not None:
        liveness.stall_after = options.watch_stall_after
        _export_liveness(liveness, metrics)
    if security is not None:
        _watch_ca(security, metrics, debug)
    side = XdsSide(options, hub, server, debug, security)
    if options.programmed:
        side.programmed = _programmed(store, hub, server, debug, metrics)
    # /debug/ui: the page to look at, behind the same access rules; it shows the conditions the
    # status writer puts on each resource, Programmed included.
    DebugPage.install(debug, _page_conditions(side.programmed))
    metrics.gauge(
        "controlplane_status_writes_total",
        "Status writes made (file mode: that a cluster would get), by the status writer.",
        lambda: {(): float(side.status_writer.writes if side.status_writer else 0)},
    )
    if security is not None and options.xds_tls:
        side.credentials = security.server_credentials()
    return side


def _watch_ca(security: MeshSecurity, metrics: XdsMetrics, debug: DebugServer) -> None:
    """istiod's citadel_server_* metrics, the expiry of every certificate, and the CA's
    findings on the debug port (``/debug/ca``)."""
    istio = metrics.istio
    counters = {
        "csr": istio.citadel_csrs,
        "issued": istio.citadel_issued,
        "error": istio.citadel_csr_errors,
        "auth_failure": istio.citadel_auth_failures,
    }
    security.certificates.observe = lambda event: counters[event].inc()
    guard = security.guard
    if guard is None:
        return
    guard.register(metrics)
    debug.add_json("/debug/ca", guard.describe)


def _page_conditions(tracker: ProgrammedTracker | None) -> Conditions:
    """A resource's conditions for the debug page: the status writer's, and Programmed."""

    def found(key: ResourceKey, status: ResourceStatus) -> list[dict[str, Any]]:
        out = status_conditions(key, status)
        verdict = tracker.verdicts.get(key) if tracker is not None else None
        return out if verdict is None else [*out, verdict.condition()]

    return found


def _programmed(
    store: Store, hub: CompiledCache, server: XdsServer, debug: DebugServer, metrics: XdsMetrics
) -> ProgrammedTracker:
    """The Programmed tracker over the proxies' progress, on the debug port
    (``/debug/programmed``, ``?resource=KIND/NAMESPACE/NAME``) and in the metrics."""
    delivery = server.delivery
    tracker = ProgrammedTracker(store, hub, lambda: proxy_progress(delivery))
    delivery.progress_listeners.append(tracker.poke)

    async def programmed(request: web.Request) -> web.Response:
        wanted = request.query.get("resource")
        if wanted:
            parts = wanted.split("/")
            if len(parts) != 3:
                return web.json_response(
                    {"error": "resource must be KIND/NAMESPACE/NAME"}, status=400
                )
            verdict = tracker.find(*parts)
            if verdict is None:
                return web.json_response({"error": f"no resource {wanted}"}, status=404)
            return web.json_response(verdict.as_json(ResourceKey(*parts)))
        return web.json_response({"resources": tracker.as_json()})

    debug.extra_routes.add_get("/debug/programmed", programmed)
    debug.status_extras = lambda: {
        str(k): {
            "status": v.programmed,
            "reason": v.reason,
            "message": v.message,
            "generation": v.generation,
        }
        for k, v in tracker.verdicts.items()
    }

    def pending() -> dict[tuple[str, ...], float]:
        return {
            (k.kind, k.namespace, k.name): float(v.pending)
            for k, v in tracker.verdicts.items()
            if not v.programmed and v.pending
        }

    metrics.gauge(
        "controlplane_programmed_pending_proxies",
        "Affected proxies that have not ACKed a resource's current generation (only resources "
        "not Programmed).",
        pending,
        ("kind", "namespace", "name"),
    )
    metrics.gauge(
        "controlplane_resource_nacks_total",
        "NACKs attributed to an Istio resource (the resource that produced what Envoy "
        "refused), by kind.",
        lambda: {(kind,): float(n) for kind, n in tracker.attributed.items()},
        ("kind",),
    )
    metrics.gauge(
        "controlplane_programmed_evaluation_seconds_total",
        "CPU time spent computing the Programmed condition.",
        lambda: {(): tracker.evaluation_seconds},
    )
    return tracker


async def _mesh_security(options: Options, ca: MeshCa | None) -> MeshSecurity | None:
    """The mesh CA of ``ca``, its SDS cache and the proxies' authenticator; None without a
    CA, or when it cannot load and the source chose to serve without one."""
    if ca is None:
        return None
    verify = None
    if ca.token_review is not None:
        verify = _token_review_verifier(
            ca.token_review, options.token_audience, options.trust_domain or DEFAULT_TRUST_DOMAIN
        )
    try:
        # Loading the CA may call the apiserver (its Secrets): off the loop.
        return await asyncio.to_thread(
            enable_security,
            ca_dir=ca.keystore,
            trust_domain=options.trust_domain or DEFAULT_TRUST_DOMAIN,
            workload_ttl=options.workload_cert_ttl,
            require_token=options.require_token,
            audience=options.token_audience,
            verify=verify,
        )
    except Exception as exc:  # the source says whether to stop or serve without a CA
        ca.on_error(exc)
        return None


# The control plane's own identity, for the certificate it serves xDS with.
CONTROL_PLANE_NAMESPACE = "istio-system"
CONTROL_PLANE_ACCOUNT = "controlplane"


@dataclass
class MeshSecurity:
    """The mesh CA and what the xDS server is built with when it is on: the SDS cache
    (``provider``, routed the Secret type), the authenticator, and the CertificateService
    to serve on the xDS port."""

    ca: CertificateAuthority
    provider: SecretCache
    verify: TokenVerifier
    audience: str
    authenticator: TokenAuthenticator
    certificates: CertificateServicer
    guard: CaGuard | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS for the xDS port, with a certificate of the mesh CA (clients need no cert).

        Dynamic: a handshake after the CA was replaced (a root rotation's step) or after the
        certificate's renewal time gets a certificate of the CA in service."""
        identity = Identity(self.ca.trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT)

        def issue() -> tuple[CertificateAuthority, datetime, Any]:
            ca = self.ca
            cert = ca.issue(identity, ca.max_workload_ttl)
            config = grpc.ssl_server_certificate_configuration(
                [(cert.private_key_pem.encode(), cert.cert_chain_pem.encode())]
            )
            return ca, certificate_renewal_time(cert), config

        current = issue()

        def fetch() -> Any:
            nonlocal current
            if self.ca is current[0] and datetime.now(UTC) < current[1]:
                return None  # gRPC keeps the configuration it has
            current = issue()
            return current[2]

        return grpc.dynamic_ssl_server_credentials(current[2], fetch)

    def replaced(self, ca: CertificateAuthority) -> None:
        """The CA guard reloaded the CA: sign CSRs and the xDS port's certificate with it."""
        self.ca = ca
        self.certificates.replace_authority(ca)

    def start(self) -> None:
        """Start renewing certificates (on the running loop)."""
        self.tasks.append(asyncio.create_task(self.provider.rotate(), name="cert-rotation"))
        if self.guard is not None:
            self.tasks.append(asyncio.create_task(self.guard.run(), name="ca-guard"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass


def load_ca(store: KeyStore | Path, trust_domain: str, workload_ttl: float) -> CertificateAuthority:
    """The CA kept in ``store`` (a directory or a KeyStore; created on first start), issuing
    ``workload_ttl`` leaves."""
    if isinstance(store, Path):
        store = DirectoryKeyStore(store)
    ttl = timedelta(seconds=workload_ttl)
    # Back-dating by a minute would put a short-lived certificate's half-life in the past.
    skew = min(CLOCK_SKEW, ttl / 10)
    return CertificateAuthority.load_or_create(
        store, trust_domain=trust_domain, workload_ttl=ttl, clock_skew=skew
    )


def enable_security(
    *,
    ca_dir: Path | KeyStore,
    trust_domain: str = "cluster.local",
    workload_ttl: float = 24 * 3600.0,
    require_token: bool = False,
    audience: str = DEFAULT_AUDIENCE,
    verify: TokenVerifier | None = None,
) -> MeshSecurity:
    """The CA, the SDS cache, the proxies' authenticator and the CertificateService, for
    building the xDS server with. ``ca_dir`` is where the CA lives (a directory, or a
    KeyStore such as ``SecretKeyStore``); ``verify`` defaults to this CA's own bootstrap
    tokens. Call ``start()`` on the result once the loop runs."""
    keystore: KeyStore = DirectoryKeyStore(ca_dir) if isinstance(ca_dir, Path) else ca_dir
    ca = load_ca(keystore, trust_domain, workload_ttl)
    token_keys = [ca.token_key]  # every CA key served since start, newest last
    if verify is None:
        verify = _tokens_of_any_key(token_keys, audience)
    provider = SecretCache(ca)
    authenticator = TokenAuthenticator(
        verify, trust_domain=trust_domain, require_token=require_token
    )

    def authenticate(context: Any) -> Identity:
        metadata = {str(k): str(v) for k, v in (context.invocation_metadata() or ())}
        token = bearer_token(metadata)
        if token is None:
            raise CAError("no bearer token in the call's metadata")
        return verify(token)

    ttl = timedelta(seconds=workload_ttl)

    def build(bundle: CABundle) -> CertificateAuthority:
        return CertificateAuthority(
            bundle,
            trust_domain=trust_domain,
            workload_ttl=ttl,
            clock_skew=min(CLOCK_SKEW, ttl / 10),
        )

    certificates = CertificateServicer(ca, authenticate)

    # A directory is cheap to re-read; a Secret is an apiserver call per replica.
    poll = 2.0 if isinstance(keystore, DirectoryKeyStore) else 10.0
    guard = CaGuard(provider, keystore, build, poll=poll)
    log.info(
        "mesh CA from %s: trust domain %s, workload certificates for %s%s",
        ca_dir,
        trust_domain,
        timedelta(seconds=workload_ttl),
        ", tokens required" if require_token else "",
    )
    security = MeshSecurity(ca, provider, verify, audience, authenticator, certificates, guard)

    def replaced(new: CertificateAuthority) -> None:
        security.replaced(new)
        # After a root rotation `controlplane bootstrap` signs tokens with the new key;
        # tokens of the old one (proxies reconnecting) still hold until they expire.
        if new.token_key not in token_keys:
            token_keys.append(new.token_key)

    guard.on_authority = replaced
    return security


def _tokens_of_any_key(keys: list[bytes], audience: str) -> TokenVerifier:
    """File mode's bootstrap tokens, signed with any CA key served since start (newest
    first); the refusal of the newest key is the one reported."""

    def verify(token: str) -> Identity:
        refusal: CAError | None = None
        for key in reversed(keys):
            try:
                return control_plane_tokens(key, audience)(token)
            except CAError as exc:
                refusal = refusal or exc
        assert refusal is not None
        raise refusal

    return verify


def enable_cluster_security(
    api_client: Any,
    *,
    namespace: str = "istio-system",
    trust_domain: str = "cluster.local",
    audience: str = "istio-ca",
    workload_ttl: float = 24 * 3600.0,
    require_token: bool = True,
) -> MeshSecurity:
    """Cluster mode: the CA in the Secrets of ``namespace`` (``cacerts`` or
    ``istio-ca-secret``), proxies proved by their projected service-account tokens for
    ``audience``, checked with a TokenReview."""
    from controlplane.ca.secret_keystore import SecretKeyStore

    return enable_security(
        ca_dir=SecretKeyStore(api_client, namespace),
        trust_domain=trust_domain,
        workload_ttl=workload_ttl,
        require_token=require_token,
        audience=audience,
        verify=_token_review_verifier(api_client, audience, trust_domain),
    )


def _token_review_verifier(api_client: Any, audience: str, trust_domain: str) -> TokenVerifier:
    from controlplane.xds.identity import TokenReviewVerifier, kubernetes_token_review

    return TokenReviewVerifier(
        kubernetes_token_review(api_client), audience=audience, trust_domain=trust_domain
    )


def obtain_token(
    ca_dir: Path,
    namespace: str,
    service_account: str,
    *,
    trust_domain: str = "cluster.local",
    audience: str = DEFAULT_AUDIENCE,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
) -> str:
    """A bootstrap token for ``namespace/service_account``, signed with the CA in ``ca_dir``.

    Whoever can read the CA directory can mint tokens; that is the operator running the
    control plane, who is also the one starting its proxies in file mode.
    """
    bundle = DirectoryKeyStore(ca_dir).load()
    if bundle is None:
        raise SystemExit(
            f"controlplane bootstrap: no CA in {ca_dir}; start `controlplane serve --ca-dir "
            f"{ca_dir}` first (it creates one)"
        )
    ca = CertificateAuthority(bundle, trust_domain=trust_domain)
    return issue_token(
        ca.token_key, namespace, service_account, audience, ttl, trust_domain=trust_domain
    )


def control_plane_spiffe_id(trust_domain: str) -> str:
    """The URI SAN of the certificate the xDS port serves under ``--xds-tls``."""
    return Identity(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT).spiffe_id
