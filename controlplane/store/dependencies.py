"""What a change touched: the dependency tokens (``store/tokens.py``) that the change of some
keys from one snapshot to the next invalidates.

A change of a key touches its kind, itself and its namespace, plus what it means to others,
judged in both snapshots (the old and the new version of a Pod may be selected by different
Services): a Service touches its host's definition and endpoints and every workload's
targets, a Pod the endpoints of the Services that select it or whose EndpointSlices name it,
a VirtualService or DestinationRule the hosts it names. The store computes this once per
change (``ChangeTokens`` on its ChangeSet and on the Snapshot it publishes); the compiler
keeps every build whose recorded tokens it does not meet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlplane.api.issues import ResourceKey
from controlplane.store.registry import fqdn, pod_ip, selects
from controlplane.store.snapshot import Snapshot, resolve_host
from controlplane.store.tokens import (
    ANY_ADDRESS,
    WILDCARD_HOST,
    ChangeTokens,
    Token,
    destination_rules_token,
    endpoints_token,
    key_token,
    kind_token,
    namespace_token,
    service_token,
    targets_token,
    virtual_services_token,
)

__all__ = ["ChangeTokens", "Token", "change_tokens"]


def change_tokens(old: Snapshot, new: Snapshot, keys: Iterable[ResourceKey]) -> frozenset[Token]:
    """The tokens that the change from ``old`` to ``new`` of ``keys`` invalidates."""
    out: set[Token] = set()
    for key in keys:
        out.add(kind_token(key.kind))
        out.add(key_token(key))
        out.add(namespace_token(key.kind, key.namespace))
        for snapshot in (old, new):
            resource = snapshot.get(key)
            if resource is not None:
                out.update(_semantic_tokens(snapshot, key, resource))
    return frozenset(out)


def _slice_owners_of_pod(snapshot: Snapshot, namespace: str, pod_name: str) -> set[str]:
    """Names of the services whose EndpointSlices reference ``pod_name``."""
    owners: set[str] = set()
    for owner, slices in snapshot.slice_owners(namespace):
        for eps in slices:
            if any(
                ep.target_ref is not None and ep.target_ref.name == pod_name for ep in eps.endpoints
            ):
                owners.add(owner)
    return owners


def _semantic_tokens(snapshot: Snapshot, key: ResourceKey, resource: Any) -> Iterable[Token]:
    kind = key.kind
    if kind == "Service":
        host = fqdn(key.name, key.namespace)
        yield service_token(host)
        yield endpoints_token(host)
        yield targets_token(ANY_ADDRESS)
    elif kind == "Pod":
        address = pod_ip(resource)
        if address:
            yield targets_token(address)
        labels = resource.metadata.labels
        for service in snapshot.services_in(key.namespace):
            if service.selector and selects(service.selector, labels):
                yield endpoints_token(service.hostname)
        # EndpointSlices take labels from the Pods they reference by name.
        for owner in _slice_owners_of_pod(snapshot, key.namespace, key.name):
            yield endpoints_token(fqdn(owner, key.namespace))
    elif kind == "EndpointSlice":
        owner = resource.metadata.labels.get("kubernetes.io/service-name")
        if owner:
            yield endpoints_token(fqdn(owner, key.namespace))
        for endpoint in resource.endpoints:
            for address in endpoint.addresses:
                yield targets_token(address)
    elif kind == "ServiceEntry":
        for host in resource.spec.hosts:
            yield service_token(host)
            yield endpoints_token(host)
        yield targets_token(ANY_ADDRESS)
    elif kind == "WorkloadEntry":
        if resource.spec.address:
            yield targets_token(resource.spec.address)
        labels = resource.spec.labels
        for service in snapshot.services_in(key.namespace):
            if service.selector and selects(service.selector, labels):
                yield endpoints_token(service.hostname)
    elif kind == "VirtualService":
        for host in resource.spec.hosts:
            resolved = resolve_host(host, key.namespace)
            yield virtual_services_token(WILDCARD_HOST if "*" in resolved else resolved)
    elif kind == "DestinationRule":
        resolved = resolve_host(resource.spec.host, key.namespace)
        yield destination_rules_token(WILDCARD_HOST if "*" in resolved else resolved)
