"""A Gateway's parametersRef ConfigMap customises its automated deployment as istiod's does:
``deployment``, ``service`` and ``serviceAccount`` patches merged into the rendered objects,
HPA/PDB keys read but not honoured (said so), unknown keys and metadata changes refused."""

from __future__ import annotations

import pytest

from controlplane.inject.gateway_deployment import rendered
from controlplane.inject.gateway_parameters import ParametersError, with_parameters
from controlplane.inject.injector import InjectionConfig

WHERE = "Gateway shop/edge spec.infrastructure.parametersRef: ConfigMap shop/edge-params"
LISTENERS = [{"name": "http", "port": 80, "protocol": "HTTP"}]


def objects() -> list[dict]:
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop", "uid": "u-1"},
        "spec": {"gatewayClassName": "istio", "listeners": LISTENERS},
    }
    return rendered(gateway, InjectionConfig(image="registry.example/proxy:9"))


def by_kind(objs: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objs}


DEPLOYMENT = """
metadata:
  annotations: {team: storefront}
spec:
  replicas: 3
  template:
    spec:
      containers:
      - name: istio-proxy
        resources: {limits: {cpu: "2"}}
"""
SERVICE = """
metadata:
  annotations: {lb.example.com/internal: "true"}
spec:
  type: NodePort
"""


def test_deployment_service_and_service_account_patches_are_merged() -> None:
    data = {
        "deployment": DEPLOYMENT,
        "service": SERVICE,
        "serviceAccount": "metadata: {labels: {audited: 'yes'}}",
    }
    found, notes = with_parameters(objects(), data, WHERE)
    assert notes == []
    objs = by_kind(found)
    deployment = objs["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["annotations"]["team"] == "storefront"
    [proxy] = deployment["spec"]["template"]["spec"]["containers"]
    # merged into the container of that name: its image and command stay
    # (a strategic merge: the cpu limit replaced, the rest of the resources kept)
    assert proxy["resources"]["limits"]["cpu"] == "2"
    assert proxy["resources"]["requests"] == {"cpu": "10m", "memory": "40Mi"}
    assert proxy["image"] == "registry.example/proxy:9"
    assert proxy["command"][:2] == ["controlplane", "gateway"]
    service = objs["Service"]
    assert service["spec"]["type"] == "NodePort"
    assert [p["port"] for p in service["spec"]["ports"]] == [15021, 80]
    assert service["metadata"]["annotations"]["lb.example.com/internal"] == "true"
    assert objs["ServiceAccount"]["metadata"]["labels"]["audited"] == "yes"
    assert objs["ServiceAccount"]["metadata"]["name"] == "edge-istio"


def test_hpa_and_pdb_keys_are_read_but_said_not_honoured() -> None:
    data = {"horizontalPodAutoscaler": "spec: {maxReplicas: 5}"}
    found, notes = with_parameters(objects(), data, WHERE)
    assert found == objects()
    assert notes == [f"{WHERE}: data.horizontalPodAutoscaler is not honoured "
                     "(this controller creates no horizontalPodAutoscaler)"]  # fmt: skip


def test_an_unknown_key_or_a_metadata_change_is_refused_with_the_reason() -> None:
    with pytest.raises(ParametersError, match=r"data key\(s\) deploymnet unsupported"):
        with_parameters(objects(), {"deploymnet": "spec: {replicas: 2}"}, WHERE)
    with pytest.raises(ParametersError, match=r"data.deployment.metadata.name: illegal"):
        with_parameters(objects(), {"deployment": "metadata: {name: other}"}, WHERE)
    with pytest.raises(ParametersError, match=r"data.service must be a YAML mapping"):
        with_parameters(objects(), {"service": "- a list"}, WHERE)
