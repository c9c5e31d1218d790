"""The admission webhooks, as kopf handlers: validation at the door and sidecar injection.

* ``on.validate`` for the four Istio kinds runs the same ``controlplane.api.load`` every
  source uses, so ``kubectl apply`` of an invalid resource fails with the validator's own
  words, field path first (``spec.http[0].route[1].weight: must not be negative``);
  warnings (fields not supported yet) come back as admission warnings, which kubectl prints.
* ``on.mutate`` for Pods applies ``injection_patch`` and the injection templates the Pod
  names (``inject.istio.io/templates``; ``templates.templated_patch``). Which namespaces are
  injected is the webhook configuration's namespaceSelector (``istio-injection=enabled``),
  as in Istio; the handler honours the per-Pod opt-out. A Pod that asks for a template the
  injector does not have, or lacks a value a template needs, is refused with the reason.
* ``on.validate`` for the injector's ConfigMap (``istio-sidecar-injector`` in the control
  plane's namespace) refuses a version whose templates do not load. ``InjectorTemplates``
  keeps the last good set the watch saw, so a version that got in anyway (written while the
  control plane was down) is refused when loaded and the injector goes on with the last good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch
import kopf

from controlplane.api import InvalidResource, load
from controlplane.api.issues import Level
from controlplane.inject.injector import InjectionConfig
from controlplane.inject.prometheus import ScrapeConfigurationError
from controlplane.inject.templates import (
    BUILT_IN,
    INJECTOR_CONFIGMAP,
    InjectionRefused,
    TemplateSet,
    load_template_configmap,
    templated_patch,
)

log = logging.getLogger("controlplane.admission")

VALIDATED: tuple[tuple[str, str], ...] = (
    ("networking.istio.io", "virtualservices"),
    ("networking.istio.io", "destinationrules"),
    ("networking.istio.io", "serviceentries"),
    ("networking.istio.io", "workloadentries"),
    ("networking.istio.io", "gateways"),
    ("networking.istio.io", "sidecars"),
    ("security.istio.io", "peerauthentications"),
    ("security.istio.io", "authorizationpolicies"),
    ("security.istio.io", "requestauthentications"),
    ("telemetry.istio.io", "telemetries"),  # part "telemetry"
)
INJECT_ID = "inject-sidecar"
TEMPLATES_ID = "validate-injection-templates"


class InjectorTemplates:
    """The templates the injection webhook applies: the last good set of the injector's
    ConfigMap (the built-in ``sidecar`` only while there is none)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.current: TemplateSet = BUILT_IN
        self.error: str | None = None  # why the newest version was refused, if it was

    def concerns(self, name: str | None, namespace: str | None) -> bool:
        return name == INJECTOR_CONFIGMAP and namespace == self.namespace

    def observe(self, event_type: str | None, configmap: Mapping[str, Any]) -> None:
        """A watch event of the injector's ConfigMap."""
        if event_type == "DELETED":
            self.current, self.error = BUILT_IN, None
            log.info("injection templates: ConfigMap deleted; only the built-in sidecar now")
            return
        try:
            loaded = load_template_configmap(configmap)
        except InvalidResource as exc:
            self.error = "; ".join(str(i) for i in exc.issues)
            log.error(
                "injection templates refused: %s; the injector keeps the last good set "
                "(%s from %s)",
                self.error,
                ", ".join(self.current.names()),
                self.current.origin,
            )
            return
        if loaded != self.current:
            log.info(
                "injection templates from %s: %s (default %s)",
                loaded.origin,
                ", ".join(loaded.names()),
                ",".join(loaded.default_templates),
            )
        self.current, self.error = loaded, None


def validate_id(plural: str) -> str:
    return f"validate-{plural}"


def admission_verdict(doc: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one object under admission, each ``path: reason``."""
    namespace = str((doc.get("metadata") or {}).get("namespace") or "default")
    try:
        _, issues = load(dict(doc), default_namespace=namespace)
    except InvalidResource as exc:
        return [i.field_message for i in exc.issues], []
    warnings = [i.field_message for i in issues if i.severity is Level.WARNING]
    return [], warnings


def denial_message(errors: list[str]) -> str:
    """What kubectl shows after 'denied the request: ' (Istio's wording)."""
    return "configuration is invalid: " + "; ".join(errors)


def template_verdict(configmap: Mapping[str, Any]) -> list[str]:
    """The errors of the injector ConfigMap under admission (each names the ConfigMap, the
    field path, the template and the reason); [] when it loads."""
    try:
        load_template_configmap(configmap)
    except InvalidResource as exc:
        return [str(i) for i in exc.issues]
    return []


def register_admission_handlers(
    registry: kopf.OperatorRegistry,
    injection: Callable[[], InjectionConfig],
    templates: InjectorTemplates | None = None,
) -> None:
    """Register the validating handlers (Istio kinds, the injector's ConfigMap) and the
    injecting one (Pods)."""
    keeper = templates or InjectorTemplates("istio-system")

    def validate(body: Mapping[str, Any], warnings: list[str], **_: Any) -> None:
        errors, found = admission_verdict(dict(body))
        warnings.extend(found)
        if errors:
            raise kopf.AdmissionError(denial_message(errors), code=400)

    for group, plural in VALIDATED:
        kopf.on.validate(
            group,
            "v1",
            plural,
            id=validate_id(plural),
            operations=["CREATE", "UPDATE"],
            registry=registry,
        )(validate)

    def validate_templates(body: Mapping[str, Any], **_: Any) -> None:
        meta = body.get("metadata") or {}
        if not keeper.concerns(meta.get("name"), meta.get("namespace")):
            return
        errors = template_verdict(body)
        if errors:
            raise kopf.AdmissionError(
                "injection templates are invalid: " + "; ".join(errors), code=400
            )

    kopf.on.validate(
        "",
        "v1",
        "configmaps",
        id=TEMPLATES_ID,
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )(validate_templates)

    def mutate(body: Mapping[str, Any], patch: kopf.Patch, dryrun: bool, **_: Any) -> None:
        try:
            ops = templated_patch(dict(body), injection(), keeper.current)
        except InjectionRefused as exc:
            raise kopf.AdmissionError(f"sidecar injection failed: {exc}", code=400) from None
        except ScrapeConfigurationError as exc:
            # As istiod: a Pod whose metrics cannot be merged is not injected (nor admitted).
            raise kopf.AdmissionError(f"injection failed: {exc}", code=400) from None
        if not ops:
            return
        meta = body.get("metadata") or {}
        log.info(
            "injecting %s into pod %s/%s%s",
            _what(body, keeper.current),
            meta.get("namespace", ""),
            meta.get("name") or meta.get("generateName", "") + "*",
            " (dry run)" if dryrun else "",
        )

        def apply(raw: dict[str, Any]) -> None:
            jsonpatch.apply_patch(raw, ops, in_place=True)

        patch.fns.append(apply)

    kopf.on.mutate("", "v1", "pods", id=INJECT_ID, operations=["CREATE"], registry=registry)(mutate)


def _what(body: Mapping[str, Any], templates: TemplateSet) -> str:
    from controlplane.inject.templates import selected_templates

    names = selected_templates(body, templates)
    return "the sidecar" if names == ["sidecar"] else "templates " + ",".join(names)
