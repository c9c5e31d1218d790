"""The real ``envoy --mode validate`` accepts what the compiler emits for transparent-mode
sidecars (virtualOutbound, per-port and VIP listeners, virtualInbound) and for the inbound side
of every workload in the valid corpus, in both modes.

The harness is ``tests/envoy/validate.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.api.kube import Pod
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.compile.resources import LISTENER
from tests.corpus import load_corpus
from tests.envoy.validate import envoy_validate, static_bootstrap

SNAPSHOT = load_corpus().snapshot
PODS: list[Pod] = sorted(SNAPSHOT.of_kind("Pod").values(), key=lambda p: p.metadata.name)


def workload(pod: Pod, local: bool) -> Proxy:
    meta = pod.metadata
    node_id = f"sidecar~{pod.status.pod_ip}~{meta.name}.{meta.namespace}~{meta.namespace}.svc.cluster.local"
    metadata: dict[str, Any] = {"NAMESPACE": meta.namespace, "LABELS": dict(meta.labels)}
    if local:
        metadata |= {"LOCAL_OUTBOUND_PORT": "15001", "LOCAL_APP_ADDRESS": "127.0.5.200"}
    return proxy_from_node(node_id, metadata)


CASES = {
    "transparent client": proxy_from_node(
        "sidecar~10.10.99.1~client.default~default.svc.cluster.local", {"NAMESPACE": "default"}
    ),
    "local client with TCP and TLS ports": proxy_from_node(
        "sidecar~127.0.5.2~client.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "LOCAL_OUTBOUND_PORT": "15001",
            "LOCAL_TCP_PORTS": "tcp-echo:9000=21000,tcp-echo:9001=21001,tcp-echo:9443=21443",
        },
    ),
    **{f"transparent {p.metadata.name}": workload(p, local=False) for p in PODS},
    **{f"local {p.metadata.name}": workload(p, local=True) for p in PODS},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_sidecar_passes_envoy_validate(case: str, tmp_path: Path) -> None:
    resources = SnapshotCompiler(SNAPSHOT).compile(CASES[case])
    bootstrap = static_bootstrap(resources)
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_corpus_gives_a_workload_with_inbound_ports_in_both_modes() -> None:
    # Guards the parametrization above: an inbound side that compiled to nothing would pass.
    httpbin = next(p for p in PODS if p.metadata.name == "httpbin-v1")
    transparent = SnapshotCompiler(SNAPSHOT).compile(workload(httpbin, local=False))
    chains = [c.name for c in transparent.of(LISTENER)["virtualInbound"].message.filter_chains]
    assert {"0.0.0.0_80", "0.0.0.0_7070", "0.0.0.0_9091"} <= set(chains)
    local = SnapshotCompiler(SNAPSHOT).compile(workload(httpbin, local=True))
    assert {"10.10.60.1_80", "10.10.60.1_7070", "10.10.60.1_9091"} <= set(local.of(LISTENER))
    names = set(transparent.of(LISTENER))
    assert {"virtualOutbound", "10.96.50.1_9000", "10.96.50.1_9443", "0.0.0.0_6379"} <= names
    client = SnapshotCompiler(SNAPSHOT).compile(CASES["local client with TCP and TLS ports"])
    assert {"127.0.0.1_21000", "127.0.0.1_21001", "127.0.0.1_21443"} <= set(client.of(LISTENER))


def test_the_validator_rejects_a_broken_inbound_listener(tmp_path: Path) -> None:
    httpbin = next(p for p in PODS if p.metadata.name == "httpbin-v1")
    bootstrap = static_bootstrap(SnapshotCompiler(SNAPSHOT).compile(workload(httpbin, local=False)))
    inbound = next(
        x for x in bootstrap["staticResources"]["listeners"] if x["name"] == "virtualInbound"
    )
    # Two chains with the same match: Envoy refuses the listener.
    inbound["filterChains"].append(dict(inbound["filterChains"][1]))
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode != 0
    assert "has the same matching rules" in result.stdout + result.stderr
