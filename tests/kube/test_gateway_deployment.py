"""Automated deployment of Gateway API gateways on the real apiserver: a Gateway of the `istio`
class applied with kubectl gets its ServiceAccount, Deployment and Service, owned by it, with
the proxy image and `controlplane gateway`; a listener change reaches the Service's ports; the
Service's address lands in the Gateway's status.addresses; other classes and objects made by
hand are left alone.

This apiserver runs no kube-controller-manager, so no garbage collector: deletion with the
Gateway is checked as the collector decides it, by the ownerReferences (kind, name and uid of the live
Gateway); and the controller must not bring the objects back once the
Gateway is gone.
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess

# About a minute on the real apiserver: in the slow tier (CI runs it), so that a warm
# `make test` stays under ten minutes.
pytestmark = pytest.mark.slow

DEFAULT_IMAGE = "ghcr.io/controlplane/controlplane:0.1.0"  # InjectionConfig.image


def gateway(ns: str, name: str = "edge", cls: str = "istio", https: bool = False) -> str:
    listeners = "  - {name: http, port: 80, protocol: HTTP}\n"
    if https:
        listeners += "  - {name: admin, port: 8443, protocol: TCP}\n"
    return (
        textwrap.dedent(
            f"""
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {{name: {name}, namespace: {ns}}}
            spec:
              gatewayClassName: {cls}
              listeners:
            """
        )
        + listeners
    )


def get(cluster: LocalCluster, kind: str, name: str, ns: str) -> dict | None:
    proc = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def wait(predicate, what: str, timeout: float = 30.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached in {timeout}s (last: {last!r})")


def service_ports(cluster: LocalCluster, ns: str, name: str) -> dict[str, tuple[int, str]] | None:
    svc = get(cluster, "service", name, ns)
    if svc is None:
        return None
    return {p["name"]: (p["port"], p.get("appProtocol", "")) for p in svc["spec"]["ports"]}


def test_a_gateway_gets_its_deployment_service_and_service_account_owned_by_it(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(gateway(ns))
    uid = get(kube_cluster, "gateway.gateway.networking.k8s.io", "edge", ns)["metadata"]["uid"]

    deployment = wait(lambda: get(kube_cluster, "deployment", "edge-istio", ns), "Deployment")
    service = wait(lambda: get(kube_cluster, "service", "edge-istio", ns), "Service")
    account = wait(lambda: get(kube_cluster, "serviceaccount", "edge-istio", ns), "SA")

    for obj in (deployment, service, account):
        owners = obj["metadata"]["ownerReferences"]
        assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [("Gateway", "edge", uid)]
        assert obj["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "edge"
        assert obj["metadata"]["labels"]["gateway.istio.io/managed"] == (
            "istio.io-gateway-controller"
        )
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "edge"
    assert pod["spec"]["serviceAccountName"] == "edge-istio"
    [proxy] = pod["spec"]["containers"]
    assert proxy["image"] == DEFAULT_IMAGE
    assert proxy["command"][:2] == ["controlplane", "gateway"]
    assert service["spec"]["selector"] == {"gateway.networking.k8s.io/gateway-name": "edge"}
    assert service_ports(kube_cluster, ns, "edge-istio") == {
        "status-port": (15021, "tcp"),
        "http": (80, "http"),
    }

    # No load balancer has answered: the Gateway's address is the Service's cluster IP.
    cluster_ip = service["spec"]["clusterIP"]

    def addresses() -> list | None:
        gw = get(kube_cluster, "gateway.gateway.networking.k8s.io", "edge", ns)
        return (gw.get("status") or {}).get("addresses")

    assert wait(addresses, "status.addresses") == [{"type": "IPAddress", "value": cluster_ip}]

    # A load balancer assigns an address (what a cloud controller writes): it replaces it.
    kube_cluster.kubectl(
        "patch", "service", "edge-istio", "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
    )  # fmt: skip
    wait(
        lambda: addresses() == [{"type": "IPAddress", "value": "203.0.113.7"}],
        "the load balancer's address in status.addresses",
    )


def test_a_listener_change_updates_the_service_ports(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(gateway(ns))
    wait(lambda: service_ports(kube_cluster, ns, "edge-istio"), "Service")
    kube_cluster.apply(gateway(ns, https=True))
    wait(
        lambda: (
            service_ports(kube_cluster, ns, "edge-istio")
            == {"status-port": (15021, "tcp"), "http": (80, "http"), "admin": (8443, "tcp")}
        ),
        "the new listener's port on the Service",
    )
    deployment = get(kube_cluster, "deployment", "edge-istio", ns)
    [proxy] = deployment["spec"]["template"]["spec"]["containers"]
    # The listeners' ports, then Envoy's Prometheus port (http-envoy-prom), as istiod's
    # gateway template lists them.
    assert [p["containerPort"] for p in proxy["ports"]] == [80, 8443, 15090]
    kube_cluster.apply(gateway(ns))
    wait(
        lambda: (
            service_ports(kube_cluster, ns, "edge-istio")
            == {"status-port": (15021, "tcp"), "http": (80, "http")}
        ),
        "the removed listener's port gone from the Service",
    )


def test_deleting_the_gateway_leaves_its_objects_to_the_garbage_collector(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(gateway(ns))
    wait(lambda: get(kube_cluster, "deployment", "edge-istio", ns), "Deployment")
    kube_cluster.kubectl("delete", "gateway.gateway.networking.k8s.io", "edge", "-n", ns)
    # What the garbage collector would do once the owner is gone (no controller-manager here).
    kube_cluster.kubectl(
        "delete", "deployment,service,serviceaccount", "edge-istio", "-n", ns, "--wait=true"
    )
    time.sleep(1.5)  # events for the deleted objects reach the controller: nothing comes back
    for kind in ("deployment", "service", "serviceaccount"):
        assert get(kube_cluster, kind, "edge-istio", ns) is None, kind


def test_gateways_of_other_classes_and_objects_made_by_hand_are_left_alone(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    ns = kube_namespace
    kube_cluster.apply(
        textwrap.dedent(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: GatewayClass
            metadata: {name: someone-else}
            spec: {controllerName: example.com/another-controller}
            """
        )
    )
    kube_cluster.apply(gateway(ns, name="theirs", cls="someone-else"))
    # A Service of the name a Gateway would get, made by hand (no managed label).
    kube_cluster.apply(
        textwrap.dedent(
            f"""
            apiVersion: v1
            kind: Service
            metadata: {{name: mine-istio, namespace: {ns}}}
            spec:
              ports: [{{name: web, port: 9999}}]
            """
        )
    )
    kube_cluster.apply(gateway(ns, name="mine"))
    wait(lambda: get(kube_cluster, "deployment", "mine-istio", ns), "Deployment of mine")
    assert service_ports(kube_cluster, ns, "mine-istio") == {"web": (9999, "")}
    assert get(kube_cluster, "deployment", "theirs-someone-else", ns) is None
    assert get(kube_cluster, "service", "theirs-someone-else", ns) is None


