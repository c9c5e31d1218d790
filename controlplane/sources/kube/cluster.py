"""Cluster mode's source: the Kubernetes API, watched by kopf, feeding the store.

``ClusterSource`` is what ``controlplane run`` hands the composition root
(``controlplane.app.ControlPlane``). Opening it connects to the apiserver, decides whether
injected sidecars are native ones, and makes sure kopf peering can work (``peering``); its
extras are the kopf thread (``operator``: the watch of ``watch``, the admission webhooks and
their configurations of ``webhooks``, peering). It names the mesh CA's Secrets and the
status client, and writes status only while this replica leads (``Leadership``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.api.mesh import DEFAULT_ROOT_NAMESPACE, MESH_CONFIG_KEY, MESH_CONFIG_NAME
from controlplane.inject.injector import InjectionConfig
from controlplane.sources import MeshCa
from controlplane.sources.kube.listing import (
    KubeApi,
    Listing,
    PlainWatch,
    Scope,
    is_plain,
    list_all,
)
from controlplane.sources.kube.operator import KopfThread
from controlplane.sources.kube.peering import ensure_peering_object
from controlplane.sources.kube.watch import (
    MESH_CONFIGMAP,
    WATCHED,
    EventFeed,
    MeshConfigFeed,
    StoreBridge,
    Update,
    apply_updates,
    translate_mesh_configmap,
)
from controlplane.status.leader import Leadership
from controlplane.status.writer import KubernetesStatusClient
from controlplane.store import Store
from controlplane.store.liveness import WatchLiveness

log = logging.getLogger("controlplane")


@dataclass
class ClusterOptions:
    """What `controlplane run` knows about the cluster side (the rest is ``app.Options``)."""

    kubeconfig: Path | None = None
    xds_port: int = 15010  # as injected sidecars are told
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
    # Gateway API Gateways of our classes get a Deployment, Service and ServiceAccount
    # (sources/kube/gateway_deployer; the leader only).
    deploy_gateways: bool = True
    # Injection.
    image: str = InjectionConfig.image
    sidecar_xds_address: str = InjectionConfig.xds_address
    token_audience: str = InjectionConfig.token_audience
    native_sidecar: str = "auto"  # auto | on | off
    # The mesh CA (Secrets in ca_namespace), SDS and proxy authentication by TokenReview.
    mesh_ca: bool = True
    ca_namespace: str = "istio-system"
    identity: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )


def api_client(kubeconfig: Path | None) -> Any:
    """A client for ``kubeconfig``, else in-cluster, else the default kubeconfig."""
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
    status, version = KubeApi(api_client).get("/version")
    if status != 200 or not isinstance(version, dict):
        raise RuntimeError(f"GET /version: {status}")
    try:
        major = int(str(version.get("major")).rstrip("+"))
        minor = int(str(version.get("minor")).rstrip("+"))
    except ValueError:
        return False
    return (major, minor) >= (1, 29)


class ClusterSource:
    """A cluster, watched by kopf in a thread of its own (a ``controlplane.sources.Source``)."""

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.native = False
        self._api: Any = None
        self._leadership: Leadership | None = None
        self._thread: KopfThread | None = None
        self._watches: list[PlainWatch] = []
        self._loaded = False
        self.liveness = WatchLiveness()  # one watch per kind, by plural
        self.first_listing: dict[str, float] = {}  # how the first snapshot was built (s)

    @property
    def thread(self) -> KopfThread:
        if self._thread is None:
            raise RuntimeError("the cluster source is not open")
        return self._thread

    async def open(self, store: Store) -> None:
        # One line per watch event is too much with thousands of Pods; failures still show.
        for name in ("kopf.objects", "kopf.activities", "kopf._core.reactor.running"):
            logging.getLogger(name).setLevel(logging.WARNING)
        options = self.options
        if options.kubeconfig is not None:
            # kopf's kubeconfig login and the kubernetes client both read it from here.
            os.environ["KUBECONFIG"] = str(options.kubeconfig)
        self._api = api_client(options.kubeconfig)
        # The mesh config before anything serves (the mesh CA's trust domain is decided from
        # it at start); the watch keeps it current afterwards.
        found = await asyncio.to_thread(read_mesh_configmap, self._api)
        update = translate_mesh_configmap("ADDED", found) if found is not None else None
        if update is not None and update.submission is not None:
            store.apply(upserts=[update.submission])
        elif update is not None and update.rejection is not None:
            restored = [update.restored] if update.restored is not None else []
            store.apply(rejections=[update.rejection], restored=restored)
        native = {"on": True, "off": False}.get(options.native_sidecar)
        if native is None:
            native = await asyncio.to_thread(supports_native_sidecars, self._api)
        self.native = native
        injection = InjectionConfig(
            image=options.image,
            xds_address=options.sidecar_xds_address,
            xds_port=options.xds_port,
            token_audience=options.token_audience,
            native_sidecar=native,
        )
        if options.peering and not await asyncio.to_thread(
            ensure_peering_object, self._api, options.peering
        ):
            log.warning(
                "no ClusterKopfPeering CRD (manifests/kopf-peering.yaml): without peering this "
                "replica writes status; run a single replica or install the CRD"
            )
            options = self.options = dataclasses.replace(options, peering=None)
        bridge = StoreBridge(store, asyncio.get_running_loop())
        self._leadership = Leadership(options.identity, options.peering)
        self._thread = KopfThread(
            options, bridge, self._leadership, injection, self._api, self.liveness
        )
        await self._load(store, bridge)

    async def _load(self, store: Store, bridge: StoreBridge) -> None:
        """Every watched kind listed once and applied as ONE batch, before anything serves
        (``listing``): the first snapshot is complete and no in-context finding comes from
        a half-listed mesh. Then the high-volume kinds are followed from their listing."""
        started = time.monotonic()
        api = KubeApi(self._api)
        kopf_feed = self.thread.feed
        plain_feed = EventFeed(bridge.submit, None, self.liveness)

        def convert(kind: tuple[str, str, str], item: dict[str, Any]) -> Update | None:
            group, _, plural = kind
            if is_plain(group, plural):
                return plain_feed.translate(None, item, plural)
            # Recorded for kopf's resync as if added: one deleted before kopf lists it
            # again is found.
            return kopf_feed.translate("ADDED", item, plural)

        # No cyclic garbage collection while tens of thousands of long-lived objects are
        # made: each full collection would walk them all again (at 10,000 services half the
        # CPU of the load went there). What was made is frozen after (as after a push wave,
        # xds/memory.py), so later collections skip it too.
        gc.disable()
        try:
            listings = await asyncio.to_thread(list_all, api, WATCHED, convert)
            listed = time.monotonic()
            self._apply_first(store, listings)
        finally:
            gc.freeze()
            gc.enable()

        _release_freed_memory()
        for listing in listings:
            if is_plain(listing.group, listing.plural):
                self._watches.append(
                    PlainWatch(api, listing, plain_feed, bridge.submit, listing.keys)
                )
        # The mesh ConfigMap (read before anything else, in ``open``) gets a plain watch too:
        # listed again as it starts, so a change or deletion since that read is seen even
        # before kopf's ConfigMap watch runs.
        group, version, plural = MESH_CONFIGMAP
        mesh = Listing(group, version, plural, resource_version=None)
        mesh.keys = {MESH_CONFIG_KEY}  # a relist without it deletes it (a no-op if absent)
        self._watches.append(
            PlainWatch(
                api,
                mesh,
                MeshConfigFeed(bridge.submit, None, None),
                bridge.submit,
                mesh.keys,
                scope=Scope(DEFAULT_ROOT_NAMESPACE, f"metadata.name={MESH_CONFIG_NAME}"),
            )
        )
        self._loaded = True
        done = time.monotonic()
        self.first_listing = {
            "list_s": round(listed - started, 3),
            "apply_s": round(done - listed, 3),
        }
        log.info(
            "first snapshot: %d kinds listed and translated in %.2f s, applied in %.2f s",
            len(listings),
            listed - started,
            done - listed,
        )

    @staticmethod
    def _apply_first(store: Store, listings: list[Listing]) -> None:
        """The translated listings as one store batch; each plain kind's keys kept for its
        watch (``Listing.keys``)."""
        updates: list[Update] = []
        for listing in listings:
            updates += listing.items
            if is_plain(listing.group, listing.plural):
                listing.keys = {u.key for u in listing.items if not u.delete}
            listing.items = []
        apply_updates(store, updates)

    def ready(self) -> bool:
        # Ready (and so in the Service's endpoints) once every watched kind was listed and
        # the listing applied as one batch (``_load``): a replica never hands proxies a
        # partial mesh. Events after the listing reach the store through the watches.
        return self._loaded and self.thread.failed is None

    def mesh_ca(self) -> MeshCa | None:
        if not self.options.mesh_ca:
            return None
        namespace = self.options.ca_namespace
        from controlplane.ca.secret_keystore import SecretKeyStore

        def unavailable(exc: Exception) -> None:
            # Without the CA (no namespace, no access to its Secrets) the operator still
            # serves: proxies then get no certificates, so STRICT ports refuse every
            # connection and nothing is sent in plaintext that a policy required encrypted.
            log.error(
                "mesh CA unavailable (Secrets in namespace %s): %s; proxies get no certificates",
                namespace,
                exc,
            )

        return MeshCa(SecretKeyStore(self._api, namespace), unavailable, token_review=self._api)

    def status_client(self) -> KubernetesStatusClient | None:
        if not self.options.write_status:
            return None
        return KubernetesStatusClient(self._api)

    def is_leader(self) -> bool:
        return self._leadership is not None and self._leadership.is_leader()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        thread = self.thread
        for watch in self._watches:
            watch.start()
        thread.start()
        try:
            yield
        finally:
            for watch in self._watches:
                watch.stop()
            thread.stop_flag.set()
            await asyncio.to_thread(thread.join, 15)

    def announce(self, host: str, xds_port: int, debug_port: int, debug_host: str) -> None:
        log.info(
            "operator %s: xDS on %s:%d, debug on %s:%d, native sidecars %s",
            self.options.identity,
            host,
            xds_port,
            debug_host,
            debug_port,
            "on" if self.native else "off",
        )

    async def wait(self) -> None:
        while self.thread.is_alive():
            await asyncio.sleep(1.0)

    def exit_code(self) -> int:
        return 1 if self._thread is not None and self._thread.failed is not None else 0


def _release_freed_memory() -> None:
    """Hand the heap the first listing's documents left free back to the OS (glibc keeps it
    otherwise, and the process's RSS stays at the listing's peak)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def read_mesh_configmap(api: Any) -> dict[str, Any] | None:
    """The istio ConfigMap as a document, or None (absent, or not readable: the watch will
    bring it if it appears). A plain GET: the kubernetes client's CoreV1Api costs about a
    second to import (issue 14)."""
    path = f"/api/v1/namespaces/{DEFAULT_ROOT_NAMESPACE}/configmaps/{MESH_CONFIG_NAME}"
    try:
        status, found = KubeApi(api).get(path)
    except Exception as exc:
        log.warning("reading the mesh config (ConfigMap %s): %s", MESH_CONFIG_NAME, exc)
        return None
    if status != 200 or not isinstance(found, dict):
        if status not in (403, 404):
            log.warning("reading the mesh config (ConfigMap %s): %s", MESH_CONFIG_NAME, status)
        return None
    return {**found, "apiVersion": "v1", "kind": "ConfigMap"}
