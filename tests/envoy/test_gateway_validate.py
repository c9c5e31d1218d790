"""What a gateway proxy is given from the corpus's gateway samples (the shapes of Istio's
bookinfo-gateway.yaml, helloworld-gateway.yaml and httpbin-gateway.yaml, written here) passes
the real ``envoy --mode validate`` (harness: ``tests/envoy/validate.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import proxy_from_node
from controlplane.compile.resources import LISTENER, ROUTE
from tests.corpus import load_corpus
from tests.envoy.validate import envoy_validate, static_bootstrap

INGRESS = proxy_from_node(
    "router~10.1.0.90~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
    {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}},
)


@pytest.fixture(scope="module")
def compiler() -> SnapshotCompiler:
    corpus = load_corpus()
    assert not [i for i in corpus.issues if str(i.severity) == "Error"]
    return SnapshotCompiler(corpus.snapshot)


def test_the_ingress_gateway_config_of_the_samples_passes_envoy_validate(
    compiler: SnapshotCompiler, tmp_path: Path
) -> None:
    resources = compiler.compile(INGRESS)
    assert sorted(resources.of(LISTENER)) == ["0.0.0.0_8080", "0.0.0.0_9090"]
    routes = resources.of(ROUTE)
    assert sorted(routes) == ["http.8080", "http.9090"]
    hosts = {v.name for v in routes["http.8080"].message.virtual_hosts}  # type: ignore[attr-defined]
    assert hosts == {"*:8080", "helloworld.example.com:8080"}
    hosts = {v.name for v in routes["http.9090"].message.virtual_hosts}  # type: ignore[attr-defined]
    assert hosts == {"httpbin.example.com:9090"}
    bootstrap = static_bootstrap(resources)
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout


def test_the_validator_rejects_a_malformed_gateway_route(
    compiler: SnapshotCompiler, tmp_path: Path
) -> None:
    # The harness would catch a bad gateway translation: a weighted route whose clusters'
    # weights sum to zero is refused by Envoy.
    bootstrap = static_bootstrap(compiler.compile(INGRESS))
    for listener in bootstrap["staticResources"]["listeners"]:
        for chain in listener["filterChains"]:
            config = chain["filters"][0]["typedConfig"]["routeConfig"]
            for vhost in config["virtualHosts"]:
                for route in vhost.get("routes", []):
                    for cluster in (
                        route.get("route", {}).get("weightedClusters", {}).get("clusters", [])
                    ):
                        cluster["weight"] = 0
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode != 0
