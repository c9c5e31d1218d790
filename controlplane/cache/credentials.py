"""Gateway credentials over SDS: the Kubernetes Secrets that Gateway servers name by
``tls.credentialName``, as the SDS resources a gateway asks for.

istiod names them ``kubernetes://<name>`` (certificate chain and key) and
``kubernetes://<name>-cacert`` (the CA bundle client certificates are checked against, from
the Secret ``<name>-cacert`` if there is one, else from the ``ca.crt``/``cacert`` key of
``<name>`` itself); ``kubernetes://<namespace>/<name>`` is the same Secret named with its
namespace. See pilot/pkg/xds/sds.go and pilot/pkg/credentials/kube/secrets.go.

Who gets what: as in istiod, a proxy receives credentials only from the namespace of the
identity its stream proved (``Proxy.identity``), never the namespace it claims; a proxy
without a proved identity receives none. The maps are built per namespace, once per change
of a Secret in it, and shared by every proxy of that namespace; the stream sends only the
names the proxy asked for. ``SecretCache`` (``secrets.py``) merges them with the workload's
own ``default`` and ``ROOTCA``.

Rotation: when a Secret changes, the store publishes a change of its key; the map of its
namespace is rebuilt and the watches of that namespace are woken. The resource's content
version moves, so only the rotated secret is sent, and Envoy uses the new certificate for
new handshakes without a restart or a listener drain.

Cross-namespace (Gateway API ``certificateRefs``): a listener's Secret of another namespace
is named ``kubernetes-gateway://<namespace>/<name>``, as istiod names it. Such a resource is
served to the gateways of namespace P only while it is verified for P
(``store.gateway_credentials.verified_gateway_credentials``: a Gateway of P names it, and the
Secret is in P or a ReferenceGrant in its namespace lets Gateways of P use it), as istiod's
SDS serves ``kubernetes-gateway`` resources only from ``VerifiedCertificateReferences``.
When the grant or the reference goes, the resource leaves P's map and P's gateways are
woken: Envoy is told the secret is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import MappingProxyType

from controlplane.api.credentials import (
    CA_SUFFIX,
    SDS_KUBERNETES_PREFIX,
    CredentialError,
    Secret,
    certificate_of,
    kubernetes_gateway_credential,
    root_of,
)
from controlplane.api.issues import ResourceKey
from controlplane.api.text import printable
from controlplane.cache.interface import NOTHING, ResourceMap
from controlplane.compile.resources import CompiledResource
from controlplane.compile.sds import credential_ca_secret, credential_secret
from controlplane.store import ChangeSet, Snapshot, Store
from controlplane.store.gateway_credentials import verified_gateway_credentials

log = logging.getLogger("controlplane.sds")

CredentialsChanged = Callable[[frozenset[str]], None]  # the namespaces whose map changed
_CERT_KEYS = frozenset({"tls.crt", "tls.key", "cert", "key"})
# What decides which kubernetes-gateway:// credentials a namespace is served.
_GRANT_INPUTS = frozenset({Secret.__name__, "Gateway", "ReferenceGrant"})


class GatewayCredentials:
    """The credential secrets of each namespace, following the store."""

    def __init__(self, store: Store | None = None) -> None:
        # namespace -> its own Secrets' credentials (kubernetes://)
        self._by_namespace: dict[str, ResourceMap] = {}
        # namespace -> the verified kubernetes-gateway:// credentials of its gateways
        self._granted: dict[str, ResourceMap] = {}
        # namespace -> (own, granted, the two merged): one shared map while neither moves
        self._merged: dict[str, tuple[ResourceMap, ResourceMap, ResourceMap]] = {}
        self._listeners: list[CredentialsChanged] = []
        if store is not None:
            self.load(store.snapshot)
            store.subscribe(self._on_change)

    def subscribe(self, listener: CredentialsChanged) -> None:
        self._listeners.append(listener)

    def for_namespace(self, namespace: str) -> ResourceMap:
        """Every credential SDS resource the gateways of ``namespace`` may have (shared;
        never mutated)."""
        own = self._by_namespace.get(namespace, NOTHING)
        granted = self._granted.get(namespace, NOTHING)
        if not granted:
            return own
        cached = self._merged.get(namespace)
        if cached is not None and cached[0] is own and cached[1] is granted:
            return cached[2]
        merged: ResourceMap = MappingProxyType({**own, **granted})
        self._merged[namespace] = (own, granted, merged)
        return merged

    def load(self, snapshot: Snapshot) -> None:
        self.rebuild(snapshot, {k.namespace for k in snapshot.of_kind(Secret)}, grants=True)

    def _on_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        namespaces = {k.namespace for k in change.changed if k.kind == Secret.__name__}
        grants = bool(change.kinds & _GRANT_INPUTS)
        if namespaces or grants:
            self.rebuild(snapshot, namespaces, grants=grants)

    def rebuild(self, snapshot: Snapshot, namespaces: Iterable[str], grants: bool = True) -> None:
        """Rebuild the maps of ``namespaces`` (and, with ``grants``, every namespace's
        verified cross-namespace credentials) and tell the listeners which ones moved."""
        wanted = set(namespaces)
        grouped: dict[str, list[Secret]] = {ns: [] for ns in wanted}
        for key, secret in snapshot.of_kind(Secret).items():
            if key.namespace in wanted:
                grouped[key.namespace].append(secret)
        moved: set[str] = set()
        for namespace, secrets in grouped.items():
            built = _namespace_map(namespace, secrets)
            if _replace(self._by_namespace, namespace, built):
                moved.add(namespace)
        if grants:
            verified = verified_gateway_credentials(snapshot.resources)
            for namespace in set(verified) | set(self._granted):
                built = _granted_map(snapshot, verified.get(namespace, frozenset()))
                if _replace(self._granted, namespace, built):
                    moved.add(namespace)
        for namespace in moved:
            self._merged.pop(namespace, None)
        if moved:
            names = frozenset(moved)
            log.info("credentials changed in namespace(s) %s", ", ".join(sorted(names)))
            for listener in self._listeners:
                listener(names)


def _replace(maps: dict[str, ResourceMap], namespace: str, built: ResourceMap) -> bool:
    """Put ``built`` as ``namespace``'s map; whether any resource's version moved."""
    old = maps.get(namespace, NOTHING)
    if _versions(old) == _versions(built):
        return False
    if built:
        maps[namespace] = built
    else:
        maps.pop(namespace, None)
    return True


def _granted_map(snapshot: Snapshot, secrets: Iterable[tuple[str, str]]) -> ResourceMap:
    out: dict[str, CompiledResource] = {}
    for namespace, name in sorted(secrets):
        found = snapshot.of_kind(Secret).get(ResourceKey(Secret.__name__, namespace, name))
        if found is None:
            continue
        try:
            info = certificate_of(found)
        except CredentialError:
            continue  # the listener's status and the namespace's own map say why
        sds = kubernetes_gateway_credential(namespace, name)
        out[sds] = CompiledResource(sds, credential_secret(sds, info))
    return MappingProxyType(out) if out else NOTHING


def _versions(resources: ResourceMap) -> dict[str, str]:
    return {name: r.version for name, r in resources.items()}


def _namespace_map(namespace: str, secrets: list[Secret]) -> ResourceMap:
    out: dict[str, CompiledResource] = {}
    names = {s.metadata.name for s in secrets}
    for secret in sorted(secrets, key=lambda s: s.metadata.name):
        name = secret.metadata.name
        if not name.endswith(CA_SUFFIX):
            try:
                info = certificate_of(secret)
            except CredentialError as exc:
                if _CERT_KEYS & secret.data.keys():
                    log.warning(
                        "Secret %s/%s is no usable credential: %s",
                        printable(namespace),
                        printable(name),
                        exc,
                    )
            else:
                for sds in _names(namespace, name):
                    out[sds] = CompiledResource(sds, credential_secret(sds, info))
        # istiod: kubernetes://<x>-cacert comes from the Secret <x>-cacert if it exists,
        # else from <x>'s own CA key.
        ca_name = name if name.endswith(CA_SUFFIX) else name + CA_SUFFIX
        if ca_name != name and ca_name in names:
            continue
        try:
            root = root_of(secret)
        except CredentialError:
            continue
        for sds in _names(namespace, ca_name):
            out[sds] = CompiledResource(sds, credential_ca_secret(sds, root))
    return MappingProxyType(out) if out else NOTHING


def _names(namespace: str, name: str) -> tuple[str, str]:
    return (f"{SDS_KUBERNETES_PREFIX}{name}", f"{SDS_KUBERNETES_PREFIX}{namespace}/{name}")
