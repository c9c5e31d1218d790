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
(``load_template_config``): every error names the ConfigMap or file, the template, the field
path and the reason, as an ``Issue`` with code CP0820.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from controlplane.api.issues import Codes, InvalidResource, Issue, ResourceKey
from controlplane.inject.injector import (
    STATUS_ANNOTATION,
    InjectionConfig,
    already_injected,
    injection_patch,
    wants_injection,
)

TEMPLATES_ANNOTATION = "inject.istio.io/templates"
NATIVE_ANNOTATION = "sidecar.istio.io/nativeSidecar"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
INJECTOR_CONFIGMAP = "istio-sidecar-injector"  # istiod's name
CONFIG_KEY = "config"
SIDECAR_TEMPLATE = "sidecar"

VALUE_NAMES = ("pod_name", "namespace", "service_account", "app_container", "image")
_PLACEHOLDER = re.compile(r"\$(?:(\$)|\{([^}]*)\})")
_VALUE = re.compile(
    r"^(?:(?P<plain>[a-z_]+)|(?P<map>annotations|labels)\.(?P<key>[^|{}$]+))"
    r"(?:\|(?P<default>[^{}]*))?$"
)
_TEMPLATE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL = _TEMPLATE_NAME

# Kubernetes' Container fields (core/v1): a misspelt one is a load error, not a silent no-op.
CONTAINER_FIELDS = frozenset(
    {
        "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env",
        "resources", "resizePolicy", "restartPolicy", "restartPolicyRules", "volumeMounts",
        "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
        "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy",
        "securityContext", "stdin", "stdinOnce", "tty",
    }
)  # fmt: skip
VOLUME_SOURCES = frozenset(
    {
        "emptyDir", "configMap", "secret", "projected", "downwardAPI", "persistentVolumeClaim",
        "hostPath", "csi", "ephemeral", "image", "nfs",
    }
)  # fmt: skip
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


@dataclass(frozen=True)
class InjectionTemplate:
    """One named template: the Pod fragment as written (placeholders unexpanded)."""

    name: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class TemplateSet:
    """The templates the injector knows besides the built-in ``sidecar``, and where from."""

    templates: Mapping[str, InjectionTemplate] = field(default_factory=dict)
    default_templates: tuple[str, ...] = (SIDECAR_TEMPLATE,)
    origin: str = "built-in"

    def names(self) -> list[str]:
        return sorted({SIDECAR_TEMPLATE, *self.templates})


BUILT_IN = TemplateSet()


class InjectionRefused(Exception):
    """A Pod the templates cannot be applied to; the message is what kubectl shows."""


# ---------------------------------------------------------------------------------------------
# Loading and validation


class _Findings:
    def __init__(self, resource: ResourceKey | None, origin: str, base: str) -> None:
        self.resource = resource
        self.origin = origin
        self.base = base
        self.issues: list[Issue] = []

    def add(self, path: str, reason: str) -> None:
        full = ".".join(p for p in (self.base, path) if p)
        self.issues.append(
            Issue(
                Codes.INJECTION_TEMPLATE_INVALID,
                full,
                reason,
                self.resource,
                None if self.resource is not None else self.origin,  # the resource names it
            )
        )


