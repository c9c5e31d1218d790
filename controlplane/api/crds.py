"""CustomResourceDefinitions for the Istio kinds, generated from the pydantic models.

The models in ``controlplane.api`` are the one source of truth for what a resource may
contain; ``crds/`` is generated from them (``controlplane crds`` / ``make crds``) and a test
fails when the two drift apart.

The schemas are *structural* (every node has a type, no ``$ref``, ``anyOf`` only unwrapped
from ``X | None``), so the apiserver accepts them and prunes fields no model declares. They
check types only: every rule that needs a reason (a negative weight, a duplicate host) is
left to the validating webhook, so the user sees the validator's message with its field path
instead of a generic schema error. No defaults are declared: the apiserver must store what
the user wrote, as Istio's CRDs do.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from controlplane.api.gateway import Gateway
from controlplane.api.networking import DestinationRule, VirtualService
from controlplane.api.request_authn import RequestAuthentication
from controlplane.api.security import AuthorizationPolicy, PeerAuthentication
from controlplane.api.serviceentry import ServiceEntry, WorkloadEntry
from controlplane.api.sidecar import Sidecar
from controlplane.api.telemetry import Telemetry


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    json_path: str
    description: str


@dataclass(frozen=True)
class KindInfo:
    """How one Istio kind is published as a CRD."""

    group: str
    kind: str
    plural: str
    short_names: tuple[str, ...]
    model: type[BaseModel]
    versions: tuple[str, ...]  # the first is the storage version
    columns: tuple[Column, ...]
    categories: tuple[str, ...]


_AGE = Column("Age", "date", ".metadata.creationTimestamp", "Time since the resource was created")
_NETWORKING = ("v1", "v1beta1", "v1alpha3")
_SECURITY = ("v1", "v1beta1")

KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        "networking.istio.io",
        "VirtualService",
        "virtualservices",
        ("vs",),
        VirtualService,
        _NETWORKING,
        (
            Column("Gateways", "string", ".spec.gateways", "The gateways the routes apply to"),
            Column("Hosts", "string", ".spec.hosts", "The destination hosts the routes apply to"),
            _AGE,
        ),
        ("istio-io", "networking-istio-io"),
    ),
    KindInfo(
        "networking.istio.io",
        "DestinationRule",
        "destinationrules",
        ("dr",),
        DestinationRule,
        _NETWORKING,
        (Column("Host", "string", ".spec.host", "The service the rule applies to"), _AGE),
        ("istio-io", "networking-istio-io"),
    ),
    KindInfo(  # part "gateway" (issue 13)
        "networking.istio.io",
        "Gateway",
        "gateways",
        ("gw",),
        Gateway,
        _NETWORKING,
        (_AGE,),
        ("istio-io", "networking-istio-io"),
    ),
    KindInfo(
        "networking.istio.io",
        "ServiceEntry",
        "serviceentries",
        ("se",),
        ServiceEntry,
        _NETWORKING,
        (
            Column("Hosts", "string", ".spec.hosts", "The hosts associated with the ServiceEntry"),
            Column(
                "Location",
                "string",
                ".spec.location",
                "Whether the service is external to the mesh or part of the mesh "
                "(MESH_EXTERNAL or MESH_INTERNAL)",
            ),
            Column(
                "Resolution",
                "string",
                ".spec.resolution",
                "Service resolution mode for the hosts (NONE, STATIC, DNS or DNS_ROUND_ROBIN)",
            ),
            _AGE,
        ),
        ("istio-io", "networking-istio-io"),
    ),
    KindInfo(
        "networking.istio.io",
        "WorkloadEntry",
        "workloadentries",
        ("we",),
        WorkloadEntry,
        _NETWORKING,
        (
            _AGE,
            Column(
                "Address",
                "string",
                ".spec.address",
                "Address associated with the network endpoint.",
            ),
        ),
        ("istio-io", "networking-istio-io"),
    ),
    KindInfo(
        "networking.istio.io",
        "Sidecar",
        "sidecars",
        (),
        Sidecar,
        _NETWORKING,
        (_AGE,),
        ("istio-io", "networking-istio-io"),
    ),
    KindInfo(
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
        ("pa",),
        PeerAuthentication,
        _SECURITY,
        (Column("Mode", "string", ".spec.mtls.mode", "The mutual TLS mode"), _AGE),
        ("istio-io", "security-istio-io"),
    ),
    KindInfo(
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
        ("ap",),
        AuthorizationPolicy,
        _SECURITY,
        (Column("Action", "string", ".spec.action", "The action of the policy"), _AGE),
        ("istio-io", "security-istio-io"),
    ),
    KindInfo(
        "security.istio.io",
        "RequestAuthentication",
        "requestauthentications",
        ("ra",),
        RequestAuthentication,
        _SECURITY,
        (_AGE,),
        ("istio-io", "security-istio-io"),
    ),
    KindInfo(  # part "telemetry"
        "telemetry.istio.io",
        "Telemetry",
        "telemetries",
        ("telemetry",),
        Telemetry,
        ("v1", "v1alpha1"),
        (_AGE,),
        ("istio-io", "telemetry-istio-io"),
    ),
)

# What `kubectl explain` shows for the fields users meet first (schema paths without
# indexes). Everything else carries its type only.
DESCRIPTIONS: dict[str, str] = {
    "VirtualService.spec": "Routing rules for traffic to a set of hosts.",
    "VirtualService.spec.hosts": "The destination hosts the rules apply to (short names are "
    "resolved in the resource's namespace).",
    "VirtualService.spec.gateways": "Gateways and sidecars the routes apply to; empty or 'mesh' "
    "means every sidecar.",
    "VirtualService.spec.http": "An ordered list of HTTP routes; the first that matches wins.",
    "VirtualService.spec.http.match": "Conditions a request must meet; several are ORed.",
    "VirtualService.spec.http.route": "Where matching requests go: one or more destinations "
    "with relative weights.",
    "VirtualService.spec.http.route.destination": "The service (and optional subset and port) "
    "that receives the requests.",
    "VirtualService.spec.http.route.weight": "The relative share of traffic for this "
    "destination; weights need not sum to 100.",
    "VirtualService.spec.http.timeout": "Timeout for the whole request (e.g. 1.5s).",
    "VirtualService.spec.http.retries": "Retry policy for the requests.",
    "VirtualService.spec.tcp": "An ordered list of routes for opaque TCP traffic.",
    "VirtualService.spec.tls": "An ordered list of routes for TLS traffic, matched by SNI.",
    "VirtualService.spec.exportTo": "Namespaces the resource is visible to ('.', '*' or names).",
    "DestinationRule.spec": "Policies applied to traffic for a service after routing.",
    "DestinationRule.spec.host": "The service the rule applies to.",
    "DestinationRule.spec.subsets": "Named sets of endpoints, selected by labels.",
    "DestinationRule.spec.trafficPolicy": "Load balancing, connection pool, outlier "
    "detection and TLS settings.",
    "ServiceEntry.spec": "Hosts added to the mesh's service registry (external services, "
    "VMs): their ports, addresses, resolution and endpoints.",
    "ServiceEntry.spec.hosts": "The hosts of the entry, matched against the Host header, "
    "the SNI or (with addresses) the destination IP.",
    "ServiceEntry.spec.resolution": "How endpoints are found: NONE (the original destination), "
    "STATIC (the endpoints given), DNS or DNS_ROUND_ROBIN (resolved by the proxy).",
    "ServiceEntry.spec.location": "MESH_EXTERNAL (no mTLS) or MESH_INTERNAL.",
    "WorkloadEntry.spec": "A workload that is not a Kubernetes pod (a VM), selected by "
    "Services and ServiceEntries by its labels.",
    "Sidecar.spec": "The part of the mesh the selected workloads' proxies see and how they "
    "accept and send traffic.",
    "Sidecar.spec.egress.hosts": "The services a proxy may reach, as namespace/dnsName "
    "('./*', 'istio-system/*', '*/reviews.default.svc.cluster.local').",
    "Sidecar.spec.workloadSelector": "The workloads the Sidecar applies to; none means the "
    "whole namespace (or, in the root namespace, every namespace without its own).",
    "PeerAuthentication.spec": "How workloads accept mutual TLS traffic.",
    "PeerAuthentication.spec.mtls": "The mutual TLS mode for the selected workloads.",
    "PeerAuthentication.spec.selector": "The workloads the policy applies to; none means the "
    "whole namespace.",
    "AuthorizationPolicy.spec": "Access control for the selected workloads.",
    "AuthorizationPolicy.spec.action": "ALLOW, DENY, AUDIT or CUSTOM.",
    "AuthorizationPolicy.spec.rules": "Requests matching any rule get the action.",
    "AuthorizationPolicy.spec.selector": "The workloads the policy applies to; none means the "
    "whole namespace.",
    "Telemetry.spec": "Access logging, tracing and metrics for the selected workloads; none "
    "selected means the namespace (or, in the root namespace, the whole mesh).",
    "Telemetry.spec.accessLogging": "Which access log providers (mesh config "
    "extensionProviders) the proxies use, per mode (CLIENT, SERVER).",
    "Telemetry.spec.tracing": "Which tracing provider, the sampling percentage and custom tags.",
    "RequestAuthentication.spec": "Which JSON Web Tokens the selected workloads accept.",
    "RequestAuthentication.spec.jwtRules": "Issuers, audiences, keys (jwks or jwksUri) and "
    "where the token is found; an invalid token is refused (401), a missing one passes.",
    "RequestAuthentication.spec.selector": "The workloads the policy applies to; none means "
    "the whole namespace (the mesh, in the root namespace).",
}

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "What the control plane made of the resource: conditions Accepted and "
    "Reconciled, observedGeneration and validation messages.",
    "x-kubernetes-preserve-unknown-fields": True,
}


class SchemaError(ValueError):
    """A model cannot be expressed as a structural schema."""


def structural_schema(model: type[BaseModel], kind: str, root: str = "spec") -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (inlined, types only, no defaults)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, f"{kind}.{root}", ())


def _convert(
    node: dict[str, Any],
    defs: dict[str, Any],
    path: str,
    seen: tuple[str, ...],
    describe: bool = True,
) -> dict[str, Any]:
    node = _unwrap(node)
    ref = node.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise SchemaError(f"{path}: recursive model {name} cannot be a structural schema")
        return _convert(defs[name], defs, path, (*seen, name), describe)
    kind = node.get("type")
    if not isinstance(kind, str):
        raise SchemaError(f"{path}: no single type in {node}")
    out: dict[str, Any] = {"type": kind}
    description = (DESCRIPTIONS.get(path) if describe else None) or node.get("description")
    if description:
        out["description"] = " ".join(str(description).split())
    if "enum" in node:
        out["enum"] = list(node["enum"])
    if "format" in node and kind in ("integer", "number"):
        out["format"] = node["format"]
    if kind == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {
                name: _convert(sub, defs, f"{path}.{name}", seen) for name, sub in props.items()
            }
            required = [r for r in node.get("required", []) if r in props]
            if required:
                out["required"] = required
        else:
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                out["additionalProperties"] = _convert(extra, defs, f"{path}.*", seen)
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _convert(node.get("items", {}), defs, path, seen, describe=False)
    return out


def _unwrap(node: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` (``anyOf`` with a null branch) becomes ``X``; other unions are refused."""
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if branches is None:
            continue
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) != 1:
            raise SchemaError(f"union of {len(kept)} types is not structural: {node}")
        merged: dict[str, Any] = copy.deepcopy(kept[0])
        if "description" in node and "description" not in merged:
            merged["description"] = node["description"]
        return merged
    return node


