"""The kopf thread: kopf's operators in a thread (and event loop) of their own.

Two operators run there: the watch operator (every replica; the event handlers of ``watch``
for the Istio kinds, Services, EndpointSlices, Pods and Namespaces, plus the admission
webhooks) and, with peering, a handler-less operator that only takes part in kopf peering
(``peering``) to choose the replica that writes status. Events reach the store through
``StoreBridge`` (``call_soon_threadsafe``), so the store stays on the xDS loop.

kopf is kept out of the xDS loop because on stop it waits for every task created in its
loop (a grpc.aio server included); its own thread can be stopped on its own. ``cluster``
starts and stops this thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from controlplane.inject.injector import InjectionConfig
from controlplane.sources.kube.gateway_deployer import GatewayDeployer, register_gateway_deployer
from controlplane.sources.kube.listing import kinds_for_kopf
from controlplane.sources.kube.peering import PEERING_PLURAL, peering_operator
from controlplane.sources.kube.watch import (
    EventFeed,
    Resync,
    StoreBridge,
    Update,
    kubernetes_lister,
    newest_version_lister,
    probe_liveness,
    register_watch_handlers,
)
from controlplane.sources.kube.webhooks import WebhookUpkeep, webhook_server
from controlplane.status.leader import Leadership
from controlplane.store.liveness import WatchLiveness

if TYPE_CHECKING:
    from controlplane.sources.kube.cluster import ClusterOptions

log = logging.getLogger("controlplane")


class KopfThread(threading.Thread):
    """kopf's operators in a thread (and event loop) of their own."""

    def __init__(
        self,
        options: ClusterOptions,
        bridge: StoreBridge,
        leadership: Leadership,
        injection: InjectionConfig,
        api_client: Any,
        liveness: WatchLiveness | None = None,
    ) -> None:
        super().__init__(name="kopf", daemon=True)
        self.liveness = liveness
        self.options = options
        self.bridge = bridge
        self.leadership = leadership
        self.injection = injection
        self.api_client = api_client
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.webhooks = WebhookUpkeep(
            api_client, options.manage_webhooks, options.webhook_resync, options.ca_namespace
        )
        # kopf follows the Istio kinds (and the other low-volume ones); the high-volume
        # kinds have plain watches of their own (``listing.PlainWatch``).
        self.kinds = kinds_for_kopf()
        self.resync = Resync(
            self._submit, kubernetes_lister(api_client), delay=1.0, kinds=self.kinds
        )
        self.feed = EventFeed(self._submit, self.resync, liveness)
        self.gateways = (
            GatewayDeployer(api_client, lambda: self.injection, leadership.is_leader)
            if options.deploy_gateways
            else None
        )

    def injection_now(self) -> InjectionConfig:
        """The injection settings with what the mesh config decides now (its
        ``enablePrometheusMerge``); the snapshot is immutable, so reading it from the webhook's
        thread is safe."""
        merge = self.bridge.store.snapshot.mesh.enable_prometheus_merge
        return dataclasses.replace(self.injection, prometheus_merge=merge is not False)

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the main thread
            self.failed = exc
            log.exception("the kopf operator stopped")

    async def _probe_liveness(self) -> None:
        """Every quarter of the stall limit, list the quiet kinds (``probe_liveness``)."""
        liveness = self.liveness
        if liveness is None:
            return
        newest = newest_version_lister(self.api_client)
        while True:
            await asyncio.sleep(max(1.0, liveness.stall_after / 4))
            if self.ready.is_set():
                await asyncio.to_thread(probe_liveness, liveness, newest, self.kinds)

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
            liveness=self.liveness,
            kinds=self.kinds,
            feed=self.feed,
        )
        if self.gateways is not None:
            register_gateway_deployer(watch, self.gateways)
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # kopf's own per-object events: not for watch-only use
        settings.watching.connect_timeout = 5
        settings.watching.server_timeout = 120
        settings.watching.client_timeout = 150
        settings.watching.reconnect_backoff = 0.5
        settings.batching.batch_window = 0.01  # apply -> proxies latency matters here
        if opts.webhook_cert is not None and opts.webhook_key is not None:
            from controlplane.inject.admission import InjectorTemplates, register_admission_handlers

            templates = InjectorTemplates(opts.ca_namespace)
            register_admission_handlers(watch, self.injection_now, templates)
            register_template_watch(
                watch, templates, refused_template_event(self.api_client, self.leadership)
            )
            settings.admission.server = webhook_server(
                kopf,
                self.webhooks,
                address=opts.webhook_address,
                port=opts.webhook_port,
                host=opts.webhook_host,
                service=opts.webhook_service,
                cert=opts.webhook_cert,
                key=opts.webhook_key,
                ca=opts.webhook_ca,
            )
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
            operators.append(peering_operator(opts.peering, opts.identity, self.stop_flag, peering))
        keeper = asyncio.create_task(self.webhooks.keep())
        prober = asyncio.create_task(self._probe_liveness())
        deployer = asyncio.create_task(self.gateways.run()) if self.gateways is not None else None
        try:
            await asyncio.gather(*operators)
        finally:
            keeper.cancel()
            prober.cancel()
            if deployer is not None:
                deployer.cancel()
            self.resync.cancel()


def register_template_watch(
    registry: Any, templates: Any, on_refused: Callable[[Mapping[str, Any], str], None]
) -> None:
    """Keep ``templates`` (an ``InjectorTemplates``) current from its ConfigMap; a version
    refused on load is also reported to ``on_refused`` (once per message)."""
    import kopf

    def observe(event: Mapping[str, Any], **_: Any) -> None:
        raw = event.get("object")
        if not isinstance(raw, Mapping):
            return
        before = templates.error
        templates.observe(event.get("type"), raw)
        if templates.error is not None and templates.error != before:
            on_refused(raw, templates.error)

    kopf.on.event(
        "",
        "v1",
        "configmaps",
        id="watch-injection-templates",
        registry=registry,
        when=lambda name, namespace, **_: templates.concerns(name, namespace),
    )(observe)


def refused_template_event(
    api_client: Any, leadership: Leadership
) -> Callable[[Mapping[str, Any], str], None]:
    """A Warning Event ``InvalidInjectionTemplate`` on the injector's ConfigMap (what
    ``kubectl describe configmap`` shows; a ConfigMap has no status), written by the leader."""

    def post(configmap: Mapping[str, Any], message: str) -> None:
        if not leadership.is_leader():
            return
        from kubernetes import client

        from controlplane.status.writer import _stamp

        meta = configmap.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        stamp = _stamp()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": name,
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": "InvalidInjectionTemplate",
            "message": (message + "; the injector keeps the last good set")[:1024],
            "type": "Warning",
            "source": {"component": "controlplane"},
            "reportingComponent": "controlplane",
            "reportingInstance": "controlplane",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            client.CoreV1Api(api_client).create_namespaced_event(namespace, event)
        except Exception as exc:  # an Event is a courtesy: the log has the same words
            log.warning("writing the InvalidInjectionTemplate event failed: %s", exc)

    return post


def _login(registry: Any) -> None:
    import kopf

    @kopf.on.login(registry=registry)  # type: ignore[untyped-decorator]
    def login(**kwargs: Any) -> Any:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            return kopf.login_with_service_account(**kwargs)
        return kopf.login_with_kubeconfig(**kwargs)
