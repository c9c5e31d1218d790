"""The admission webhooks, as kopf handlers: validation at the door and sidecar injection.

* ``on.validate`` for the four Istio kinds runs the same ``controlplane.api.load`` every
  source uses, so ``kubectl apply`` of an invalid resource fails with the validator's own
  words, field path first (``spec.http[0].route[1].weight: must not be negative``);
  warnings (fields not supported yet) come back as admission warnings, which kubectl prints.
* ``on.mutate`` for Pods applies ``injection_patch``. Which namespaces are injected is the
  webhook configuration's namespaceSelector (``istio-injection=enabled``), as in Istio; the
  handler honours the per-Pod opt-out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch
import kopf

from controlplane.api import InvalidResource, load
from controlplane.api.issues import Level
from controlplane.inject.injector import InjectionConfig, injection_patch
from controlplane.inject.prometheus import ScrapeConfigurationError

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


def register_admission_handlers(
    registry: kopf.OperatorRegistry, injection: Callable[[], InjectionConfig]
) -> None:
    """Register the validating handlers (Istio kinds) and the injecting one (Pods)."""

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

    def mutate(body: Mapping[str, Any], patch: kopf.Patch, dryrun: bool, **_: Any) -> None:
        try:
            ops = injection_patch(dict(body), injection())
        except ScrapeConfigurationError as exc:
            # As istiod: a Pod whose metrics cannot be merged is not injected (nor admitted).
            raise kopf.AdmissionError(f"injection failed: {exc}", code=400) from None
        if not ops:
            return
        meta = body.get("metadata") or {}
        log.info(
            "injecting the sidecar into pod %s/%s%s",
            meta.get("namespace", ""),
            meta.get("name") or meta.get("generateName", "") + "*",
            " (dry run)" if dryrun else "",
        )

        def apply(raw: dict[str, Any]) -> None:
            jsonpatch.apply_patch(raw, ops, in_place=True)

        patch.fns.append(apply)

    kopf.on.mutate("", "v1", "pods", id=INJECT_ID, operations=["CREATE"], registry=registry)(mutate)
