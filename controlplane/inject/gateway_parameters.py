"""A Gateway's ``spec.infrastructure.parametersRef`` ConfigMap: overrides of the objects its
automated deployment gets, read as istiod's deployment controller reads them
(pilot/pkg/config/kube/gatewaycommon/deploymentcontroller.go, ``render``/``applyOverlay``).

Each key of the ConfigMap's ``data`` is a YAML patch of one rendered object, merged into it as
a strategic merge patch:

- honoured here: ``deployment``, ``service``, ``serviceAccount``;
- known to istiod but not honoured here: ``horizontalPodAutoscaler`` and
  ``podDisruptionBudget`` (istiod creates those objects only when asked; this controller
  creates neither, and says so in the log);
- any other key: the ConfigMap is refused, as istiod refuses it (``unsupported overlay``), and
  the Gateway's objects are left as they are until it is fixed.

A patch may not change the object's name, namespace or owner references (istiod: ``illegal
metadata change``). The merge is Kubernetes' strategic merge for the fields a gateway's
objects carry: maps merge key by key (``null`` deletes a key), lists of containers, volumes,
env, volumeMounts and ports merge by their key (``name``, ``mountPath``, Service ports by
``port``), other lists are replaced. Pure; the deployer (sources/kube/gateway_deployer.py)
reads the ConfigMap and applies the result.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

HONOURED = {"Deployment": "deployment", "Service": "service", "ServiceAccount": "serviceAccount"}
NOT_HONOURED = frozenset({"horizontalPodAutoscaler", "podDisruptionBudget"})
KNOWN = frozenset(HONOURED.values()) | NOT_HONOURED

# list field -> its merge key (Kubernetes' patchMergeKey) for the objects a gateway gets.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "tolerations": None,  # replaced, as Kubernetes does (no merge key)
}
_FIXED_METADATA = ("name", "namespace", "ownerReferences")


class ParametersError(ValueError):
    """A parametersRef ConfigMap that cannot be applied (names the key and the reason)."""


def parameter_overlays(
    data: Mapping[str, str], where: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The honoured overlays of a ConfigMap's ``data`` by rendered kind, and the notes on keys
    that are read but not honoured. Raises ParametersError for a key istiod does not know or
    a value that is not a YAML mapping (``where``: the ConfigMap, for the message)."""
    unknown = sorted(set(data) - KNOWN)
    if unknown:
        raise ParametersError(
            f"{where}: data key(s) {', '.join(unknown)} unsupported (supported: "
            f"{', '.join(sorted(KNOWN))})"
        )
    overlays: dict[str, dict[str, Any]] = {}
    for kind, key in HONOURED.items():
        if key not in data:
            continue
        try:
            parsed = yaml.safe_load(data[key])
        except yaml.YAMLError as exc:
            raise ParametersError(f"{where}: data.{key} is not YAML: {exc}") from None
        if parsed is None:
            continue
        if not isinstance(parsed, dict):
            raise ParametersError(f"{where}: data.{key} must be a YAML mapping")
        overlays[kind] = parsed
    notes = [
        f"{where}: data.{key} is not honoured (this controller creates no {key})"
        for key in sorted(NOT_HONOURED & set(data))
    ]
    return overlays, notes


def apply_overlay(obj: Mapping[str, Any], overlay: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``obj`` with ``overlay`` merged in (strategic merge, see the module docstring)."""
    merged = _merge(copy.deepcopy(dict(obj)), overlay, "")
    before, after = obj.get("metadata") or {}, merged.get("metadata") or {}
    for field in _FIXED_METADATA:
        if before.get(field) != after.get(field):
            raise ParametersError(
                f"{where}: data.{HONOURED.get(str(obj.get('kind')), '?')}.metadata.{field}: "
                "illegal metadata change"
            )
    return merged


def _merge(base: Any, patch: Any, field: str) -> Any:
    if isinstance(base, dict) and isinstance(patch, Mapping):
        for key, value in patch.items():
            if value is None:
                base.pop(key, None)
            elif key in base:
                base[key] = _merge(base[key], value, key)
            else:
                base[key] = copy.deepcopy(value)
        return base
    if isinstance(base, list) and isinstance(patch, list):
        merge_key = _list_key(field, base + patch)
        if merge_key is None:
            return copy.deepcopy(patch)
        out = list(base)
        for item in patch:
            index = next(
                (
                    i
                    for i, old in enumerate(out)
                    if isinstance(old, dict) and old.get(merge_key) == item.get(merge_key)
                ),
                None,
            )
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = _merge(out[index], item, "")
        return out
    return copy.deepcopy(patch)


def _list_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port (Kubernetes' keys).
        return "containerPort" if "containerPort" in items[0] else "port"
    return _MERGE_KEYS.get(field)


def with_parameters(
    objects: list[dict[str, Any]], data: Mapping[str, str], where: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rendered ``objects`` with the ConfigMap's overlays applied, and the notes on keys
    not honoured. Raises ParametersError as ``parameter_overlays`` and ``apply_overlay``."""
    overlays, notes = parameter_overlays(data, where)
    out = [
        apply_overlay(obj, overlays[obj["kind"]], where) if obj.get("kind") in overlays else obj
        for obj in objects
    ]
    return out, notes
