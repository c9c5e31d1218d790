"""The Istio kinds this control plane does not implement: read, kept and reported, never
ignored in silence.

``UNSUPPORTED_KINDS`` is the one list (Istio's CRD set, manifests/charts/base/files/
crd-all.gen.yaml in istio/istio, minus the kinds implemented here). A part that implements
one of them removes it from this list and registers its own model. Each kind listed is:
registered as a resource (``resources.MODELS``) with a model that keeps the spec as written;
watched in cluster mode (``sources/kube/watch.py``, which tolerates a missing CRD); and
given a finding CP0560 (``Codes.UNSUPPORTED_KIND``) saying it has no effect, which reaches the
log, ``analyze``, and the resource's status conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controlplane.api.base import ObjectMeta
from controlplane.api.issues import Codes, Issue


@dataclass(frozen=True)
class UnsupportedKind:
    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]  # served by Istio's CRD; the first is the storage version


UNSUPPORTED_KINDS: tuple[UnsupportedKind, ...] = (
    UnsupportedKind("networking.istio.io", "EnvoyFilter", "envoyfilters", ("v1alpha3",)),
    UnsupportedKind("networking.istio.io", "ProxyConfig", "proxyconfigs", ("v1beta1",)),
    UnsupportedKind(
        "networking.istio.io", "WorkloadGroup", "workloadgroups", ("v1", "v1beta1", "v1alpha3")
    ),
    UnsupportedKind("extensions.istio.io", "WasmPlugin", "wasmplugins", ("v1alpha1",)),
    UnsupportedKind("extensions.istio.io", "TrafficExtension", "trafficextensions", ("v1alpha1",)),
)
UNSUPPORTED_BY_KIND = {k.kind: k for k in UNSUPPORTED_KINDS}


class UnsupportedResource(BaseModel):
    """A resource of an unsupported kind: its metadata, and its spec as written (not read)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any] = Field(default_factory=dict)


def unsupported_kind_issue(kind: str) -> Issue:
    return Issue(
        Codes.UNSUPPORTED_KIND,
        "",
        f"{kind} is not supported by this control plane: the resource is kept but has no "
        "effect on any proxy",
    )


def validate_unsupported(resource: UnsupportedResource) -> list[Issue]:
    return [unsupported_kind_issue(resource.kind)]
