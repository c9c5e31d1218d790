"""The ingress-gateway kustomize component (manifests/components/ingress-gateway): a gateway
Deployment running `controlplane gateway` with what the entry point reads, a Service whose
ports the Gateways name, and labels that Istio's samples select (the apiserver checks it in
tests/kube/test_gateway.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controlplane.inject.injector import ENVOY_DIR, PODINFO_DIR, TOKEN_DIR, TOKEN_FILE

COMPONENT = Path(__file__).resolve().parents[2] / "manifests" / "components" / "ingress-gateway"


def objects() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    out = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((COMPONENT / resource).read_text()):
            out[doc["kind"]] = doc
    return out


def test_the_component_has_a_deployment_service_and_service_account() -> None:
    assert set(objects()) == {"Deployment", "Service", "ServiceAccount"}


def test_the_gateway_pods_carry_the_labels_istios_samples_select_and_are_never_injected() -> None:
    found = objects()
    deployment, service = found["Deployment"], found["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["istio"] == "ingressgateway"  # bookinfo-gateway.yaml's selector
    assert labels["sidecar.istio.io/inject"] == "false"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == found["ServiceAccount"]["metadata"]["name"]


def test_the_container_runs_controlplane_gateway_with_the_downward_api_and_a_mesh_token() -> None:
    pod = objects()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["controlplane", "gateway"]
    args = dict(a.split("=", 1) for a in container["command"][2:])
    assert args["--token-path"] == f"{TOKEN_DIR}/{TOKEN_FILE}"
    assert args["--labels-path"] == f"{PODINFO_DIR}/labels"
    assert args["--bootstrap-path"].startswith(ENVOY_DIR + "/")
    env = {e["name"] for e in container["env"]}
    assert env == {"POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {TOKEN_DIR, PODINFO_DIR, ENVOY_DIR} <= mounts
    token = next(v for v in pod["volumes"] if v["name"] == "istio-token")
    source = token["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "istio-ca" and source["path"] == TOKEN_FILE
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_service_ports_map_to_the_unprivileged_ports_envoy_binds() -> None:
    found = objects()
    ports = {p["port"]: p["targetPort"] for p in found["Service"]["spec"]["ports"]}
    assert ports == {80: 8080, 443: 8443}
    (container,) = found["Deployment"]["spec"]["template"]["spec"]["containers"]
    # The listeners' ports and Envoy's Prometheus statistics (http-envoy-prom, as Istio's
    # gateway chart), which the Service does not expose.
    assert {p["containerPort"] for p in container["ports"]} == {8080, 8443, 15090}
    prom = next(p for p in container["ports"] if p["containerPort"] == 15090)
    assert prom["name"] == "http-envoy-prom"
    annotations = found["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "15020"
