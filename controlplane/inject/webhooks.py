"""The webhook configurations the apiserver needs to call us, and keeping them current.

``webhook_configurations`` is pure: given where the webhook server is reachable (a URL, or
a Service for in-cluster use) and its CA bundle, it returns the Validating- and
MutatingWebhookConfiguration objects. As in Istio, the injection webhook sees the Pods of
namespaces labelled ``istio-injection=enabled`` (unless labelled ``sidecar.istio.io/inject:
"false"``) and, in namespaces without that label, the Pods labelled
``sidecar.istio.io/inject: "true"``; any other Pod never depends on the control plane.

``ConfiguringWebhookServer`` wraps kopf's WebhookServer: each time it (re)starts serving
(also after its certificate files change) the configurations are written with its address
and CA bundle. kopf's own "managed" mode is not used because it cannot express a
namespaceSelector.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from controlplane.inject.admission import INJECT_ID, TEMPLATES_ID, VALIDATED, validate_id
from controlplane.inject.injector import INJECT_ANNOTATION, NAMESPACE_LABEL
from controlplane.inject.templates import INJECTOR_CONFIGMAP

log = logging.getLogger("controlplane.admission")

VALIDATING_NAME = "controlplane-validation"
MUTATING_NAME = "controlplane-sidecar-injector"
_MARK = {"app.kubernetes.io/part-of": "controlplane"}


def _client_config(base: Mapping[str, Any], handler_id: str) -> dict[str, Any]:
    """kopf routes a request to a handler by the last path segment: add it."""
    config = copy.deepcopy(dict(base))
    if "url" in config:
        config["url"] = f"{str(config['url']).rstrip('/')}/{handler_id}"
    if "service" in config:
        service = dict(config["service"])
        service["path"] = f"{str(service.get('path') or '').rstrip('/')}/{handler_id}"
        config["service"] = service
    return config


def webhook_configurations(
    client_config: Mapping[str, Any],
    failure_policy: str = "Fail",
    injector_namespace: str = "istio-system",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ValidatingWebhookConfiguration, MutatingWebhookConfiguration) for ``client_config``
    (``{"url": ...}`` or ``{"service": {...}}``, optionally with ``caBundle``)."""
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VALIDATING_NAME, "labels": dict(_MARK)},
        "webhooks": [
            {
                "name": f"{plural}.validation.controlplane.istio.io",
                "clientConfig": _client_config(client_config, validate_id(plural)),
                "rules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["v1"],
                        "resources": [plural],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "Namespaced",
                    }
                ],
                # Requests in v1beta1/v1alpha3 reach the handler converted to v1.
                "matchPolicy": "Equivalent",
                "failurePolicy": failure_policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
            for group, plural in VALIDATED
        ]
        + [_templates_webhook(client_config, injector_namespace)],
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATING_NAME, "labels": dict(_MARK)},
        "webhooks": [
            _injection_webhook(
                "namespace.sidecar-injector.controlplane.istio.io",
                client_config,
                failure_policy,
                # A labelled namespace: every Pod that does not opt out.
                {"matchLabels": {NAMESPACE_LABEL: "enabled"}},
                {"key": INJECT_ANNOTATION, "operator": "NotIn", "values": ["false"]},
            ),
            _injection_webhook(
                "object.sidecar-injector.controlplane.istio.io",
                client_config,
                failure_policy,
                # A namespace without the label: only Pods that opt in (Istio does the same).
                {"matchExpressions": [{"key": NAMESPACE_LABEL, "operator": "DoesNotExist"}]},
                {"key": INJECT_ANNOTATION, "operator": "In", "values": ["true"]},
            ),
        ],
    }
    return validating, mutating


def _templates_webhook(client_config: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The injector's ConfigMap, validated when written. Only that one ConfigMap reaches us
    (matchConditions, Kubernetes >= 1.28; older servers send the namespace's ConfigMaps and
    the handler lets the others through). ``Ignore``: the ConfigMap stays editable while the
    control plane is down (that is how it gets fixed); a version written then is checked
    when loaded, and the injector keeps the last good set."""
    return {
        "name": "injection-templates.validation.controlplane.istio.io",
        "clientConfig": _client_config(client_config, TEMPLATES_ID),
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "matchConditions": [
            {
                "name": "injector-configmap",
                "expression": f"object.metadata.name == '{INJECTOR_CONFIGMAP}'",
            }
        ],
        "matchPolicy": "Equivalent",
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    }


def _injection_webhook(
    name: str,
    client_config: Mapping[str, Any],
    failure_policy: str,
    namespace_selector: dict[str, Any],
    object_expression: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": _client_config(client_config, INJECT_ID),
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "operations": ["CREATE"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": namespace_selector,
        "objectSelector": {"matchExpressions": [object_expression]},
        "matchPolicy": "Equivalent",
        "failurePolicy": failure_policy,
        "reinvocationPolicy": "Never",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 10,
    }


def in_cluster_client_config(
    service: str, namespace: str, port: int, ca_bundle: str | None
) -> dict[str, Any]:
    config: dict[str, Any] = {"service": {"name": service, "namespace": namespace, "port": port}}
    if ca_bundle:
        config["caBundle"] = ca_bundle
    return config


ConfigSink = Callable[[dict[str, Any]], Awaitable[None]]


class ConfiguringWebhookServer:
    """A kopf admission server that writes the webhook configurations when it serves.

    ``rewrite`` turns the address kopf reports (a URL) into the one the apiserver should use
    (e.g. a Service in-cluster); ``sink`` writes the configurations.
    """

    def __init__(
        self,
        inner: Any,
        sink: ConfigSink,
        rewrite: Callable[[dict[str, Any]], dict[str, Any]] = lambda c: c,
    ) -> None:
        self.inner = inner
        self.sink = sink
        self.rewrite = rewrite

    async def __aenter__(self) -> ConfiguringWebhookServer:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.inner.__aexit__(*exc)

    async def __call__(self, fn: Any) -> AsyncIterator[dict[str, Any]]:
        async for client_config in self.inner(fn):
            config = self.rewrite(dict(client_config))
            try:
                await self.sink(config)
            except Exception:
                log.exception("writing the webhook configurations failed")
            yield client_config
