"""Injection templates: named patches of a Pod, as Istio's ``inject.istio.io/templates``.

istiod renders each template named by the Pod's ``inject.istio.io/templates`` annotation
(comma-separated, in that order; the injector config's ``defaultTemplates``, ``[sidecar]``,
when the annotation is absent) and merges the result into the Pod with a strategic merge.
This module does the same with a safe template language instead of Go templates:

* A template is a fragment of a Pod, in YAML::

      metadata: {annotations: {...}, labels: {...}}
      spec:
        initContainers: [...]   # restartPolicy: Always -> a native sidecar
        containers: [...]       # a name the Pod already has -> merged into that container
        volumes: [...]

* Strings may carry values from the Pod: ``${pod_name}``, ``${namespace}``,
  ``${service_account}``, ``${app_container}`` (the ``kubectl.kubernetes.io/default-container``
  annotation, else the first container), ``${image}`` (the control plane's image, whose
  ``controlplane helper ...`` programs the examples run), ``${annotations.KEY}``,
  ``${labels.KEY}``, each optionally with a default: ``${annotations.KEY|default}``. ``$$``
  is a literal ``$``; any other ``$`` (Kubernetes' own ``$(VAR)``) is left alone. Values are
  substituted into the strings of the parsed YAML, never into its text: a value cannot add
  structure, and there are no expressions, loops or code.
* The merge is Kubernetes' strategic merge for these fields: containers, init containers,
  volumes and env by ``name``, volume mounts by ``mountPath``, ports by ``containerPort``;
  maps merge key by key; other lists and scalars are replaced by the template's.
* Native sidecars: an init container with ``restartPolicy: Always`` starts before the
  application and stops after it (Kubernetes >= 1.29). Where the cluster has none (or the Pod
  says ``sidecar.istio.io/nativeSidecar: "false"``) it becomes a regular container.

The built-in template ``sidecar`` is the Envoy proxy of ``injector.injection_patch``; its
name is reserved. Where templates come from: the ``config`` key of the ConfigMap
``istio-sidecar-injector`` in the control plane's namespace (cluster mode, as istiod's), or
a file / directory (``controlplane inject --templates``). Both are validated when loaded
(``controlplane.api.injection_templates``): every error names the ConfigMap or file, the template, the field
path and the reason, as an ``Issue`` with code CP0820.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from controlplane.api.injection_templates import (
    BUILT_IN,
    CONFIG_KEY,
    DEFAULT_CONTAINER_ANNOTATION,
    INJECTOR_CONFIGMAP,
    NATIVE_ANNOTATION,
    SIDECAR_TEMPLATE,
    TEMPLATES_ANNOTATION,
    VALUE_NAMES,
    InjectionTemplate,
    TemplateSet,
    load_template_config,
    load_template_configmap,
    load_template_path,
    placeholder_pattern,
    value_pattern,
)
from controlplane.inject.injector import (
    STATUS_ANNOTATION,
    InjectionConfig,
    already_injected,
    injection_patch,
    wants_injection,
)

__all__ = [
    "BUILT_IN",
    "CONFIG_KEY",
    "INJECTOR_CONFIGMAP",
    "SIDECAR_TEMPLATE",
    "TEMPLATES_ANNOTATION",
    "VALUE_NAMES",
    "InjectionRefused",
    "InjectionTemplate",
    "TemplateSet",
    "inject",
    "load_template_config",
    "load_template_configmap",
    "load_template_path",
    "render",
    "selected_templates",
    "strategic_merge",
    "templated_patch",
]

_PLACEHOLDER = placeholder_pattern()
_VALUE = value_pattern()
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class InjectionRefused(Exception):
    """A Pod the templates cannot be applied to; the message is what kubectl shows."""


# ---------------------------------------------------------------------------------------------
# Rendering and merging


@dataclass(frozen=True)
class PodValues:
    """What a template may read from the Pod under admission."""

    pod_name: str
    namespace: str
    service_account: str
    app_container: str
    image: str
    annotations: Mapping[str, str]
    labels: Mapping[str, str]

    @staticmethod
    def of(pod: Mapping[str, Any], config: InjectionConfig, namespace: str = "") -> PodValues:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        containers = [str(c.get("name")) for c in spec.get("containers") or [] if c.get("name")]
        app = annotations.get(DEFAULT_CONTAINER_ANNOTATION) or (containers[0] if containers else "")
        name = str(meta.get("name") or str(meta.get("generateName") or "").rstrip("-"))
        return PodValues(
            pod_name=name,
            namespace=str(meta.get("namespace") or namespace or "default"),
            service_account=str(spec.get("serviceAccountName") or "default"),
            app_container=app,
            image=config.image,
            annotations=annotations,
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        )

    def lookup(self, inner: str, template: str, path: str) -> str:
        parsed = _VALUE.match(inner)
        if parsed is None:  # validated at load; kept for safety
            raise InjectionRefused(f"template {template!r}: {path}: bad value ${{{inner}}}")
        default = parsed.group("default")
        if parsed.group("plain"):
            value = str(getattr(self, parsed.group("plain")))
            return value if value or default is None else default
        source = self.annotations if parsed.group("map") == "annotations" else self.labels
        key = parsed.group("key")
        if key in source:
            return source[key]
        if default is not None:
            return default
        kind = "annotation" if source is self.annotations else "label"
        raise InjectionRefused(
            f"template {template!r}: {path}: the pod has no {kind} {key!r} "
            "and the template gives no default"
        )


def render(template: InjectionTemplate, values: PodValues) -> dict[str, Any]:
    """The template's Pod fragment with the Pod's values in its strings."""

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str):

            def one(match: re.Match[str]) -> str:
                if match.group(1):
                    return "$"
                return values.lookup(match.group(2), template.name, path)

            return _PLACEHOLDER.sub(one, value)
        if isinstance(value, Mapping):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    rendered: dict[str, Any] = walk(template.body, "")
    return rendered


def strategic_merge(base: Any, patch: Any, field_name: str = "") -> Any:
    """``patch`` merged into ``base`` the way a strategic merge patch merges Pod fields."""
    if isinstance(base, Mapping) and isinstance(patch, Mapping):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value, key) if key in base else value
        return out
    key = _MERGE_KEYS.get(field_name)
    if key is not None and isinstance(base, list) and isinstance(patch, list):
        merged = list(base)
        where = {item.get(key): i for i, item in enumerate(merged) if isinstance(item, Mapping)}
        for item in patch:
            index = where.get(item.get(key)) if isinstance(item, Mapping) else None
            if index is None:
                merged.append(item)
            else:
                merged[index] = strategic_merge(merged[index], item)
        return merged
    return copy.deepcopy(patch)


def _as_regular_containers(fragment: dict[str, Any]) -> dict[str, Any]:
    """No native sidecars here: an init container with ``restartPolicy: Always`` becomes a
    regular container (it then starts with, not before, the application)."""
    spec = fragment.get("spec") or {}
    inits = spec.get("initContainers") or []
    moving = [c for c in inits if c.get("restartPolicy") == "Always"]
    if not moving:
        return fragment
    spec = dict(spec)
    spec["initContainers"] = [c for c in inits if c.get("restartPolicy") != "Always"]
    if not spec["initContainers"]:
        del spec["initContainers"]
    spec["containers"] = [
        *(spec.get("containers") or []),
        *({k: v for k, v in c.items() if k != "restartPolicy"} for c in moving),
    ]
    return {**fragment, "spec": spec}


def selected_templates(pod: Mapping[str, Any], templates: TemplateSet) -> list[str]:
    """The templates a Pod asks for, in its order (istiod's ``selectTemplates``)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(TEMPLATES_ANNOTATION)
    if raw is None:
        return list(templates.default_templates)
    names = [n.strip() for n in str(raw).split(",") if n.strip()]
    for name in names:
        if name != SIDECAR_TEMPLATE and name not in templates.templates:
            raise InjectionRefused(
                f'requested template "{name}" not found; have {", ".join(templates.names())}'
                f" (from {templates.origin})"
            )
    return names


def _native(pod: Mapping[str, Any], config: InjectionConfig) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    said = str(annotations.get(NATIVE_ANNOTATION, "")).lower()
    return {"true": True, "false": False}.get(said, config.native_sidecar)


def _names(pod: Mapping[str, Any], kind: str) -> list[str]:
    return [str(i.get("name")) for i in (pod.get("spec") or {}).get(kind) or []]


def inject(
    pod: Mapping[str, Any],
    config: InjectionConfig,
    templates: TemplateSet = BUILT_IN,
    namespace: str = "",
) -> dict[str, Any]:
    """The Pod with every selected template applied in order (unchanged if it opts out or
    is injected already). Raises InjectionRefused with the reason kubectl should show."""
    if not wants_injection(pod) or already_injected(pod):
        return copy.deepcopy(dict(pod))
    names = selected_templates(pod, templates)
    native = _native(pod, config)
    current: dict[str, Any] = copy.deepcopy(dict(pod))
    values = PodValues.of(pod, config, namespace)
    for name in names:
        if name == SIDECAR_TEMPLATE:
            ops = injection_patch(current, _with_native(config, native))
            current = jsonpatch.apply_patch(current, ops)
            continue
        fragment = render(templates.templates[name], values)
        if not native:
            fragment = _as_regular_containers(fragment)
        current = strategic_merge(current, fragment)
        _check_images(pod, current, name)
    return _with_status(pod, current, names, native)


def _with_native(config: InjectionConfig, native: bool) -> InjectionConfig:
    if config.native_sidecar == native:
        return config
    from dataclasses import replace

    return replace(config, native_sidecar=native)


def _check_images(before: Mapping[str, Any], after: Mapping[str, Any], template: str) -> None:
    for kind in ("initContainers", "containers"):
        old = set(_names(before, kind))
        for i, container in enumerate((after.get("spec") or {}).get(kind) or []):
            if container.get("name") not in old and not container.get("image"):
                raise InjectionRefused(
                    f"template {template!r}: spec.{kind}[{i}] ({container.get('name')}): "
                    "adds a container without an image (a name the pod does not have?)"
                )


def _with_status(
    pod: Mapping[str, Any], current: dict[str, Any], names: list[str], native: bool
) -> dict[str, Any]:
    """istiod's ``sidecar.istio.io/status``: what was added, and here also by which templates."""
    added = {
        kind: [n for n in _names(current, kind) if n not in _names(pod, kind)]
        for kind in ("initContainers", "containers", "volumes")
    }
    meta = current.setdefault("metadata", {})
    annotations = meta.setdefault("annotations", {})
    status = {**added, "native": native, "templates": names}
    annotations[STATUS_ANNOTATION] = json.dumps(status, sort_keys=True)
    apps = _names(pod, "containers")
    if apps and (added["containers"] or added["initContainers"]):
        # Keep `kubectl logs/exec` pointing at the application, not at a helper.
        annotations.setdefault(DEFAULT_CONTAINER_ANNOTATION, apps[0])
    return current


def templated_patch(
    pod: Mapping[str, Any],
    config: InjectionConfig,
    templates: TemplateSet = BUILT_IN,
    namespace: str = "",
) -> list[dict[str, Any]]:
    """``inject`` as a JSON patch (RFC 6902); [] when nothing changes."""
    if not wants_injection(pod) or already_injected(pod):
        return []
    names = selected_templates(pod, templates)
    if not names:
        return []  # `inject.istio.io/templates: ""`: nothing asked for
    if names == [SIDECAR_TEMPLATE] and _native(pod, config) == config.native_sidecar:
        return injection_patch(pod, config)  # the plain sidecar, exactly as before templates
    after = inject(pod, config, templates, namespace)
    ops: list[dict[str, Any]] = jsonpatch.make_patch(dict(pod), after).patch
    return ops
