"""The benchmark's Sidecar figure: a proxy scoped to ./* and istio-system/* holds only its own
namespace's clusters, endpoints and virtual hosts (bench/sidecar_scope.py)."""

from __future__ import annotations

from bench.sidecar_scope import measure


def test_a_sidecar_shrinks_the_benchmark_proxys_configuration_to_its_namespace() -> None:
    found = measure(services=50)  # 10 namespaces: 5 services in ns-0, rules for the first 50
    without, scoped = found["without_sidecar"], found["with_sidecar"]
    assert without["by_type"]["cds"]["count"] == 50 * 3 + 3  # 50 services, 2 subsets each
    assert scoped["by_type"]["cds"]["count"] == 5 * 3 + 3
    assert scoped["by_type"]["eds"]["count"] == 5 * 3
    assert scoped["bytes"] < without["bytes"] / 5
    assert found["bytes_ratio"] == round(scoped["bytes"] / without["bytes"], 4)