def load_template_config(
    text: str, origin: str, resource: ResourceKey | None = None, base: str = ""
) -> TemplateSet:
    """The injector config (istiod's shape: ``defaultTemplates`` and ``templates``, each
    template a YAML string or mapping) -> a TemplateSet; InvalidResource with every error."""
    found = _Findings(resource, origin, base)
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        found.add("", f"not YAML: {exc}".replace("\n", " "))
        raise InvalidResource(resource, found.issues) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        found.add("", "must be a mapping with 'templates' (and optionally 'defaultTemplates')")
        raise InvalidResource(resource, found.issues)
    for key in doc:
        if key not in ("templates", "defaultTemplates"):
            found.add(str(key), "unknown field (expected templates, defaultTemplates)")
    raw = doc.get("templates") or {}
    templates: dict[str, InjectionTemplate] = {}
    if not isinstance(raw, Mapping):
        found.add("templates", "must be a mapping of template name to template")
        raw = {}
    for name, body in raw.items():
        template = _load_one(str(name), body, found)
        if template is not None:
            templates[template.name] = template
    defaults = doc.get("defaultTemplates") or [SIDECAR_TEMPLATE]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        found.add("defaultTemplates", "must be a list of template names")
        defaults = [SIDECAR_TEMPLATE]
    for i, name in enumerate(defaults):
        if name != SIDECAR_TEMPLATE and name not in raw:
            found.add(f"defaultTemplates[{i}]", f"no template named {name!r}")
    if found.issues:
        raise InvalidResource(resource, found.issues)
    return TemplateSet(templates, tuple(defaults), origin)


def load_template_configmap(configmap: Mapping[str, Any]) -> TemplateSet:
    """The ``istio-sidecar-injector`` ConfigMap -> its TemplateSet (errors name it)."""
    meta = configmap.get("metadata") or {}
    resource = ResourceKey("ConfigMap", str(meta.get("namespace") or ""), str(meta.get("name")))
    data = configmap.get("data") or {}
    return load_template_config(
        str(data.get(CONFIG_KEY) or ""), str(resource), resource, f"data.{CONFIG_KEY}"
    )


def load_template_path(path: Path) -> TemplateSet:
    """File mode: a file in the ConfigMap's ``config`` shape, or a directory of
    ``<template name>.yaml`` files, each one template body (a file may also be the
    ``istio-sidecar-injector`` ConfigMap itself)."""
    if not path.is_dir():
        text = path.read_text()
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            doc = None
        if isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap":
            # The cluster's ConfigMap, as a file: its errors name the file and the ConfigMap.
            loaded = load_template_configmap(doc)
            return TemplateSet(loaded.templates, loaded.default_templates, str(path))
        return load_template_config(text, str(path))
    found = _Findings(None, str(path), "")
    templates: dict[str, InjectionTemplate] = {}
    for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
        file_found = _Findings(None, str(file), "")
        try:
            body = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            file_found.add("", f"not YAML: {exc}".replace("\n", " "))
            body = None
        else:
            template = _load_one(file.stem, body, file_found, prefix=False)
            if template is not None:
                templates[template.name] = template
        found.issues += file_found.issues
    if found.issues:
        raise InvalidResource(None, found.issues)
    return TemplateSet(templates, (SIDECAR_TEMPLATE,), str(path))


def _load_one(
    name: str, body: Any, found: _Findings, prefix: bool = True
) -> InjectionTemplate | None:
    at = f"templates.{name}" if prefix else ""
    before = len(found.issues)

    def add(path: str, reason: str) -> None:
        found.add(".".join(p for p in (at, path) if p), f"template {name!r}: {reason}")

    if name == SIDECAR_TEMPLATE:
        add("", "the name 'sidecar' is reserved for the built-in Envoy sidecar")
        return None
    if not _TEMPLATE_NAME.match(name):
        add("", "a template name must be a DNS label (lower case letters, digits, '-')")
    if isinstance(body, str):
        try:
            body = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            add("", f"not YAML: {exc}".replace("\n", " "))
            return None
    if not isinstance(body, Mapping):
        add("", "must be a Pod fragment (a mapping with metadata and/or spec)")
        return None
    _validate_body(body, add)
    if len(found.issues) > before:
        return None
    return InjectionTemplate(name, copy.deepcopy(dict(body)))


