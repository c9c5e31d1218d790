"""What the Gateway API conversion reads (part "gwapi"): the resources, namespace labels,
Services, Secrets and ReferenceGrants, behind one small view (``World``). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controlplane.api.gatewayapi import (
    GATEWAY_API_GROUP,
    LabelSelector,
    ReferenceGrant,
)
from controlplane.api.issues import ResourceKey

CLUSTER_DOMAIN = "svc.cluster.local"
# istiod's annotation on the VirtualServices it makes from Gateway API routes (Gateway and
# Service parents alike): the compiler then gives them the specification's semantics (a
# backend that does not resolve answers 500, ``model.UseGatewaySemantics``).
ROUTE_SEMANTICS = "internal.istio.io/route-semantics"
GATEWAY_SEMANTICS = "gateway"


def uses_gateway_semantics(resource: Any) -> bool:
    """A VirtualService made from Gateway API routes (istiod's ``UseGatewaySemantics``)."""
    return bool(resource.metadata.annotations.get(ROUTE_SEMANTICS) == GATEWAY_SEMANTICS)


@dataclass(frozen=True)
class World:
    resources: Mapping[str, Mapping[ResourceKey, Any]]

    def of(self, kind: str) -> Mapping[ResourceKey, Any]:
        return self.resources.get(kind, {})

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        found = self.of("Namespace").get(ResourceKey("Namespace", "", namespace))
        labels = dict(found.metadata.labels) if found is not None else {}
        labels.setdefault("kubernetes.io/metadata.name", namespace)
        return labels

    def service(self, namespace: str, name: str) -> Any | None:
        return self.of("Service").get(ResourceKey("Service", namespace, name))

    def secret(self, namespace: str, name: str) -> Any | None:
        return self.of("Secret").get(ResourceKey("Secret", namespace, name))

    def granted(
        self, from_kind: str, from_namespace: str, to_group: str, to_kind: str, to: str, ns: str
    ) -> bool:
        """A ReferenceGrant in ``ns`` lets ``from_kind`` objects of ``from_namespace`` refer
        to the ``to_kind`` named ``to`` (or every one of that kind)."""
        for key, grant in self.of("ReferenceGrant").items():
            if key.namespace != ns or not isinstance(grant, ReferenceGrant):
                continue
            if not any(
                f.group == GATEWAY_API_GROUP
                and f.kind == from_kind
                and f.namespace == from_namespace
                for f in grant.spec.from_
            ):
                continue
            if any(
                t.group == to_group and t.kind == to_kind and (not t.name or t.name == to)
                for t in grant.spec.to
            ):
                return True
        return False


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        value = labels.get(req.key)
        if req.operator == "In" and value not in req.values:
            return False
        if req.operator == "NotIn" and present and value in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def created(resource: Any) -> tuple[datetime, str, str]:
    stamp = resource.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp, resource.metadata.namespace, resource.metadata.name)
