"""A big mesh in the test cluster, fast: Services with Pods (with IPs, as the kubelet would
report them) and DestinationRules with VirtualServices, the shape of bench/registry.py.

Used by tests/kube/test_coldstart.py and bench/coldstart.py. The cluster has no endpoint
controller, so there are no EndpointSlices: the mesh reads the Pods (as everywhere in
tests/kube).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.cluster.cluster import LocalCluster

NAMESPACES = 10
DOMAIN = "svc.cluster.local"


class Api:
    """Keep-alive HTTPS to the apiserver, one connection per thread."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.host = "127.0.0.1"
        self.port = cluster.apiserver_port
        self.local = threading.local()

    def request(self, method: str, path: str, body: Any, content_type: str) -> int:
        for attempt in range(5):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.cluster._ssl_context(), timeout=60
                )
            try:
                conn.request(
                    method, path, json.dumps(body).encode(), {"Content-Type": content_type}
                )
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                time.sleep(0.2 * (attempt + 1))
                continue
            if resp.status == 429 or resp.status >= 500:
                time.sleep(0.2 * (attempt + 1))
                continue
            if resp.status not in (200, 201, 409):
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
            return resp.status
        raise RuntimeError(f"{method} {path}: gave up")

    def create(self, path: str, body: dict[str, Any]) -> None:
        self.request("POST", path, body, "application/json")

    def patch_status(self, path: str, body: dict[str, Any]) -> None:
        self.request("PATCH", path + "/status", body, "application/merge-patch+json")


def namespace(i: int) -> str:
    return f"ns-{i % NAMESPACES}"


def pod_ip(n: int) -> str:
    return f"10.{100 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def documents(
    services: int, pods: int, rules: int
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """(creations, pod status patches): each an apiserver path and a body."""
    creates: list[tuple[str, dict[str, Any]]] = []
    statuses: list[tuple[str, dict[str, Any]]] = []
    for i in range(services):
        ns, name = namespace(i), f"svc-{i}"
        creates.append((f"/api/v1/namespaces/{ns}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))  # fmt: skip
        for j in range(pods):
            pod = f"{name}-{j}"
            creates.append((f"/api/v1/namespaces/{ns}/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns,
                             "labels": {"app": name, "version": "v2" if j == pods - 1 else "v1"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                         "ports": [{"containerPort": 8080}]}]},
            }))  # fmt: skip
            ip = pod_ip(i * pods + j + 1)
            statuses.append((f"/api/v1/namespaces/{ns}/pods/{pod}", {
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                           "conditions": [{"type": "Ready", "status": "True"}]},
            }))  # fmt: skip
    for i in range(rules):
        ns, name = namespace(i), f"svc-{i}"
        base = f"/apis/networking.istio.io/v1/namespaces/{ns}"
        creates.append((f"{base}/destinationrules", {
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": name, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                               {"name": "v2", "labels": {"version": "v2"}}]},
        }))  # fmt: skip
        creates.append((f"{base}/virtualservices", {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [name], "http": [{"route": [
                {"destination": {"host": name, "subset": "v1"}, "weight": 90},
                {"destination": {"host": name, "subset": "v2"}, "weight": 10}]}]},
        }))  # fmt: skip
    return creates, statuses


def as_listed(services: int, pods: int, rules: int) -> list[dict[str, Any]]:
    """The same objects as the apiserver would list them (pods with their status)."""
    creates, statuses = documents(services, pods, rules)
    status_of = {path.rsplit("/", 1)[-1]: body["status"] for path, body in statuses}
    out = []
    for _, body in creates:
        doc = json.loads(json.dumps(body))
        doc["metadata"].update(resourceVersion="1", uid="0" * 36, generation=1)
        doc["metadata"]["creationTimestamp"] = "2026-12-07T00:00:00Z"
        if doc["kind"] == "Pod":
            doc["status"] = status_of[doc["metadata"]["name"]]
        out.append(doc)
    return out


def fill(cluster: LocalCluster, services: int, pods: int, rules: int, workers: int = 8) -> dict:
    """Create everything; returns how long it took."""
    api = Api(cluster)
    started = time.monotonic()
    for k in range(NAMESPACES):
        cluster.create_namespace(f"ns-{k}")
    # The control plane's namespace, where the mesh CA keeps its Secret (a first start creates
    # it, later starts read it, as in a cluster where istiod was installed).
    cluster.create_namespace("istio-system")
    creates, statuses = documents(services, pods, rules)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda c: api.create(*c), creates))
        created = time.monotonic()
        list(pool.map(lambda s: api.patch_status(*s), statuses))
    return {
        "objects": len(creates),
        "create_s": round(created - started, 1),
        "pod_status_s": round(time.monotonic() - created, 1),
    }
