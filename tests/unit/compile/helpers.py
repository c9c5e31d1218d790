"""Building snapshots from YAML text for compiler tests."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from google.protobuf import json_format

from controlplane.api import load
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.store import Snapshot, Store, Submission


def snapshot_of(*documents: str) -> Snapshot:
    store = Store()
    subs = []
    for text in documents:
        for doc in yaml.safe_load_all(textwrap.dedent(text)):
            if doc:
                resource, issues = load(doc)
                subs.append(Submission(resource, tuple(issues)))
    store.apply(upserts=subs)
    return store.snapshot


def local_proxy(
    namespace: str = "default", labels: dict[str, str] | None = None, port: int = 15001
) -> Proxy:
    return Proxy(
        node_id=f"sidecar~127.0.0.1~client.{namespace}~{namespace}.svc.cluster.local",
        namespace=namespace,
        labels=labels or {},
        local_outbound_port=port,
    )


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def compiled(snapshot: Snapshot, proxy: Proxy) -> dict[str, dict[str, dict[str, Any]]]:
    """type short name -> resource name -> the resource as a dict."""
    from controlplane.compile.resources import SHORT_NAMES

    out = SnapshotCompiler(snapshot).compile(proxy)
    return {
        SHORT_NAMES[t]: {name: as_dict(r.message) for name, r in resources.items()}
        for t, resources in out.by_type.items()
    }


REVIEWS = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
