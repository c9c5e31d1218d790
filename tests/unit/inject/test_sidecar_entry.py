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


def test_the_pods_bootstrap_serves_envoys_statistics_on_15090_from_the_admin_port(
    tmp_path: Path, monkeypatch
):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "envoy.yaml"
    run_sidecar(
        xds_address="controlplane.istio-system.svc",
        xds_port=15010,
        token_path=tmp_path / "none",
        labels_path=tmp_path / "none",
        bootstrap_path=out,
        admin_port=15000,
        exec_envoy=False,
    )
    boot = yaml.safe_load(out.read_text())
    [listener] = boot["static_resources"]["listeners"]
    assert listener["name"] == "0.0.0.0_15090"
    assert listener["address"]["socket_address"]["port_value"] == 15090
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [route] = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert route == {
        "match": {"prefix": "/stats/prometheus"},
        "route": {"cluster": "prometheus_stats"},
    }
    stats = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "prometheus_stats")
    endpoint = stats["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    assert boot["stats_config"]["use_all_default_tags"] is False
