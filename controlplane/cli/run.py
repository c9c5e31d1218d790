"""`controlplane run`: the operator. kopf watches the cluster, the store compiles, xDS serves.

Two threads, one store:

* the main thread's asyncio loop owns the Store, the xDS server (ADS), the debug port and the
  status writer; every ``Store.apply`` happens here, so the (not thread-safe) store is only
  touched from one thread;
* a second thread runs kopf in a loop of its own: the watch operator (every replica; event
  handlers for the Istio kinds, Services, EndpointSlices, Pods and Namespaces, plus the
  admission webhooks) and, with peering, a handler-less operator that only takes part in
  kopf peering to choose the replica that writes status. Events reach the store through
  ``StoreBridge`` (``call_soon_threadsafe``).

kopf is kept out of the xDS loop because on stop it waits for every task created in its
loop (a grpc.aio server included); its own thread can be stopped on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.cache import CacheMux, CompiledCache, XdsMetrics
from controlplane.cache.interface import SECRET
from controlplane.cli.security import MeshSecurity, enable_cluster_security
from controlplane.cli.serve import ContextIssueLogger
from controlplane.inject.injector import InjectionConfig
from controlplane.sources.kube import (
    Resync,
    StoreBridge,
    Update,
    kubernetes_lister,
    register_watch_handlers,
)
from controlplane.status.leader import Leadership, new_priority
from controlplane.status.writer import KubernetesStatusClient, StatusWriter
from controlplane.store import Store
from controlplane.xds.debug import DebugServer
from controlplane.xds.server import XdsServer

log = logging.getLogger("controlplane")

PEERING_PLURAL = "clusterkopfpeerings"


@dataclass
class RunOptions:
    kubeconfig: Path | None = None
    host: str = "0.0.0.0"
    xds_port: int = 15010
    debug_port: int = 15014
    debounce: float = 0.1
    max_delay: float = 10.0
    # Admission webhooks (served only when a certificate is given).
    webhook_port: int = 9443
    webhook_address: str = "0.0.0.0"
    webhook_host: str | None = None  # host in the webhook URL (out of cluster)
    webhook_service: str | None = None  # "name.namespace" in cluster
    webhook_cert: Path | None = None
    webhook_key: Path | None = None
    webhook_ca: Path | None = None
    manage_webhooks: bool = False
    webhook_resync: float = 30.0  # how often the webhook configurations are checked (s)
    # Status and peering.
    peering: str | None = "controlplane"  # None: this replica always writes status
    write_status: bool = True
    # Injection.
    image: str = InjectionConfig.image
    sidecar_xds_address: str = InjectionConfig.xds_address
    token_audience: str = InjectionConfig.token_audience
    native_sidecar: str = "auto"  # auto | on | off
    # The mesh CA (Secrets in ca_namespace), SDS and proxy authentication by TokenReview.
    mesh_ca: bool = True
    ca_namespace: str = "istio-system"
    trust_domain: str = "cluster.local"
    workload_cert_ttl: float = 24 * 3600.0
    require_token: bool = False
    identity: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )


def _api_client(kubeconfig: Path | None) -> Any:
    from kubernetes import client, config

    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig))
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


def supports_native_sidecars(api_client: Any) -> bool:
    """Kubernetes >= 1.29 runs init containers with ``restartPolicy: Always`` as sidecars."""
    from kubernetes import client

    version = client.VersionApi(api_client).get_code()
    try:
        major = int(str(version.major).rstrip("+"))
        minor = int(str(version.minor).rstrip("+"))
    except ValueError:
        return False
    return (major, minor) >= (1, 29)


def ensure_peering_object(api_client: Any, name: str) -> bool:
    """kopf peering needs the ClusterKopfPeering object to exist; create it if absent.

    Returns False when the cluster has no ClusterKopfPeering CRD (peering is impossible).
    """
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        api.create_cluster_custom_object("kopf.dev", "v1", PEERING_PLURAL, body)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return False
        if exc.status != 409:
            raise
    return True


def apply_webhook_configurations(
    api_client: Any, client_config: Mapping[str, Any], only_if_changed: bool = False
) -> bool:
    """Create or replace both webhook configurations for ``client_config``.

    With ``only_if_changed``, a configuration whose webhooks already have these names and
    client configs (address and CA bundle) is left alone. Returns True if anything was written.
    """
    from kubernetes import client

    from controlplane.inject.webhooks import webhook_configurations

    api = client.AdmissionregistrationV1Api(api_client)
    validating, mutating = webhook_configurations(client_config)
    wrote = False
    for body, read, create, replace in (
        (
            validating,
            api.read_validating_webhook_configuration,
            api.create_validating_webhook_configuration,
            api.replace_validating_webhook_configuration,
        ),
        (
            mutating,
            api.read_mutating_webhook_configuration,
            api.create_mutating_webhook_configuration,
            api.replace_mutating_webhook_configuration,
        ),
    ):
        name = body["metadata"]["name"]
        try:
            current = read(name)
        except client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise
            create(body)
        else:
            existing = api_client.sanitize_for_serialization(current)
            if only_if_changed and _client_configs(existing) == _client_configs(body):
                continue
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            replace(name, body)
        wrote = True
        log.info("webhook configuration %s points at %s", name, _where(client_config))
    return wrote


def _client_configs(doc: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    return [(w.get("name"), w.get("clientConfig")) for w in doc.get("webhooks") or []]


def _where(client_config: Mapping[str, Any]) -> str:
    if "url" in client_config:
        return str(client_config["url"])
    service = client_config.get("service") or {}
    return f"service {service.get('namespace')}/{service.get('name')}:{service.get('port')}"


class KopfThread(threading.Thread):
    """kopf's operators in a thread (and event loop) of their own."""

    def __init__(
        self,
        options: RunOptions,
        bridge: StoreBridge,
        leadership: Leadership,
        injection: InjectionConfig,
        api_client: Any,
    ) -> None:
        super().__init__(name="kopf", daemon=True)
        self.options = options
        self.bridge = bridge
        self.leadership = leadership
        self.injection = injection
        self.api_client = api_client
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.webhook_config: dict[str, Any] | None = None  # as last written
        self.resync = Resync(self._submit, kubernetes_lister(api_client), delay=1.0)

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the main thread
            self.failed = exc
            log.exception("the kopf operator stopped")

    def _submit(self, update: Update) -> None:
        self.bridge.submit(update)

    async def _main(self) -> None:
        import kopf

        opts = self.options
        watch = kopf.OperatorRegistry()
        _login(watch)
        register_watch_handlers(
            watch,
            self._submit,
            on_peering=self.leadership.observe if opts.peering else None,
            peering_plural=PEERING_PLURAL,
            resync=self.resync,
        )
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # kopf's own per-object events: not for watch-only use
        settings.watching.connect_timeout = 5
        settings.watching.server_timeout = 120
        settings.watching.client_timeout = 150
        settings.watching.reconnect_backoff = 0.5
        settings.batching.batch_window = 0.01  # apply -> proxies latency matters here
        if opts.webhook_cert is not None and opts.webhook_key is not None:
            from controlplane.inject.admission import register_admission_handlers

            register_admission_handlers(watch, lambda: self.injection)
            settings.admission.server = self._webhook_server(kopf)
            settings.admission.managed = None
        operators = [
            kopf.operator(
                registry=watch,
                settings=settings,
                standalone=True,
                clusterwide=True,
                identity=opts.identity,
                stop_flag=self.stop_flag,
                ready_flag=self.ready,
            )
        ]
        if opts.peering:
            peering = kopf.OperatorRegistry()
            _login(peering)
            peer_settings = kopf.OperatorSettings()
            peer_settings.posting.enabled = False
            peer_settings.peering.lifetime = 15  # a dead leader is replaced within ~15 s
            operators.append(
                kopf.operator(
                    registry=peering,
                    settings=peer_settings,
                    clusterwide=True,
                    peering_name=opts.peering,
                    priority=new_priority(),
                    identity=opts.identity,
                    stop_flag=self.stop_flag,
                )
            )
        keeper = asyncio.create_task(self._keep_webhook_configurations())
        try:
            await asyncio.gather(*operators)
        finally:
            keeper.cancel()
            self.resync.cancel()

    async def _keep_webhook_configurations(self) -> None:
        """Put the webhooks' address and CA bundle back if something overwrote them (e.g. a
        new `kubectl apply -k manifests/`, whose copy has no CA bundle)."""
        while True:
            await asyncio.sleep(self.options.webhook_resync)
            config = self.webhook_config
            if config is None:
                continue
            try:
                await asyncio.to_thread(apply_webhook_configurations, self.api_client, config, True)
            except Exception as exc:  # the apiserver may be away; try again later
                log.warning("checking the webhook configurations failed: %s", exc)

    def _webhook_server(self, kopf: Any) -> Any:
        from controlplane.inject.webhooks import ConfiguringWebhookServer, in_cluster_client_config

        opts = self.options
        inner = kopf.WebhookServer(
            addr=opts.webhook_address,
            port=opts.webhook_port,
            host=opts.webhook_host,
            certfile=str(opts.webhook_cert),
            pkeyfile=str(opts.webhook_key),
            cafile=str(opts.webhook_ca) if opts.webhook_ca else None,
        )

        def rewrite(config: dict[str, Any]) -> dict[str, Any]:
            if not opts.webhook_service:
                return config
            name, _, namespace = opts.webhook_service.partition(".")
            return in_cluster_client_config(
                name, namespace or "istio-system", opts.webhook_port, config.get("caBundle")
            )

        async def sink(config: dict[str, Any]) -> None:
            if opts.manage_webhooks:
                await asyncio.to_thread(apply_webhook_configurations, self.api_client, config)
                self.webhook_config = config

        return ConfiguringWebhookServer(inner, sink, rewrite)


