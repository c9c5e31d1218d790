"""Typed models of the mesh's inputs, and their validation.

``load`` is the one door every source uses: a document in, a typed resource and its findings
out, or ``InvalidResource`` naming the resource, the field path and the reason.
"""

from __future__ import annotations

from typing import Any

# Registers the security.istio.io validators with `validate`.
from controlplane.api import security_validation as _security_validation  # noqa: F401

# Registers the Sidecar validator (part "sidecar").
from controlplane.api import sidecar_validation as _sidecar_validation  # noqa: F401
from controlplane.api.issues import Codes, InvalidResource, Issue, Level, ResourceKey, errors
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
