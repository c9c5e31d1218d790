"""Named test meshes, as the YAML a user would write, for every tier.

The unit tests (``tests/unit/compile``, ``tests/unit/store``) parse this text into snapshots
(``tests/documents.py``), the protocol tests (``tests/xds``) hand it to an in-process store,
and the real-part tiers (``tests/envoy``, ``tests/netns``, ``tests/kube``) write it to a
config directory or apply it to a cluster. So "the reviews mesh" is written once, here, and
only its addresses and ports differ by tier (each tier has its own loopback range).

Builders return one YAML document each (``service``, ``pod``, ``subsets`` for a
DestinationRule's version subsets, ``split`` for a weighted VirtualService, ``virtual_service``,
and ``resource`` for any kind whose spec a test writes as YAML); ``join`` puts documents into
one file. The named meshes (``reviews``, ``ratings``) are made of them. A test that edits a
document as text (``.replace``) keeps its own literal: the edit must find what it looks for.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_API_VERSIONS = {
    "VirtualService": "networking.istio.io/v1",
    "DestinationRule": "networking.istio.io/v1",
    "ServiceEntry": "networking.istio.io/v1",
    "WorkloadEntry": "networking.istio.io/v1",
    "Sidecar": "networking.istio.io/v1",
    "Gateway": "networking.istio.io/v1",
    "PeerAuthentication": "security.istio.io/v1",
    "AuthorizationPolicy": "security.istio.io/v1",
    "RequestAuthentication": "security.istio.io/v1",
    "Telemetry": "telemetry.istio.io/v1",
    "Service": "v1",
    "Pod": "v1",
    "Namespace": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
}

# The annotation the injector leaves on a pod it gave a sidecar (transparent-mode pods).
INJECTED = {"sidecar.istio.io/status": "injected"}


def _dump(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=None)


def _load(text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(textwrap.dedent(text))
    return dict(loaded or {})


def join(*documents: str) -> str:
    """Documents (each possibly indented, as written in a test) as one multi-document file."""
    return "---\n".join(textwrap.dedent(d).strip("\n") + "\n" for d in documents if d.strip())


def resource(
    kind: str,
    name: str,
    spec: str | Mapping[str, Any],
    *,
    namespace: str = "default",
    api_version: str | None = None,
) -> str:
    """Any kind with ``metadata: {name, namespace}`` and a ``spec``, given as YAML or a dict."""
    body = yaml.safe_load(textwrap.dedent(spec)) if isinstance(spec, str) else dict(spec)
    return _dump(
        {
            "apiVersion": api_version or _API_VERSIONS[kind],
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": body,
        }
    )


def virtual_service(host: str, spec: str, *, name: str | None = None, **kw: Any) -> str:
    """A VirtualService for ``host`` (named after it); ``spec`` is the rest, e.g. ``http:``."""
    return resource("VirtualService", name or host, {"hosts": [host], **_load(spec)}, **kw)


def service(
    name: str,
    port: int | None = 9080,
    *,
    target_port: int | None = None,
    port_name: str | None = "http",
    ports: Iterable[Mapping[str, Any]] | None = None,
    cluster_ip: str | None = None,
    app: str | None = None,
    namespace: str = "default",
) -> str:
    """A Service selecting ``app: <app or name>`` with one port (or the given ``ports``)."""
    if ports is None:
        one: dict[str, Any] = {} if port_name is None else {"name": port_name}
        one["port"] = port
        if target_port is not None:
            one["targetPort"] = target_port
        ports = [one]
    spec: dict[str, Any] = {}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    spec["selector"] = {"app": app or name}
    spec["ports"] = [dict(p) for p in ports]
    return _dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def pod(
    name: str,
    ip: str,
    *,
    app: str | None = None,
    version: str | None = None,
    labels: Mapping[str, str] | None = None,
    namespace: str = "default",
    service_account: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> str:
    """A Pod with ``podIP`` (no kubelet here: the status is what a test says it is)."""
    all_labels = {"app": app} if app else {}
    if version:
        all_labels["version"] = version
    all_labels.update(labels or {})
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": all_labels}
    if annotations:
        metadata["annotations"] = dict(annotations)
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}
    if service_account:
        document["spec"] = {"serviceAccountName": service_account}
    document["status"] = {"podIP": ip}
    return _dump(document)


def subsets(
    host: str,
    versions: Iterable[str] | Mapping[str, str] = ("v1", "v2"),
    *,
    name: str | None = None,
    traffic_policy: Mapping[str, Any] | None = None,
    namespace: str = "default",
) -> str:
    """A DestinationRule with a subset per version (``{subset: version label}`` or names that
    are their own version label), and a traffic policy if given."""
    pairs = versions.items() if isinstance(versions, Mapping) else ((v, v) for v in versions)
    spec: dict[str, Any] = {"host": host}
    if traffic_policy is not None:
        spec["trafficPolicy"] = dict(traffic_policy)
    spec["subsets"] = [{"name": s, "labels": {"version": v}} for s, v in pairs]
    return resource("DestinationRule", name or host, spec, namespace=namespace)


def split(
    host: str,
    weights: Mapping[str, int | str],
    *,
    protocol: str = "http",
    first: Iterable[Mapping[str, Any]] = (),
    namespace: str = "default",
    api_version: str | None = None,
) -> str:
    """A VirtualService sending ``host`` to its subsets by relative weight (``{subset:
    weight}``), after the ``first`` routes (rules with a match) if any."""
    route = [{"destination": {"host": host, "subset": s}, "weight": w} for s, w in weights.items()]
    spec = {"hosts": [host], protocol: [*first, {"route": route}]}
    return resource("VirtualService", host, spec, namespace=namespace, api_version=api_version)


def jason_to_v2(host: str = "reviews") -> dict[str, Any]:
    """The bookinfo rule: requests with ``end-user: jason`` go to subset v2."""
    return {
        "match": [{"headers": {"end-user": {"exact": "jason"}}}],
        "route": [{"destination": {"host": host, "subset": "v2"}}],
    }


def reviews(
    v1: str,
    v2: str | None = None,
    *,
    target_port: int | None = 8080,
    rule: bool = True,
    port: int = 9080,
) -> str:
    """The reviews mesh: Service ``reviews`` (port 9080), pods reviews-v1 and reviews-v2 at the
    given addresses (labels ``app: reviews, version: vN``) and, with ``rule``, the
    DestinationRule that names subsets v1 and v2."""
    documents = [
        service("reviews", port, target_port=target_port),
        pod("reviews-v1", v1, app="reviews", version="v1"),
    ]
    if v2 is not None:
        documents.append(pod("reviews-v2", v2, app="reviews", version="v2"))
    if rule:
        documents.append(subsets("reviews"))
    return join(*documents)


def ratings(*ips: str, target_port: int | None = 8080, names: Iterable[str] | None = None) -> str:
    """Service ``ratings`` (port 9080) and one pod per address (``ratings-v1`` for a single
    pod unless ``names`` says otherwise), labelled ``app: ratings``."""
    pod_names = list(names) if names is not None else ["ratings-v1"]
    return join(
        service("ratings", 9080, target_port=target_port),
        *(pod(n, ip, app="ratings") for n, ip in zip(pod_names, ips, strict=True)),
    )


# ---- bookinfo (part "describe": describe and diff tests) ------------------------------------

BOOKINFO_PODS = (
    ("productpage-v1", "productpage", "v1"),
    ("details-v1", "details", "v1"),
    ("reviews-v1", "reviews", "v1"),
    ("reviews-v2", "reviews", "v2"),
    ("reviews-v3", "reviews", "v3"),
    ("ratings-v1", "ratings", "v1"),
)


def bookinfo(prefix: str = "10.0.0.", *, namespace: str = "default") -> str:
    """Istio's bookinfo sample, shaped as in Istio: Services productpage, details, reviews and
    ratings (port 9080, named http), one pod per version (``app``/``version`` labels, service
    account ``bookinfo-<app>``, addresses ``prefix`` + 1, 2, ...; injected), and the
    DestinationRule naming reviews' subsets v1, v2 and v3. Routing and policies are the test's."""
    apps = ("productpage", "details", "reviews", "ratings")
    documents = [service(app, 9080, namespace=namespace) for app in apps]
    for n, (name, app, version) in enumerate(BOOKINFO_PODS, start=1):
        documents.append(
            pod(
                name,
                f"{prefix}{n}",
                app=app,
                version=version,
                namespace=namespace,
                service_account=f"bookinfo-{app}",
                annotations=INJECTED,
            )
        )
    documents.append(subsets("reviews", ("v1", "v2", "v3"), namespace=namespace))
    return join(*documents)