def _login(registry: Any) -> None:
    import kopf

    @kopf.on.login(registry=registry)  # type: ignore[untyped-decorator]
    def login(**kwargs: Any) -> Any:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            return kopf.login_with_service_account(**kwargs)
        return kopf.login_with_kubeconfig(**kwargs)


async def run(options: RunOptions) -> int:
    """Run the operator until SIGINT/SIGTERM; returns the exit code."""
    # One line per watch event is too much with thousands of Pods; failures still show.
    for name in ("kopf.objects", "kopf.activities", "kopf._core.reactor.running"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if options.kubeconfig is not None:
        # kopf's kubeconfig login and the kubernetes client both read it from here.
        os.environ["KUBECONFIG"] = str(options.kubeconfig)
    api_client = _api_client(options.kubeconfig)
    native = {"on": True, "off": False}.get(options.native_sidecar)
    if native is None:
        native = await asyncio.to_thread(supports_native_sidecars, api_client)
    injection = InjectionConfig(
        image=options.image,
        xds_address=options.sidecar_xds_address,
        xds_port=options.xds_port,
        token_audience=options.token_audience,
        native_sidecar=native,
    )
    if options.peering and not await asyncio.to_thread(
        ensure_peering_object, api_client, options.peering
    ):
        log.warning(
            "no ClusterKopfPeering CRD (manifests/kopf-peering.yaml): without peering this "
            "replica writes status; run a single replica or install the CRD"
        )
        options.peering = None
    store = Store()
    ContextIssueLogger(store)
    loop = asyncio.get_running_loop()
    bridge = StoreBridge(store, loop)
    leadership = Leadership(options.identity, options.peering)
    writer = (
        StatusWriter(store, KubernetesStatusClient(api_client), leadership.is_leader)
        if options.write_status
        else None
    )
    metrics = XdsMetrics()
    hub = CompiledCache(
        store, debounce=options.debounce, max_delay=options.max_delay, metrics=metrics
    )
    kopf_thread = KopfThread(options, bridge, leadership, injection, api_client)
    security = await _enable_security(options, api_client)
    if security is None:
        xds = XdsServer(CacheMux(hub), metrics=metrics)
    else:
        xds = XdsServer(
            CacheMux(hub, {SECRET: security.provider}),
            authenticator=security.authenticator,
            metrics=metrics,
            services=[security.certificates],
        )
    # Ready (and so in the Service's endpoints) once kopf runs and its first listings have
    # settled (the first resync ran): a replica must not hand proxies an empty mesh.
    debug = DebugServer(
        xds, hub, ready=lambda: kopf_thread.ready.is_set() and kopf_thread.resync.runs > 0
    )
    hub.start()
    bound_xds = await xds.start(options.host, options.xds_port)
    bound_debug = await debug.start(options.host, options.debug_port)
    if security is not None:
        security.start()
    if writer is not None:
        writer.start()
    kopf_thread.start()
    log.info(
        "operator %s: xDS on %s:%d, debug on %s:%d, native sidecars %s",
        options.identity,
        options.host,
        bound_xds,
        options.host,
        bound_debug,
        "on" if native else "off",
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set() and kopf_thread.is_alive():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
    finally:
        log.info("shutting down")
        kopf_thread.stop_flag.set()
        await asyncio.to_thread(kopf_thread.join, 15)
        if writer is not None:
            await writer.stop()
        if security is not None:
            await security.stop()
        await debug.stop()
        await xds.stop(grace=0.5)
        await hub.stop()
    return 1 if kopf_thread.failed is not None else 0


async def _enable_security(options: RunOptions, api_client: Any) -> MeshSecurity | None:
    """The CA from its Secret, SDS, and TokenReview authentication of proxies.

    Without the CA (no namespace, no access to its Secrets) the operator still serves:
    proxies then get no certificates, so STRICT ports refuse every connection and nothing is
    sent in plaintext that a policy required encrypted."""
    if not options.mesh_ca:
        return None
    try:
        return await asyncio.to_thread(
            enable_cluster_security,
            api_client,
            namespace=options.ca_namespace,
            trust_domain=options.trust_domain,
            audience=options.token_audience,
            workload_ttl=options.workload_cert_ttl,
            require_token=options.require_token,
        )
    except Exception as exc:  # the apiserver's or the CA's refusal, reported in one line
        log.error(
            "mesh CA unavailable (Secrets in namespace %s): %s; proxies get no certificates",
            options.ca_namespace,
            exc,
        )
        return None
