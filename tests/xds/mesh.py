"""Small meshes for the protocol tests (backends in 127.0.6.0/24, the scale branch's range)."""

from __future__ import annotations

from controlplane.compile.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.testing.ads_client import node

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
RATINGS = "outbound|9080||ratings.default.svc.cluster.local"
ROUTE_NAME = "local_15001"
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

MESH = """
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
status: {podIP: 127.0.6.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
status: {podIP: 127.0.6.2}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-v1, namespace: default, labels: {app: ratings}}
status: {podIP: 127.0.6.3}
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

# The reviews DestinationRule with a traffic policy added: its clusters change, its subsets not.
ROUND_ROBIN_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def canary(v1: int, v2: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: reviews, subset: v2}}, weight: {v2}}}
"""


def ratings_pod(name: str, ip: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: ratings}}}}
status: {{podIP: {ip}}}
"""


def local_node(name: str = "client", port: int = 15001, **extra: str):  # type: ignore[no-untyped-def]
    metadata = {"NAMESPACE": "default", "LOCAL_OUTBOUND_PORT": str(port), **extra}
    return node(f"sidecar~127.0.6.100~{name}.default~default.svc.cluster.local", metadata)
