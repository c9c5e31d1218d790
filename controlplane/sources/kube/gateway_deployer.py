"""The gateway deployment controller: each Gateway API Gateway of a class this control plane
serves gets its ServiceAccount, Deployment and Service (``inject/gateway_deployment`` renders
them), and its Service's address in ``status.addresses``.

As istiod's (pilot/pkg/config/kube/gateway/deploymentcontroller.go): only the leader writes;
objects are server-side applied with one field manager; an object of that name that exists
without the managed label was made by someone else and is left alone (``canManage``); every
object is owned by its Gateway, so the cluster's garbage collector deletes them with it (a
cluster without kube-controller-manager, like the tests' apiserver, keeps them: the test
checks the owner references instead).

Runs in the kopf thread: the watch handlers (Gateways, and Services carrying the managed
label) queue a Gateway's key; one task reconciles queued keys on a worker thread (the
apiserver calls block), and lists every Gateway again every ``resync`` seconds, which is how a
replica that becomes leader catches up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from controlplane.api.gatewayapi import CONTROLLER_NAMES
from controlplane.inject.gateway_deployment import (
    BUILTIN_CLASSES,
    FIELD_MANAGER,
    GATEWAY_GROUP,
    GATEWAY_NAME_LABEL,
    GATEWAY_VERSION,
    MANAGED_LABEL,
    deployed_name,
    gateway_addresses,
    is_managed,
    rendered,
)
from controlplane.inject.gateway_parameters import ParametersError, with_parameters
from controlplane.inject.injector import InjectionConfig

log = logging.getLogger("controlplane.gateways")

GatewayKey = tuple[str, str]  # (namespace, name)

_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    "Service": "/api/v1/namespaces/{ns}/services/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
}
_GATEWAYS = f"/apis/{GATEWAY_GROUP}/{GATEWAY_VERSION}"
_CONFIGMAP = "/api/v1/namespaces/{ns}/configmaps/{name}"


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:300]}")
        self.status = status


class RawApi:
    """JSON requests over the kubernetes client's connection (any path, any content type)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any] | None:
        """The response document; None for 404."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method_, url, headers, _, _ = self.api_client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        # The client serialises a structured body as JSON for JSON and YAML content types
        # (JSON is YAML: server-side apply takes it).
        response = self.api_client.call_api(method_, url, header_params=headers, body=body)
        response.read()
        if response.status == 404:
            return None
        text = response.data.decode("utf-8", "replace") if response.data else ""
        if response.status >= 300:
            raise ApiError(method, path, response.status, text)
        return json.loads(text) if text else {}


def serves_class(api: RawApi, class_name: str) -> bool:
    """Whether Gateways of ``class_name`` are ours: its GatewayClass names one of our controller
    names, or (no such GatewayClass) it is a class istiod defines itself."""
    found = api.request("GET", f"{_GATEWAYS}/gatewayclasses/{class_name}")
    if found is None:
        return class_name in BUILTIN_CLASSES
    return (found.get("spec") or {}).get("controllerName") in CONTROLLER_NAMES


class GatewayDeployer:
    """Reconciles Gateways into their deployments (leader only)."""

    def __init__(
        self,
        api_client: Any,
        injection: Callable[[], InjectionConfig],
        is_leader: Callable[[], bool],
        *,
        resync: float = 10.0,
    ) -> None:
        self.api = RawApi(api_client)
        self.injection = injection
        self.is_leader = is_leader
        self.resync = resync
        self._pending: set[GatewayKey] = set()
        self._wake: asyncio.Event | None = None

    # --- called from kopf handlers (the kopf loop) ---------------------------------------------

    def queue(self, key: GatewayKey) -> None:
        self._pending.add(key)
        if self._wake is not None:
            self._wake.set()

    def on_gateway(self, event: Mapping[str, Any]) -> None:
        meta = (event.get("object") or {}).get("metadata") or {}
        if meta.get("name") and meta.get("namespace"):
            self.queue((str(meta["namespace"]), str(meta["name"])))

    def on_service(self, event: Mapping[str, Any]) -> None:
        meta = (event.get("object") or {}).get("metadata") or {}
        labels = meta.get("labels") or {}
        if MANAGED_LABEL in labels and labels.get(GATEWAY_NAME_LABEL) and meta.get("namespace"):
            self.queue((str(meta["namespace"]), str(labels[GATEWAY_NAME_LABEL])))

    async def run(self) -> None:
        """Reconcile queued Gateways as they come, and all of them every ``resync`` seconds."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            timeout = max(0.0, next_full - loop.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self.is_leader():
                self._pending.clear()
                next_full = loop.time() + self.resync
                continue
            if loop.time() >= next_full:
                next_full = loop.time() + self.resync
                try:
                    self._pending |= await asyncio.to_thread(self.list_gateways)
                except Exception as exc:  # the apiserver is away: the next round tries again
                    log.warning("listing Gateways: %s", exc)
            keys, self._pending = self._pending, set()
            for key in sorted(keys):
                try:
                    await asyncio.to_thread(self.reconcile, key)
                except Exception as exc:  # one Gateway's failure never stops the others
                    log.warning("Gateway %s/%s: deployment not reconciled: %s", *key, exc)

    # --- blocking work (a worker thread) -------------------------------------------------------

    def list_gateways(self) -> set[GatewayKey]:
        found = self.api.request("GET", f"{_GATEWAYS}/gateways")
        items = (found or {}).get("items") or []
        return {
            (str(i["metadata"]["namespace"]), str(i["metadata"]["name"]))
            for i in items
            if (i.get("metadata") or {}).get("name")
        }

    def reconcile(self, key: GatewayKey) -> None:
        namespace, name = key
        gateway = self.api.request("GET", f"{_GATEWAYS}/namespaces/{namespace}/gateways/{name}")
        if gateway is None or (gateway.get("metadata") or {}).get("deletionTimestamp"):
            return  # gone: what it owned goes with it (ownerReferences)
        class_name = str((gateway.get("spec") or {}).get("gatewayClassName", ""))
        if not serves_class(self.api, class_name) or not is_managed(gateway):
            return
        objects = self._with_parameters(gateway, rendered(gateway, self.injection()))
        if objects is None:
            return
        service: dict[str, Any] | None = None
        for obj in objects:
            applied = self._apply(obj)
            if obj["kind"] == "Service":
                service = applied
        if service is not None:
            self._write_addresses(gateway, gateway_addresses(service))

    def _with_parameters(
        self, gateway: Mapping[str, Any], objects: list[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        """``objects`` with the overrides of the Gateway's parametersRef ConfigMap (as
        istiod's deployment controller); None when they cannot be applied: then, as istiod,
        nothing is applied until the ConfigMap is fixed (the resync reads it again)."""
        meta = gateway.get("metadata") or {}
        infrastructure = (gateway.get("spec") or {}).get("infrastructure") or {}
        ref = infrastructure.get("parametersRef")
        if not ref:
            return objects
        namespace = str(meta.get("namespace"))
        where = (
            f"Gateway {namespace}/{meta.get('name')} spec.infrastructure.parametersRef: "
            f"ConfigMap {namespace}/{ref.get('name')}"
        )
        if ref.get("kind") != "ConfigMap" or ref.get("group") not in ("", None):
            return None  # the Gateway's status says InvalidParameters (store/gatewayapi.py)
        found = self.api.request("GET", _CONFIGMAP.format(ns=namespace, name=ref.get("name")))
        if found is None:
            log.warning("%s: not found; the gateway's objects are left as they are", where)
            return None
        try:
            applied, notes = with_parameters(objects, found.get("data") or {}, where)
        except ParametersError as exc:
            log.warning("%s; the gateway's objects are left as they are", exc)
            return None
        for note in notes:
            log.info("%s", note)
        return applied

    def _apply(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        path = _PATHS[obj["kind"]].format(ns=meta["namespace"], name=meta["name"])
        existing = self.api.request("GET", path)
        if existing is not None and MANAGED_LABEL not in (
            (existing.get("metadata") or {}).get("labels") or {}
        ):
            log.warning(
                "%s %s/%s exists and is not managed by the gateway controller (no label %s): "
                "left alone",
                obj["kind"],
                meta["namespace"],
                meta["name"],
                MANAGED_LABEL,
            )
            return existing
        return self.api.request(
            "PATCH",
            path,
            obj,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    def _write_addresses(self, gateway: Mapping[str, Any], addresses: list[dict[str, str]]) -> None:
        current = (gateway.get("status") or {}).get("addresses")
        if (current or []) == addresses:
            return
        meta = gateway.get("metadata") or {}
        self.api.request(
            "PATCH",
            f"{_GATEWAYS}/namespaces/{meta['namespace']}/gateways/{meta['name']}/status",
            {"status": {"addresses": addresses or None}},
            content_type="application/merge-patch+json",
        )
        log.info(
            "Gateway %s/%s (%s): status.addresses %s",
            meta.get("namespace"),
            meta.get("name"),
            deployed_name(gateway),
            [a["value"] for a in addresses],
        )


def register_gateway_deployer(registry: Any, deployer: GatewayDeployer) -> None:
    """kopf handlers that queue a Gateway when it or its managed Service changes."""
    import kopf

    def gateway_event(event: Mapping[str, Any], **_: Any) -> None:
        deployer.on_gateway(event)

    def service_event(event: Mapping[str, Any], **_: Any) -> None:
        deployer.on_service(event)

    kopf.on.event(
        GATEWAY_GROUP, GATEWAY_VERSION, "gateways", id="deploy-gateways", registry=registry
    )(gateway_event)
    kopf.on.event(
        "",
        "v1",
        "services",
        id="deploy-gateway-services",
        registry=registry,
        labels={MANAGED_LABEL: kopf.PRESENT},
    )(service_event)
