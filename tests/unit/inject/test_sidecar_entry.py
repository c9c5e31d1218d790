"""`controlplane sidecar`: the bootstrap an injected proxy writes for itself."""

from __future__ import annotations

from pathlib import Path

import yaml

from controlplane.cli.sidecar import parse_downward_labels, run_sidecar

ENV = {
    "POD_NAME": "reviews-v1-abc",
    "POD_NAMESPACE": "shop",
    "INSTANCE_IP": "10.1.2.3",
    "SERVICE_ACCOUNT": "reviews",
}


def test_downward_api_labels_are_unquoted():
    text = 'app="reviews"\nversion="v1"\nnote="a \\"quoted\\" value"\n'
    assert parse_downward_labels(text) == {
        "app": "reviews",
        "version": "v1",
        "note": 'a "quoted" value',
    }


def test_the_bootstrap_names_the_pod_and_carries_the_token(tmp_path: Path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    token = tmp_path / "istio-token"
    token.write_text("eyJhbGciOi.token\n")
    labels = tmp_path / "labels"
    labels.write_text('app="reviews"\nversion="v1"\n')
    out = tmp_path / "proxy" / "envoy.yaml"
    assert (
        run_sidecar(
            xds_address="controlplane.istio-system.svc",
            xds_port=15010,
            token_path=token,
            labels_path=labels,
            bootstrap_path=out,
            exec_envoy=False,
        )
        == 0
    )
    boot = yaml.safe_load(out.read_text())
    node = boot["node"]
    assert node["id"] == "sidecar~10.1.2.3~reviews-v1-abc.shop~shop.svc.cluster.local"
    assert node["metadata"]["LABELS"] == {"app": "reviews", "version": "v1"}
    assert node["metadata"]["SERVICE_ACCOUNT"] == "reviews"
    assert node["metadata"]["INTERCEPTION_MODE"] == "REDIRECT"
    assert node["metadata"]["SA_TOKEN_PATH"] == str(token)
    grpc = boot["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert grpc["initial_metadata"] == [
        {"key": "authorization", "value": "Bearer eyJhbGciOi.token"}
    ]
    xds = boot["static_resources"]["clusters"][0]
    assert xds["type"] == "STRICT_DNS"  # a Service name, resolved by DNS
