"""Typed models of the mesh's inputs, and their validation.

``load`` is the one door every source uses: a document in, a typed resource and its findings
out, or ``InvalidResource`` naming the resource, the field path and the reason.
"""

from __future__ import annotations

from typing import Any

# Registers the security.istio.io validators with `validate`.
from controlplane.api import gateway_validation as _gateway_validation  # noqa: F401

# Registers the mesh config's validator.
from controlplane.api import mesh_validation as _mesh_validation  # noqa: F401

# Registers RequestAuthentication (kind and validator).
from controlplane.api import request_authn as _request_authn  # noqa: F401
from controlplane.api import security_validation as _security_validation  # noqa: F401

# Registers the ServiceEntry and WorkloadEntry validators.
from controlplane.api import serviceentry_validation as _serviceentry_validation  # noqa: F401

# Registers the Sidecar validator (part "sidecar").
from controlplane.api import sidecar_validation as _sidecar_validation  # noqa: F401

# Registers Telemetry (kind and validator; part "telemetry").
from controlplane.api import telemetry as _telemetry  # noqa: F401
from controlplane.api.issues import Codes, InvalidResource, Issue, Level, ResourceKey, errors
from controlplane.api.mesh import MESH_CONFIG_KEY, MeshConfig, mesh_config_document
from controlplane.api.resources import Resource, document_key, is_istio_kind, key_of, parse_resource
from controlplane.api.validation import validate

__all__ = [
    "Codes",
    "InvalidResource",
    "Issue",
    "Level",
    "Resource",
    "ResourceKey",
    "document_key",
    "errors",
    "is_istio_kind",
    "key_of",
    "load",
    "load_mesh_config",
    "parse_resource",
    "validate",
]


def load(doc: Any, default_namespace: str = "default") -> tuple[Resource, list[Issue]]:
    """Parse and validate one document; raise InvalidResource if it has any error."""
    resource = parse_resource(doc, default_namespace)
    found = validate(resource)
    bad = errors(found)
    if bad:
        raise InvalidResource(key_of(resource), bad)
    return resource, found


def load_mesh_config(mesh: Any, prefix: str = "") -> tuple[MeshConfig, list[Issue]]:
    """Parse and validate Istio's MeshConfig YAML (already parsed: a mapping) as the
    ``MeshConfig`` resource; raise InvalidResource if it has any error. Field paths are
    given as the user wrote them: below ``prefix`` (``data.mesh.`` in the istio ConfigMap,
    nothing in ``mesh.yaml``)."""
    document, unused = mesh_config_document(mesh, prefix)
    try:
        resource, found = load(document)
    except InvalidResource as exc:
        raise InvalidResource(
            MESH_CONFIG_KEY, [_mesh_path(i, prefix) for i in exc.issues] + unused
        ) from None
    assert isinstance(resource, MeshConfig)
    return resource, [_mesh_path(i, prefix) for i in found] + unused


def _mesh_path(issue: Issue, prefix: str) -> Issue:
    path = issue.path
    if path == "spec":
        path = prefix.rstrip(".")
    elif path.startswith("spec."):
        path = prefix + path.removeprefix("spec.")
    reason = issue.reason.replace("'spec' does not define it", "MeshConfig does not define it")
    return Issue(issue.code, path, reason, MESH_CONFIG_KEY, issue.origin, issue.level)