def crd(info: KindInfo) -> dict[str, Any]:
    """One CustomResourceDefinition: every version served, the first stored."""
    spec_model = info.model.model_fields["spec"].annotation
    if not isinstance(spec_model, type) or not issubclass(spec_model, BaseModel):
        raise SchemaError(f"{info.kind}: spec is not a model")
    schema = {
        "type": "object",
        "properties": {
            "spec": structural_schema(spec_model, info.kind),
            "status": _STATUS_SCHEMA,
        },
    }
    singular = info.kind.lower()
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            "description": c.description,
        }
        for c in info.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{info.group}",
            "labels": {"app.kubernetes.io/part-of": "controlplane"},
            "annotations": {"controlplane.dev/generated-by": "controlplane crds"},
        },
        "spec": {
            "group": info.group,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": i == 0,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(columns),
                    "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
                }
                for i, version in enumerate(info.versions)
            ],
        },
    }


def crd_files() -> dict[str, str]:
    """File name -> YAML text for every CRD (what ``crds/`` holds)."""
    header = "# Generated by `controlplane crds` from controlplane/api; do not edit.\n"
    return {
        f"{info.group}_{info.plural}.yaml": header
        + yaml.safe_dump(crd(info), sort_keys=False, width=100)
        for info in KINDS
    }
