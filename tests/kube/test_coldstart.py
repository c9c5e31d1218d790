"""A restart of the operator with 5,000 objects in the apiserver: nothing partial is served,
readiness comes within the target, and no finding of a half-loaded mesh is reported.

A cluster of its own (the session's stays small for the other tests): 1,000 Services with
3 Pods each (with IPs), 200 DestinationRules and 200 VirtualServices (subsets v1/v2, 90/10),
in 10 namespaces. A simulated sidecar (Delta ADS) keeps trying to connect from the moment
the operator process starts: every cluster list it gets must hold all 1,000 services.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.compile.resources import CLUSTER, ENDPOINT
from controlplane.testing.ads_client import SimulatedProxy
from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess, install_crds
from tests.kube.scale import DOMAIN, fill, namespace

# Filling the cluster takes minutes on a loaded machine: the module's own limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SERVICES = 1000
PODS = 3
RULES = SERVICES // 5
# The target is 2 s at 1,000 services on an idle machine (bench/coldstart.py measures the
# wall time). The machine running the tests is shared and its load decides the wall time, so
# the test bounds what the operator itself spent until ready: its CPU seconds (before this
# change about 10 times more: every object went through kopf and a store update of its own).
READY_CPU_WITHIN = 6.0
READY_WALL_WITHIN = 90.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def big_cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        install_crds(cluster)
        fill(cluster, SERVICES, PODS, RULES)
        yield cluster


class EarlyProxy:
    """A Delta sidecar that connects as soon as it can and records every CDS response."""

    def __init__(self, port: int) -> None:
        self.wanted = {f"outbound|80||svc-{i}.{namespace(i)}.{DOMAIN}" for i in range(SERVICES)}
        self.cds: list[int] = []  # of each CDS response: how many wanted clusters it held
        self.clusters: set[str] = set()
        self.endpoints: set[str] = set()
        self.first_at: float | None = None
        self.complete_at: float | None = None
        self.stop = threading.Event()
        self.proxy = SimulatedProxy(
            f"127.0.0.1:{port}",
            "sidecar~10.255.255.1~early.ns-0~ns-0.svc.cluster.local",
            {"NAMESPACE": "ns-0", "ISTIO_VERSION": "1.24.0"},
            delta=True,
            on_response=self._on,
        )
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def _on(self, proxy: SimulatedProxy, received: object, response) -> None:
        from envoy.config.endpoint.v3 import endpoint_pb2

        if self.first_at is None:
            self.first_at = time.monotonic()
        if response.type_url == CLUSTER:
            self.clusters |= {r.name for r in response.resources} & self.wanted
            self.cds.append(len(self.clusters))
        elif response.type_url == ENDPOINT:
            for r in response.resources:
                cla = endpoint_pb2.ClusterLoadAssignment()
                r.resource.Unpack(cla)
                if r.name in self.wanted and any(loc.lb_endpoints for loc in cla.endpoints):
                    self.endpoints.add(r.name)
        if self.complete_at is None and self.endpoints >= self.wanted:
            self.complete_at = time.monotonic()

    async def _run(self) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self.proxy.run(stop, reconnect=True))
        while not self.stop.is_set() and not task.done():
            await asyncio.sleep(0.02)
        stop.set()
        task.cancel()
        try:
            await task
        except BaseException:
            pass


def test_a_restart_with_5000_objects_serves_nothing_partial_and_is_ready_in_time(
    big_cluster: LocalCluster, tmp_path: Path
):
    first = OperatorProcess(big_cluster, tmp_path / "first", webhooks=False).start(timeout=300)
    first.stop()

    second = OperatorProcess(big_cluster, tmp_path / "second", webhooks=False)
    early = EarlyProxy(second.xds_port)
    started = time.monotonic()
    early.thread.start()  # before the process: it connects the moment the port opens
    try:
        second.start(timeout=300)
        ready = time.monotonic() - started
        assert second.process is not None
        cpu = cpu_seconds(second.process.pid)
        second.wait_for(lambda: early.complete_at, timeout=180, what="every service served")
    finally:
        early.stop.set()
        early.thread.join(10)
        log = second.log_text()
        second.stop()

    # Nothing partial: the first cluster list already held every service, and so did each.
    assert early.cds, "the early proxy got no cluster list"
    assert min(early.cds) == SERVICES, f"cluster lists with fewer services: {early.cds[:10]}"
    assert len(early.endpoints) == SERVICES
    assert cpu < READY_CPU_WITHIN, f"ready after {cpu:.1f} CPU s ({ready:.1f} s wall)"
    assert ready < READY_WALL_WITHIN, f"ready after {ready:.1f} s"
    # No finding from a half-loaded mesh (a VirtualService's subset before its
    # DestinationRule, a host before its Service): every route here is good.
    findings = [line for line in log.splitlines() if re.search(r"\bCP0[0-9]{3}\b", line)]
    assert findings == [], findings[:5]
    assert "first snapshot:" in log
