"""The admission webhooks' configurations in the cluster: written, and kept written.

kopf serves the webhooks (``controlplane.inject.admission`` holds the handlers) and says
where they are reachable; ``webhook_server`` turns that into the two webhook configurations
(``controlplane.inject.webhooks``) and, with ``manage`` set, writes them. ``WebhookUpkeep``
then checks them every few seconds and puts this replica's address and CA bundle back if
something overwrote them. Both run in the kopf thread (``operator``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("controlplane")


def apply_webhook_configurations(
    api_client: Any,
    client_config: Mapping[str, Any],
    only_if_changed: bool = False,
    injector_namespace: str = "istio-system",
) -> bool:
    """Create or replace both webhook configurations for ``client_config``.

    With ``only_if_changed``, a configuration whose webhooks already have these names and
    client configs (address and CA bundle) is left alone. Returns True if anything was written.
    """
    from kubernetes import client

    from controlplane.inject.webhooks import webhook_configurations

    api = client.AdmissionregistrationV1Api(api_client)
    validating, mutating = webhook_configurations(
        client_config, injector_namespace=injector_namespace
    )
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


class WebhookUpkeep:
    """Writes the webhook configurations kopf asks for, and keeps them written."""

    def __init__(
        self, api_client: Any, manage: bool, resync: float, injector_namespace: str = "istio-system"
    ) -> None:
        self.api_client = api_client
        self.injector_namespace = injector_namespace  # where the injector's ConfigMap lives
        self.manage = manage
        self.resync = resync  # how often the configurations are checked (s)
        self.config: dict[str, Any] | None = None  # as last written

    async def write(self, config: dict[str, Any]) -> None:
        """kopf's webhook server found its address: point the configurations at it."""
        if self.manage:
            await asyncio.to_thread(
                apply_webhook_configurations,
                self.api_client,
                config,
                False,
                self.injector_namespace,
            )
            self.config = config

    async def keep(self) -> None:
        """Put the webhooks' address and CA bundle back if something overwrote them (e.g. a
        new `kubectl apply -k manifests/`, whose copy has no CA bundle)."""
        while True:
            await asyncio.sleep(self.resync)
            config = self.config
            if config is None:
                continue
            try:
                await asyncio.to_thread(
                    apply_webhook_configurations,
                    self.api_client,
                    config,
                    True,
                    self.injector_namespace,
                )
            except Exception as exc:  # the apiserver may be away; try again later
                log.warning("checking the webhook configurations failed: %s", exc)


def webhook_server(
    kopf: Any,
    upkeep: WebhookUpkeep,
    *,
    address: str,
    port: int,
    host: str | None,
    service: str | None,
    cert: Path,
    key: Path,
    ca: Path | None,
) -> Any:
    """kopf's webhook server on ``address:port``, reporting its client config to ``upkeep``
    (rewritten to the in-cluster ``service`` "NAME.NAMESPACE" when one is given)."""
    from controlplane.inject.webhooks import ConfiguringWebhookServer, in_cluster_client_config

    inner = kopf.WebhookServer(
        addr=address,
        port=port,
        host=host,
        certfile=str(cert),
        pkeyfile=str(key),
        cafile=str(ca) if ca else None,
    )

    def rewrite(config: dict[str, Any]) -> dict[str, Any]:
        if not service:
            return config
        name, _, namespace = service.partition(".")
        return in_cluster_client_config(
            name, namespace or "istio-system", port, config.get("caBundle")
        )

    return ConfiguringWebhookServer(inner, upkeep.write, rewrite)