def _validate_body(body: Mapping[str, Any], add: Any) -> None:
    for key in body:
        if key not in ("metadata", "spec"):
            add(str(key), "unknown field (a template sets metadata and spec only)")
    meta = body.get("metadata") or {}
    if not isinstance(meta, Mapping):
        add("metadata", "must be a mapping")
        meta = {}
    for key, value in meta.items():
        if key not in ("annotations", "labels"):
            add(f"metadata.{key}", "unknown field (annotations and labels only)")
        elif not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            add(f"metadata.{key}", "must map names to strings")
    spec = body.get("spec") or {}
    if not isinstance(spec, Mapping):
        add("spec", "must be a mapping")
        spec = {}
    for key in spec:
        if key not in ("containers", "initContainers", "volumes"):
            add(f"spec.{key}", "unknown field (containers, initContainers, volumes only)")
    for kind in ("initContainers", "containers"):
        _validate_containers(spec.get(kind), f"spec.{kind}", kind == "initContainers", add)
    _validate_volumes(spec.get("volumes"), add)
    _validate_placeholders(body, "", add)


def _named_list(items: Any, path: str, add: Any) -> list[tuple[int, Mapping[str, Any]]]:
    if items is None:
        return []
    if not isinstance(items, list):
        add(path, "must be a list")
        return []
    out, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            add(f"{path}[{i}]", "must be a mapping")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            add(f"{path}[{i}].name", "required")
            continue
        if name in seen:
            add(f"{path}[{i}].name", f"duplicate name {name!r}")
        seen.add(name)
        out.append((i, item))
    return out


def _validate_containers(items: Any, path: str, init: bool, add: Any) -> None:
    for i, container in _named_list(items, path, add):
        at = f"{path}[{i}]"
        for key in container:
            if key not in CONTAINER_FIELDS:
                add(f"{at}.{key}", "not a field of a Kubernetes container")
        policy = container.get("restartPolicy")
        if policy is not None and (not init or policy != "Always"):
            add(
                f"{at}.restartPolicy",
                "only 'Always', on an init container (a native sidecar)",
            )
        if "image" in container and not isinstance(container["image"], str):
            add(f"{at}.image", "must be a string")
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if not isinstance(mount, Mapping) or not mount.get("name"):
                add(f"{at}.volumeMounts[{j}].name", "required")
            elif not mount.get("mountPath"):
                add(f"{at}.volumeMounts[{j}].mountPath", "required")
        for key in ("command", "args"):
            value = container.get(key)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(a, str) for a in value)
            ):
                add(f"{at}.{key}", "must be a list of strings")


def _validate_volumes(items: Any, add: Any) -> None:
    for i, volume in _named_list(items, "spec.volumes", add):
        sources = [k for k in volume if k != "name"]
        unknown = [k for k in sources if k not in VOLUME_SOURCES]
        for key in unknown:
            add(f"spec.volumes[{i}].{key}", "not a volume source this injector knows")
        if len(sources) != 1:
            add(f"spec.volumes[{i}]", "needs exactly one volume source (emptyDir, configMap, ...)")


def _validate_placeholders(value: Any, path: str, add: Any) -> None:
    if isinstance(value, str):
        for match in _PLACEHOLDER.finditer(value):
            if match.group(1):
                continue
            reason = _bad_placeholder(match.group(2))
            if reason:
                add(path, reason)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _validate_placeholders(item, f"{path}.{key}" if path else str(key), add)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _validate_placeholders(item, f"{path}[{i}]", add)


def _bad_placeholder(inner: str) -> str | None:
    parsed = _VALUE.match(inner)
    if parsed is None or (parsed.group("plain") and parsed.group("plain") not in VALUE_NAMES):
        known = ", ".join(VALUE_NAMES)
        return (
            f"unknown value ${{{inner}}} (known: {known}, annotations.KEY, labels.KEY, "
            "each with an optional |default)"
        )
    return None


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
    if names == [SIDECAR_TEMPLATE] and _native(pod, config) == config.native_sidecar:
        return injection_patch(pod, config)  # the plain sidecar, exactly as before templates
    after = inject(pod, config, templates, namespace)
    ops: list[dict[str, Any]] = jsonpatch.make_patch(dict(pod), after).patch
    return ops


def describe_issues(issues: Sequence[Issue]) -> str:
    return "; ".join(str(i) for i in issues)
