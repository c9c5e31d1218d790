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
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.api.mesh import DEFAULT_ROOT_NAMESPACE, MESH_CONFIG_NAME
from controlplane.inject.injector import InjectionConfig
from controlplane.sources import MeshCa
from controlplane.sources.kube.operator import KopfThread
from controlplane.sources.kube.peering import ensure_peering_object
from controlplane.sources.kube.watch import StoreBridge, translate_mesh_configmap
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
    from kubernetes import client

    version = client.VersionApi(api_client).get_code()
    try:
        major = int(str(version.major).rstrip("+"))
        minor = int(str(version.minor).rstrip("+"))
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
        self.liveness = WatchLiveness()  # one watch per kind, by plural

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

    def ready(self) -> bool:
        # Ready (and so in the Service's endpoints) once kopf runs and its first listings
        # have settled (the first resync ran): a replica must not hand proxies an empty mesh.
        return self.thread.ready.is_set() and self.thread.resync.runs > 0

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
        thread.start()
        try:
            yield
        finally:
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


def read_mesh_configmap(api: Any) -> dict[str, Any] | None:
    """The istio ConfigMap as a document, or None (absent, or not readable: the watch will
    bring it if it appears)."""
    from kubernetes import client

    try:
        found = client.CoreV1Api(api).read_namespaced_config_map(
            MESH_CONFIG_NAME, DEFAULT_ROOT_NAMESPACE
        )
    except client.exceptions.ApiException as exc:
        if exc.status not in (403, 404):
            log.warning("reading the mesh config (ConfigMap %s): %s", MESH_CONFIG_NAME, exc)
        return None
    doc: dict[str, Any] = api.sanitize_for_serialization(found)
    return {"apiVersion": "v1", "kind": "ConfigMap", **doc}
