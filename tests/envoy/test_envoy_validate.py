"""Every resource compiled from the valid corpus passes the real ``envoy --mode validate``
(harness: ``tests/envoy/validate.py``), and the harness catches a malformed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import TRANSPARENT, Proxy
from tests.corpus import load_corpus
from tests.envoy.validate import envoy_validate, static_bootstrap

CLIENTS = {
    "default": Proxy(
        node_id="sidecar~127.0.0.1~a.default~default.svc.cluster.local",
        labels={"app": "productpage", "version": "v1"},
        local_outbound_port=15001,
    ),
    "other-namespace-located": Proxy(
        node_id="sidecar~127.0.0.1~b.other~other.svc.cluster.local",
        namespace="other",
        labels={"version": "v1"},
        local_outbound_port=15001,
        locality="us-east/us-east-1a",
    ),
    "east-client": Proxy(
        node_id="sidecar~127.0.0.1~c.default~default.svc.cluster.local",
        local_outbound_port=15002,
        locality="us-east/us-east-1a/s1",
    ),
    # Interception: virtualOutbound, VIP and 0.0.0.0_<port> listeners (SNI chains of TLS
    # ServiceEntry hosts), DNS and ORIGINAL_DST clusters.
    "transparent": Proxy(
        node_id="sidecar~10.0.9.9~d.default~default.svc.cluster.local",
        labels={"app": "client"},
        mode=TRANSPARENT,
    ),
}


@pytest.fixture(scope="module")
def compiler() -> SnapshotCompiler:
    corpus = load_corpus()
    assert not [i for i in corpus.issues if str(i.severity) == "Error"]
    return SnapshotCompiler(corpus.snapshot)


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_compiled_corpus_passes_envoy_validate(
    compiler: SnapshotCompiler, client: str, tmp_path: Path
) -> None:
    resources = compiler.compile(CLIENTS[client])
    bootstrap = static_bootstrap(resources)
    assert len(bootstrap["staticResources"]["clusters"]) > 10
    assert bootstrap["staticResources"]["listeners"]
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout


def test_the_validator_rejects_a_malformed_compiled_resource(
    compiler: SnapshotCompiler, tmp_path: Path
) -> None:
    # Proves the harness would catch a bad translation: corrupt one compiled route (a regex
    # RE2 cannot compile) and one cluster (a ring smaller than its minimum), separately.
    bootstrap = static_bootstrap(compiler.compile(CLIENTS["default"]))
    listener = bootstrap["staticResources"]["listeners"][0]
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["match"] = {"safeRegex": {"regex": "(("}}
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode != 0
    assert "missing )" in result.stdout + result.stderr

    bootstrap = static_bootstrap(compiler.compile(CLIENTS["default"]))
    cluster = next(
        c for c in bootstrap["staticResources"]["clusters"] if c.get("lbPolicy") == "RING_HASH"
    )
    cluster["ringHashLbConfig"] = {"minimumRingSize": "2048", "maximumRingSize": "1024"}
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode != 0
