"""What the control plane made of a resource, as the ``status`` Kubernetes users read.

Pure functions: a ``ResourceStatus`` from the store in, the ``status`` object (and, for a
rejection, the Kubernetes Event) out. Two conditions, in the style of Kubernetes and Istio:

* ``Accepted``: the latest version passed validation on its own (reason ``Accepted`` or the
  first error's code title, e.g. ``InvalidField``);
* ``Reconciled``: proxies are being configured with the latest version (reason
  ``Reconciled``, ``NotAccepted``, or the first in-context error, e.g.
  ``ReferencedSubsetNotFound``).

Messages name the field path and the reason (``spec.http[0].route[1].weight: must not be
negative``). ``observedGeneration`` says which version the verdict is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controlplane.api.issues import Codes, Issue, Level, ResourceKey
from controlplane.store import ResourceStatus

ACCEPTED = "Accepted"
RECONCILED = "Reconciled"
_MAX_MESSAGE = 1024  # conditions are read in a terminal; the full list is in validationMessages


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message(issues: list[Issue]) -> str:
    text = "; ".join(i.field_message for i in issues)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _errors(issues: tuple[Issue, ...], context: bool) -> list[Issue]:
    """Errors of one stage: validation alone (CP01xx/CP02xx) or in context (CP03xx); the
    note on what a refused policy does meanwhile (CP0203) is neither (``conditions``)."""
    return [
        i
        for i in issues
        if i.severity is Level.ERROR
        and i.code.id.startswith("CP03") == context
        and i.code is not Codes.POLICY_FAILS_CLOSED
    ]


def conditions(status: ResourceStatus) -> list[dict[str, Any]]:
    """The two conditions, without timestamps (``status_body`` adds them)."""
    generation = status.generation
    alone = _errors(status.issues, context=False)
    in_context = _errors(status.issues, context=True)
    if status.accepted:
        accepted = {"status": "True", "reason": ACCEPTED, "message": "the resource is valid"}
    else:
        accepted = {
            "status": "False",
            "reason": alone[0].code.title if alone else "Invalid",
            "message": _message(alone) or "the resource is invalid",
        }
    if status.reconciled:
        reconciled = {
            "status": "True",
            "reason": RECONCILED,
            "message": "proxies are configured with this generation",
        }
    elif not status.accepted:
        # A refused security policy with no good version says what it does meanwhile.
        fails_closed = [i for i in status.issues if i.code is Codes.POLICY_FAILS_CLOSED]
        reconciled = {
            "status": "False",
            "reason": "NotAccepted",
            "message": _message(fails_closed)
            or "the resource was rejected; proxies keep the last accepted version",
        }
    else:
        reason = in_context[0].code.title if in_context else "NotReconciled"
        reconciled = {
            "status": "False",
            "reason": reason,
            "message": (_message(in_context) or "not applied")
            + " (proxies keep the last good version)",
        }
    unsupported = [i for i in status.issues if i.code is Codes.UNSUPPORTED_KIND]
    if unsupported:  # kept, never read: neither condition may say it is in effect
        verdict = {"reason": Codes.UNSUPPORTED_KIND.title, "message": _message(unsupported)}
        accepted = {"status": "False", **verdict}
        reconciled = {"status": "False", **verdict}
    out = []
    for kind, cond in ((ACCEPTED, accepted), (RECONCILED, reconciled)):
        entry: dict[str, Any] = {"type": kind, **cond}
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


def validation_messages(status: ResourceStatus) -> list[dict[str, Any]]:
    """Every finding (errors and warnings), as Istio's ``validationMessages`` lists them."""
    return [
        {
            "type": {"code": i.code.id, "name": i.code.title},
            "level": i.severity.value.upper(),
            "documentationUrl": "",
            "description": i.field_message,
        }
        for i in status.issues
    ]


def status_body(
    status: ResourceStatus,
    previous: Mapping[str, Any] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The ``status`` to write. A condition whose status did not change keeps its
    ``lastTransitionTime`` from ``previous`` (the status written before)."""
    stamp = now or _now()
    before = {c.get("type"): c for c in (previous or {}).get("conditions", [])}
    out_conditions = []
    for cond in conditions(status):
        old = before.get(cond["type"])
        if old is not None and old.get("status") == cond["status"]:
            cond["lastTransitionTime"] = old.get("lastTransitionTime", stamp)
        else:
            cond["lastTransitionTime"] = stamp
        out_conditions.append(cond)
    body: dict[str, Any] = {"conditions": out_conditions}
    if status.generation is not None:
        body["observedGeneration"] = status.generation
    messages = validation_messages(status)
    body["validationMessages"] = messages
    return body


def same_verdict(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """True when two status bodies differ at most in timestamps."""

    def strip(body: Mapping[str, Any] | None) -> Any:
        if body is None:
            return None
        conds = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in body.get("conditions", [])
        ]
        return {**body, "conditions": conds}

    return bool(strip(a) == strip(b))


def rejection_event(
    key: ResourceKey,
    status: ResourceStatus,
    api_version: str,
    uid: str | None,
    component: str = "controlplane",
    now: str | None = None,
) -> dict[str, Any] | None:
    """A Warning Event for a resource that was rejected or cannot be reconciled; None if fine."""
    if status.accepted and status.reconciled:
        return None
    stamp = now or _now()
    cond = conditions(status)
    bad = cond[0] if not status.accepted else cond[1]
    reason = "Rejected" if not status.accepted else "NotReconciled"
    involved: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": key.kind,
        "name": key.name,
        "namespace": key.namespace,
    }
    if uid:
        involved["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{key.name}.", "namespace": key.namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": f"{bad['reason']}: {bad['message']}",
        "type": "Warning",
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
