"""The real ``envoy --mode validate`` accepts the security side of compiled config: mTLS
filter chains with SDS, RBAC filters, auto-mTLS transport socket matches and DestinationRule
TLS, for sidecars that have an identity (the corpus's other validate tests compile sidecars
without one, which get plaintext)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.compile.resources import CLUSTER, LISTENER
from tests.envoy.test_inbound_validate import PODS, SNAPSHOT, workload
from tests.envoy.validate import envoy_validate, static_bootstrap


def with_identity(proxy: Proxy, service_account: str) -> Proxy:
    spiffe = f"spiffe://cluster.local/ns/{proxy.namespace}/sa/{service_account}"
    return replace(proxy, identity=spiffe, service_account=service_account)


CASES = {
    "client": with_identity(
        proxy_from_node(
            "sidecar~10.10.99.2~client.payments~payments.svc.cluster.local",
            {"NAMESPACE": "payments", "LOCAL_OUTBOUND_PORT": "15001"},
        ),
        "client",
    ),
    **{
        f"{mode} {p.metadata.name}": with_identity(
            workload(p, local=mode == "local"), p.spec.service_account_name or "default"
        )
        for p in PODS
        for mode in ("local", "transparent")
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_secured_sidecar_config_passes_envoy_validate(case: str, tmp_path: Path) -> None:
    resources = SnapshotCompiler(SNAPSHOT).compile(CASES[case])
    result = envoy_validate(static_bootstrap(resources), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_corpus_exercises_tls_and_rbac_for_identified_sidecars() -> None:
    # Guards the parametrization above: config without TLS or RBAC would validate trivially.
    payment = next(p for p in PODS if p.metadata.name == "payment-v1")
    out = SnapshotCompiler(SNAPSHOT).compile(CASES["local payment-v1"])
    chains = out.of(LISTENER)[f"{payment.status.pod_ip}_8080"].message.filter_chains
    assert [c.filter_chain_match.transport_protocol for c in chains] == ["tls"]
    assert chains[0].transport_socket.name == "envoy.transport_sockets.tls"
    client = SnapshotCompiler(SNAPSHOT).compile(CASES["client"]).of(CLUSTER)
    assert client["outbound|9080||payment.payments.svc.cluster.local"].message.HasField(
        "transport_socket"
    )
    assert client["outbound|9080||order-service.payments.svc.cluster.local"].message.HasField(
        "transport_socket"
    )
