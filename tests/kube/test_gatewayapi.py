"""The Gateway API on the real apiserver with the upstream standard-channel CRDs (taken from
the Go module cache, sigs.k8s.io/gateway-api v1.6.0): the leader writes the status the
specification defines (GatewayClass Accepted, Gateway and listener conditions with
attachedRoutes, route parents with the spec's reasons, observedGeneration), and the schema
of each status is the upstream CRD's, so the apiserver itself checks its shape."""

from __future__ import annotations

import shutil
import statistics
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import count_backends
from tests.cluster import gateway_api
from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess, install_crds, remove_webhook_configurations

KINDS = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants")


def upstream_crds() -> list[Path]:
    """The standard-channel CRDs of the release the tests pin (tests/cluster/gateway_api.sh,
    fetched through the Go module proxy when missing)."""
    base = gateway_api.crd_dir()
    return [base / f"gateway.networking.k8s.io_{kind}.yaml" for kind in KINDS]


@pytest.fixture(scope="module")
def gw_operator(
    kube_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The upstream CRDs installed before the operator starts (so it watches them at once)."""
    crds = upstream_crds()
    if not all(p.is_file() for p in crds):
        pytest.fail(f"the Gateway API {gateway_api.version()} CRDs are missing: {crds}")
    install_crds(kube_cluster)
    kube_cluster.kubectl("apply", "--server-side", *(a for p in crds for a in ("-f", str(p))))
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    kube_cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
    )
    process = OperatorProcess(kube_cluster, tmp_path_factory.mktemp("gwapi-operator"))
    try:
        process.start()
        yield process
    finally:
        process.stop()
        if kube_cluster.running:
            remove_webhook_configurations(kube_cluster)
            # Other modules of the session say `kubectl get gateway` for Istio's Gateway: with
            # both CRDs installed kubectl would pick the Gateway API's.
            kube_cluster.kubectl(
                "delete", "--ignore-not-found", *(a for p in crds for a in ("-f", str(p)))
            )
            # kubectl's discovery cache still maps `gateway` to the Gateway API: forget it.
            if kube_cluster.workdir is not None:
                shutil.rmtree(kube_cluster.workdir / "kubectl-cache", ignore_errors=True)


def manifest(ns: str, backend: str = "web") -> str:
    return textwrap.dedent(
        f"""
        apiVersion: gateway.networking.k8s.io/v1
        kind: GatewayClass
        metadata: {{name: istio}}
        spec: {{controllerName: istio.io/gateway-controller}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {{name: edge, namespace: {ns}}}
        spec:
          gatewayClassName: istio
          listeners:
          - {{name: http, port: 8080, protocol: HTTP}}
          - {{name: udp, port: 5353, protocol: UDP}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {{name: web, namespace: {ns}}}
        spec:
          parentRefs: [{{name: edge, sectionName: http}}]
          hostnames: [web.example.com]
          rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]
        """
    )


def status_of(cluster: LocalCluster, kind: str, name: str, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.get_json(kind, name, *args).get("status") or {}
    return found


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


def test_the_leader_writes_the_specifications_status(
    kube_cluster: LocalCluster, kube_namespace: str, gw_operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(manifest(ns))

    def route_parent() -> dict[str, Any] | None:
        parents = status_of(kube_cluster, "httproute.gateway.networking.k8s.io", "web", "-n", ns)
        found = parents.get("parents") or []
        return found[0] if found else None

    parent = gw_operator.wait_for(route_parent, what="the HTTPRoute's parent status")
    conditions = by_type(parent["conditions"])
    assert conditions["Accepted"]["status"] == "True"
    assert (conditions["ResolvedRefs"]["status"], conditions["ResolvedRefs"]["reason"]) == (
        "False",
        "BackendNotFound",
    )
    assert conditions["ResolvedRefs"]["observedGeneration"] == 1
    assert parent["controllerName"] == "istio.io/gateway-controller"

    cls = status_of(kube_cluster, "gatewayclass.gateway.networking.k8s.io", "istio")
    assert by_type(cls["conditions"])["Accepted"]["status"] == "True"

    gateway = gw_operator.wait_for(
        lambda: status_of(kube_cluster, "gateway.gateway.networking.k8s.io", "edge", "-n", ns).get(
            "listeners"
        ),
        what="the Gateway's listener status",
    )
    http, udp = gateway
    assert http["attachedRoutes"] == 1
    assert by_type(http["conditions"])["Programmed"]["status"] == "True"
    assert by_type(udp["conditions"])["Accepted"]["reason"] == "UnsupportedProtocol"

    # The backend appears: ResolvedRefs turns True, its transition time moves, Accepted's stays.
    accepted_since = conditions["Accepted"]["lastTransitionTime"]
    kube_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"ports": [{"port": 80}]},
        }
    )

    def resolved() -> dict[str, Any] | None:
        found = route_parent()
        if found and by_type(found["conditions"])["ResolvedRefs"]["status"] == "True":
            return found
        return None

    parent = gw_operator.wait_for(resolved, what="ResolvedRefs True")
    assert by_type(parent["conditions"])["Accepted"]["lastTransitionTime"] == accepted_since


GATEWAY_IP = "127.0.3.60"


def split_route(ns: str, w1: int, w2: int) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {{name: split, namespace: {ns}}}
        spec:
          parentRefs: [{{name: lat}}]
          hostnames: [split.example.com]
          rules:
          - backendRefs: [{{name: a, port: 80, weight: {w1}}}, {{name: b, port: 80, weight: {w2}}}]
        """
    )


def test_an_httproute_weight_change_applied_with_kubectl_reaches_the_gateway(
    kube_cluster: LocalCluster,
    kube_namespace: str,
    gw_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """kubectl apply of an HTTPRoute weight change -> the gateway Envoy's RDS ACK, 20 times;
    the median is printed for the closing note (``-s`` shows it)."""
    ns = kube_namespace
    port = free_port()
    kube_cluster.apply(
        textwrap.dedent(
            f"""
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {{name: lat, namespace: {ns}}}
            spec:
              gatewayClassName: istio
              listeners: [{{name: http, port: {port}, protocol: HTTP}}]
            """
        )
    )
    for name in ("a", "b"):
        kube_cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": [{"port": 80}]},
            }
        )
    kube_cluster.apply(split_route(ns, 50, 50))
    node_id = f"router~{GATEWAY_IP}~lat-1.{ns}~{ns}.svc.cluster.local"
    bootstrap = render_bootstrap(
        node_id=node_id,
        namespace=ns,
        labels={"gateway.networking.k8s.io/gateway-name": "lat"},
        service_account="lat-istio",
        xds_port=gw_operator.xds_port,
        admin_port=free_port(),
        workload_name="lat-1",
        instance_ips=GATEWAY_IP,
        extra_metadata={"INTERCEPTION_MODE": "NONE"},
    )
    envoy = EnvoyProcess(bootstrap, tmp_path, name="gwapi-gateway").start()
    try:
        gw_operator.debug.wait_synced(node_id, timeout=30)
        envoy.wait_live()
        # No endpoints behind a and b: the route exists (503), an unknown host does not (404).
        assert count_backends(port, "split.example.com", 3) == {"503": 3}
        assert count_backends(port, "other.example.com", 1) == {"404": 1}
        took = []
        for i in range(20):
            before = gw_operator.debug.type_state(node_id, "rds")["acked_version"]
            started = time.monotonic()
            kube_cluster.apply(split_route(ns, i + 1, 99 - i))
            gw_operator.debug.wait_synced(node_id, types=("rds",), newer_than={"rds": before})
            took.append(time.monotonic() - started)
        median = statistics.median(took)
        print(f"kubectl apply HTTPRoute weight -> gateway RDS ACK: median {median * 1000:.0f} ms")
        assert median < 5.0
    finally:
        envoy.stop()


