"""The side-by-side benchmark's own measures (bench/peer.py): the cold-start probe declares a
control plane started only when one proxy holds a cluster, endpoints and a virtual host for
every Service, and the summary's ratio is ours over istiod's."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from bench.peer import (
    BUILD_SH,
    PROXY_METADATA,
    Peer,
    canary_figures,
    cold_start_probe,
    istio_pin,
    summarize,
)
from bench.registry import Registry


class FilePeer(Peer):
    """`controlplane serve` on a directory: the probe's subject, without a cluster."""

    name = "file"

    def __init__(self, workdir: Path, config: Path) -> None:
        super().__init__(None, workdir)
        self.config = config

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "controlplane",
            "serve",
            "--config-dir",
            str(self.config),
            "--xds-port",
            str(self.xds_port),
        ]


def _probe(tmp_path: Path, written: Registry, expected: Registry, timeout: float) -> Any:
    written.write(tmp_path / "config")
    peer = FilePeer(tmp_path / "run", tmp_path / "config")
    peer.start()
    try:
        return asyncio.run(cold_start_probe(peer, expected, PROXY_METADATA, timeout))
    finally:
        peer.stop()


def test_the_probe_times_the_first_complete_configuration(tmp_path: Path) -> None:
    registry = Registry(services=20, rules=5)
    found = _probe(tmp_path, registry, registry, timeout=60)
    assert not found["timed_out"], found
    marks = found["marks"]
    assert 0 < marks["listening"] <= marks["first_response"] <= found["seconds"]
    assert found["seconds"] == max(
        marks["all_clusters"], marks["all_endpoints"], marks["all_routes"]
    )


def test_the_probe_does_not_count_a_configuration_missing_a_service(tmp_path: Path) -> None:
    # The control plane serves 20 Services; the probe waits for 21: never complete.
    found = _probe(tmp_path, Registry(services=20, rules=5), Registry(services=21), timeout=12)
    assert found["timed_out"]
    assert found["seconds"] is None
    assert "first_response" in found["marks"]
    assert "all_clusters" not in found["marks"]


def test_the_summary_gives_medians_per_peer_and_our_ratio_to_istiod() -> None:
    rounds = [
        {"peer": "self", "cold_start": {"seconds": 4.0}, "rss_before_proxies_mb": 100.0},
        {"peer": "istiod", "cold_start": {"seconds": 1.0}, "rss_before_proxies_mb": 200.0},
        {"peer": "self", "cold_start": {"seconds": 6.0}, "rss_before_proxies_mb": 120.0},
        {"peer": "istiod", "cold_start": {"seconds": 3.0}},
    ]
    summary = summarize(rounds, ["self", "istiod"])
    assert summary["cold_start_seconds"]["self"] == {"median": 5.0, "each": [4.0, 6.0]}
    assert summary["cold_start_seconds"]["istiod"]["median"] == 2.0
    assert summary["cold_start_seconds"]["ratio_self_to_istiod"] == 2.5
    assert summary["rss_before_proxies_mb"]["ratio_self_to_istiod"] == 0.55
    assert summary["storm_seconds_to_all_acked"]["ratio_self_to_istiod"] is None


def test_the_istio_pin_is_read_from_the_build_script() -> None:
    pin = istio_pin()
    assert pin.startswith("v0.0.0-") and len(pin.split("-")[-1]) == 12
    assert f"CONTROLPLANE_ISTIO_VERSION:-{pin}" in BUILD_SH.read_text()


def test_a_canary_shift_that_reached_no_proxy_is_counted_apart_not_as_a_p99() -> None:
    def shift(p99: float | None, cpu: float) -> dict[str, Any]:
        latencies = {"count": 2, "p99": p99} if p99 is not None else {"count": 0}
        return {
            "convergence_seconds": latencies,
            "not_converged": 0 if p99 is not None else 2,
            "cpu_seconds": cpu,
            "bytes_received_by_proxies": 10 if p99 is not None else 0,
        }

    figures = canary_figures([shift(None, 0.1), shift(2.0, 1.0), shift(3.0, 2.0), shift(1.0, 3.0)])
    assert figures["p99_median"] == 2.0
    assert figures["p99_worst"] == 3.0
    assert figures["shifts_without_latency"] == 1
    assert figures["not_converged"] == 2
    assert figures["cpu_seconds_median"] == 2.0
    assert figures["bytes_received_by_proxies_median"] == 10