def test_a_parameters_ref_config_map_customises_the_deployment_and_service(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    """istiod's deployment customisation: the ConfigMap's ``deployment`` and ``service``
    patches are merged into the objects; a change of the ConfigMap reaches them."""
    ns = kube_namespace

    def params(replicas: int) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "edge-params", "namespace": ns},
            "data": {
                "deployment": f"spec: {{replicas: {replicas}}}\n"
                "metadata: {annotations: {team: storefront}}\n",
                "service": "metadata: {annotations: {lb.example.com/internal: 'true'}}\n",
            },
        }

    kube_cluster.apply(params(2))
    kube_cluster.apply(
        gateway(ns)
        + "  infrastructure:\n    parametersRef: {group: '', kind: ConfigMap, name: edge-params}\n"
    )

    def replicas(wanted: int) -> dict | None:
        found = get(kube_cluster, "deployment", "edge-istio", ns)
        return found if found and found["spec"].get("replicas") == wanted else None

    deployment = wait(lambda: replicas(2), "Deployment with 2 replicas")
    assert deployment["metadata"]["annotations"]["team"] == "storefront"
    service = wait(lambda: get(kube_cluster, "service", "edge-istio", ns), "Service")
    assert service["metadata"]["annotations"]["lb.example.com/internal"] == "true"
    # The proxy is still the injector's, with the gateway's bootstrap.
    [proxy] = deployment["spec"]["template"]["spec"]["containers"]
    assert proxy["image"] == DEFAULT_IMAGE
    kube_cluster.apply(params(4))
    wait(lambda: replicas(4), "Deployment with 4 replicas", timeout=45.0)


@pytest.fixture(autouse=True)
def _cleanup_class(kube_cluster: LocalCluster):
    yield
    kube_cluster.kubectl("delete", "gatewayclass", "someone-else", "--ignore-not-found")