def test_a_certificate_ref_to_another_namespace_follows_its_reference_grant(
    kube_cluster: LocalCluster, kube_namespace: str, gw_operator: OperatorProcess
) -> None:
    """Listener ResolvedRefs on the real apiserver: RefNotPermitted without a ReferenceGrant
    in the Secret's namespace, True with one, RefNotPermitted again when it is deleted."""
    from tests.support import pki

    ns = kube_namespace
    certs = kube_cluster.create_namespace()
    try:
        ca = pki.current_ca("cross-namespace root")
        leaf = pki.make_leaf(ca, dns_names=["shared.example.com"], common_name="shared")
        kube_cluster.apply(pki.tls_secret_yaml("shared-cert", certs, *leaf))
        kube_cluster.apply(
            textwrap.dedent(
                f"""
                apiVersion: gateway.networking.k8s.io/v1
                kind: Gateway
                metadata: {{name: tls, namespace: {ns}}}
                spec:
                  gatewayClassName: istio
                  listeners:
                  - name: https
                    port: 8443
                    protocol: HTTPS
                    tls:
                      mode: Terminate
                      certificateRefs: [{{name: shared-cert, namespace: {certs}}}]
                """
            )
        )
        grant = textwrap.dedent(
            f"""
            apiVersion: gateway.networking.k8s.io/v1beta1
            kind: ReferenceGrant
            metadata: {{name: gateways, namespace: {certs}}}
            spec:
              from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {ns}}}]
              to: [{{group: "", kind: Secret, name: shared-cert}}]
            """
        )

        def resolved_refs(expected: str) -> dict[str, Any] | None:
            status = status_of(kube_cluster, "gateway.gateway.networking.k8s.io", "tls", "-n", ns)
            listeners = status.get("listeners") or []
            if not listeners:
                return None
            found = by_type(listeners[0]["conditions"])
            return found if found["ResolvedRefs"]["reason"] == expected else None

        refused = gw_operator.wait_for(lambda: resolved_refs("RefNotPermitted"), what="refused")
        assert refused["ResolvedRefs"]["status"] == "False"
        assert refused["Programmed"]["status"] == "False"
        kube_cluster.apply(grant)
        allowed = gw_operator.wait_for(lambda: resolved_refs("ResolvedRefs"), what="granted")
        assert allowed["ResolvedRefs"]["status"] == "True"
        kube_cluster.kubectl("delete", "referencegrant.gateway.networking.k8s.io", "gateways",
                             "-n", certs)  # fmt: skip
        revoked = gw_operator.wait_for(lambda: resolved_refs("RefNotPermitted"), what="revoked")
        assert revoked["ResolvedRefs"]["status"] == "False"
    finally:
        if kube_cluster.running:
            kube_cluster.delete_namespace(certs)
