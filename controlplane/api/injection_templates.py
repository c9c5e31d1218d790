"""Injection templates as configuration: loading and validating the injector's templates.

The injector's ConfigMap (``istio-sidecar-injector``, istiod's name and shape: its ``config``
key holds ``defaultTemplates`` and ``templates``) or file-mode's file / directory becomes a
``TemplateSet``; every error is an ``Issue`` (code CP0820) naming the ConfigMap or file, the
field path, the template and the reason. Pure and here (not in ``inject``) so the admission
webhook, the operator's watch and ``controlplane analyze`` all judge a template with the same
words. What a template means, and applying it to a Pod: ``controlplane.inject.templates``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.api.issues import Codes, InvalidResource, Issue, ResourceKey

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


def placeholder_pattern() -> re.Pattern[str]:
    """``$$`` (group 1) or ``${...}`` (group 2) in a template's string."""
    return _PLACEHOLDER


def value_pattern() -> re.Pattern[str]:
    """What may stand inside ``${...}``: a value name or annotations./labels.KEY, |default."""
    return _VALUE


def injector_configmap_findings(text: str, origin: str) -> list[Issue]:
    """The findings on any injector ConfigMap among the YAML documents of a file
    (``controlplane analyze``); [] for files without one or that do not read."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []  # the file reader reports it
    issues: list[Issue] = []
    for doc in docs:
        if not isinstance(doc, Mapping) or doc.get("kind") != "ConfigMap":
            continue
        if (doc.get("metadata") or {}).get("name") != INJECTOR_CONFIGMAP:
            continue
        try:
            load_template_configmap(doc)
        except InvalidResource as exc:
            issues += [i.with_context(i.resource, origin) for i in exc.issues]
    return issues
