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
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import grpc

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
from controlplane.ca.service import CertificateServicer
from controlplane.cache import (
    CacheMux,
    CompiledCache,
    GatewayCredentials,
    SecretCache,
    XdsMetrics,
)
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
from controlplane.status.writer import StatusClient, StatusWriter
from controlplane.store import ChangeSet, Snapshot, Store, found_by_store
from controlplane.xds.debug import DebugServer
from controlplane.xds.identity import (
    DEFAULT_AUDIENCE,
    DEFAULT_TOKEN_TTL,
    TokenAuthenticator,
    TokenVerifier,
    bearer_token,
    control_plane_tokens,
)
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
            self.options, self.store, self.source.mesh_ca(), self.source.ready
        )
        async with AsyncExitStack() as stack:
            for part in self._parts(side):
                await stack.enter_async_context(part())
            self._stack = stack.pop_all()  # started: stop() unwinds it
        self.source.announce(
            self.options.host, side.xds_port, side.debug_port, self.options.debug_host
        )

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
        if client is None:
            yield
            return
        writer = StatusWriter(self.store, client, self.source.is_leader)
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


async def _xds_side(
    options: Options, store: Store, ca: MeshCa | None, ready: Callable[[], bool]
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
    debug = DebugServer(server, hub, ready=ready, debug_token=options.debug_token)
    side = XdsSide(options, hub, server, debug, security)
    if security is not None and options.xds_tls:
        side.credentials = security.server_credentials()
    return side


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
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS for the xDS port, with a certificate of the mesh CA (clients need no cert)."""
        identity = Identity(self.ca.trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_ACCOUNT)
        cert = self.ca.issue(identity, self.ca.max_workload_ttl)
        return grpc.ssl_server_credentials(
            [(cert.private_key_pem.encode(), cert.cert_chain_pem.encode())]
        )

    def start(self) -> None:
        """Start renewing certificates (on the running loop)."""
        self.tasks.append(asyncio.create_task(self.provider.rotate(), name="cert-rotation"))

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
    ca = load_ca(ca_dir, trust_domain, workload_ttl)
    verify = verify or control_plane_tokens(ca.token_key, audience)
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

    certificates = CertificateServicer(ca, authenticate)
    log.info(
        "mesh CA from %s: trust domain %s, workload certificates for %s%s",
        ca_dir,
        trust_domain,
        timedelta(seconds=workload_ttl),
        ", tokens required" if require_token else "",
    )
    return MeshSecurity(ca, provider, verify, audience, authenticator, certificates)


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
