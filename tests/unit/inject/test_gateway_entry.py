"""`controlplane gateway`: the bootstrap a gateway Pod writes for itself (Envoy in router
mode), and that the compiler reads it as a gateway selected by its labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controlplane.compile.proxy import ROUTER, proxy_from_node

ENV = {
    "POD_NAME": "istio-ingressgateway-7d9f",
    "POD_NAMESPACE": "istio-system",
    "INSTANCE_IP": "10.1.2.9",
    "SERVICE_ACCOUNT": "istio-ingressgateway",
}


def test_the_gateway_bootstrap_is_a_router_node_with_the_pods_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "istio-token"
    token.write_text("eyJhbGciOi.token\n")
    labels = tmp_path / "labels"
    labels.write_text('istio="ingressgateway"\napp="istio-ingressgateway"\n')
    out = tmp_path / "proxy" / "envoy.yaml"
    env = {**os.environ, **ENV}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "gateway",
            "--no-exec",
            "--token-path",
            str(token),
            "--labels-path",
            str(labels),
            "--bootstrap-path",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    node = yaml.safe_load(out.read_text())["node"]
    assert node["id"] == (
        "router~10.1.2.9~istio-ingressgateway-7d9f.istio-system~istio-system.svc.cluster.local"
    )
    assert node["metadata"]["LABELS"] == {"istio": "ingressgateway", "app": "istio-ingressgateway"}
    assert node["metadata"]["INTERCEPTION_MODE"] == "NONE"
    proxy = proxy_from_node(node["id"], node["metadata"])
    assert proxy.proxy_type == ROUTER
    assert proxy.namespace == "istio-system"
    assert proxy.labels["istio"] == "ingressgateway"
