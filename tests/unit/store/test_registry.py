"""The service registry: ports and protocols, endpoints from Pods and EndpointSlices with the
labels subsets select on and the metadata auto mTLS and locality need."""

from __future__ import annotations

import pytest

from controlplane.store.registry import format_locality, port_protocol
from tests.unit.compile.helpers import snapshot_of

SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: default
  annotations: {networking.istio.io/exportTo: ".,istio-system"}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: web}
  - {name: tcp-admin, port: 9090}
"""

PODS = """
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: default
  labels: {app: reviews, version: v1, topology.kubernetes.io/region: eu, topology.kubernetes.io/zone: eu-1a}
  annotations: {sidecar.istio.io/status: injected}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: app, ports: [{name: web, containerPort: 8080}]}]
status: {podIP: 10.0.0.1, phase: Running}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2
  namespace: default
  labels: {app: reviews, version: v2, istio-locality: us.us-2b.rack7}
spec:
  containers: [{name: app, ports: [{name: web, containerPort: 8081}]}]
status: {podIP: 10.0.0.2, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-old, namespace: default, labels: {app: reviews, version: v0}}
status: {podIP: 10.0.0.3, phase: Failed}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-elsewhere, namespace: other, labels: {app: reviews}}
status: {podIP: 10.0.0.4}
"""

SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc
  namespace: default
  labels: {kubernetes.io/service-name: reviews}
ports: [{name: http, port: 8080}, {name: tcp-admin, port: 9090}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-v1}
  zone: eu-1b
- addresses: [10.0.0.9]
  conditions: {ready: false}
  zone: eu-1c
"""


@pytest.mark.parametrize(
    ("name", "app_protocol", "protocol", "expected"),
    [
        ("http", None, "TCP", "HTTP"),
        ("http2-api", None, "TCP", "HTTP2"),
        ("grpc", None, "TCP", "GRPC"),
        ("tcp-db", None, "TCP", "TCP"),
        ("mysql", None, "TCP", "TCP"),
        ("https", None, "TCP", "TLS"),
        ("tls-passthrough", None, "TCP", "TLS"),
        ("web", "http", "TCP", "HTTP"),
        ("http", "tcp", "TCP", "TCP"),  # appProtocol wins over the name
        ("dns", None, "UDP", "UDP"),
        ("metrics", None, "TCP", "UNKNOWN"),
    ],
)
def test_port_protocol_follows_istios_naming_rules(
    name: str, app_protocol: str | None, protocol: str, expected: str
) -> None:
    assert port_protocol(name, app_protocol, protocol) == expected


def test_service_export_annotation_is_read() -> None:
    service = snapshot_of(SERVICE).services["reviews.default.svc.cluster.local"]
    assert service.export_to == (".", "istio-system")


def test_pod_endpoints_carry_labels_resolved_ports_identity_tls_mode_and_locality() -> None:
    endpoints = snapshot_of(SERVICE, PODS).endpoints("reviews.default.svc.cluster.local")
    http = {e.workload: e for e in endpoints if e.service_port == 9080}
    # reviews-old names no container port "web": it cannot serve the named targetPort.
    assert set(http) == {"reviews-v1", "reviews-v2"}
    v1, v2 = http["reviews-v1"], http["reviews-v2"]
    assert (v1.address, v1.port, v2.port) == ("10.0.0.1", 8080, 8081)
    assert v1.labels["version"] == "v1"
    assert v1.service_account == "bookinfo-reviews" and v2.service_account == "default"
    assert v1.tls_mode == "istio" and v2.tls_mode == "disabled"
    assert v1.locality == "eu/eu-1a"
    assert v2.locality == "us/us-2b/rack7"
    admin = {e.workload: e for e in endpoints if e.service_port == 9090}
    assert {e.port for e in admin.values()} == {9090}  # no targetPort: the service port
    assert not admin["reviews-old"].ready and admin["reviews-v1"].ready
    assert "reviews-elsewhere" not in admin  # another namespace


def test_slice_endpoints_take_labels_from_their_pods_and_the_zone_from_the_slice() -> None:
    endpoints = snapshot_of(SERVICE, PODS, SLICE).endpoints("reviews.default.svc.cluster.local")
    http = {e.address: e for e in endpoints if e.service_port == 9080}
    assert set(http) == {"10.0.0.1", "10.0.0.9"}  # slices win over the pod selector
    known, unknown = http["10.0.0.1"], http["10.0.0.9"]
    assert known.labels["version"] == "v1" and known.workload == "reviews-v1"
    assert known.tls_mode == "istio"
    assert known.locality == "eu/eu-1a"  # the pod's own topology labels come first
    assert unknown.labels == {} and unknown.workload == "10.0.0.9"
    assert unknown.locality == "/eu-1c" and not unknown.ready


def test_service_targets_are_the_services_served_at_an_address() -> None:
    snapshot = snapshot_of(SERVICE, PODS)
    targets = snapshot.service_targets("10.0.0.1")
    assert [(s.name, e.service_port, e.port) for s, e in targets] == [
        ("reviews", 9080, 8080),
        ("reviews", 9090, 9090),
    ]
    assert snapshot.service_targets("10.9.9.9") == ()


def test_locality_keeps_the_place_of_each_part() -> None:
    assert format_locality("eu", "eu-1a", "r1") == "eu/eu-1a/r1"
    assert format_locality("eu") == "eu"
    assert format_locality("", "eu-1a") == "/eu-1a"
    assert format_locality("") == ""
