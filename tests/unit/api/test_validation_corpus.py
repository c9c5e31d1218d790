"""The valid corpus is valid: no errors, no unsupported fields, nothing rejected in context,
and it compiles for clients in several namespaces and localities."""

from __future__ import annotations

from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CLUSTER, ENDPOINT, ROUTE
from tests.corpus import load_corpus

CLIENTS = [
    Proxy(
        node_id="sidecar~127.0.0.1~a.default~default.svc.cluster.local", local_outbound_port=15001
    ),
    Proxy(
        node_id="sidecar~127.0.0.1~b.other~other.svc.cluster.local",
        namespace="other",
        labels={"version": "v1"},
        local_outbound_port=15001,
        locality="us-east/us-east-1a",
    ),
]


def test_every_corpus_document_validates_without_findings_but_deliberate_deprecations() -> None:
    corpus = load_corpus()
    found = sorted((str(i.resource), i.path, i.reason) for i in corpus.issues)
    # The corpus uses two deprecated fields on purpose, to show they still compile.
    assert found == [
        (
            "DestinationRule default/ratings",
            "spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
            "deprecated; use ringHash.minimumRingSize",
        ),
        (
            "VirtualService default/ratings",
            "spec.http[2].fault.delay.percent",
            "deprecated; use percentage instead",
        ),
    ]
    kinds = {s.resource.kind for s in corpus.submissions}
    assert {"VirtualService", "DestinationRule", "Service", "Pod"} <= kinds


def test_the_corpus_is_accepted_in_the_context_of_the_mesh() -> None:
    snapshot = load_corpus().snapshot
    rejected = {str(k): s.issues for k, s in snapshot.status.items() if not s.reconciled}
    assert rejected == {}


def test_the_corpus_compiles_for_every_client() -> None:
    compiler = SnapshotCompiler(load_corpus().snapshot)
    for proxy in CLIENTS:
        out = compiler.compile(proxy)
        assert len(out.of(CLUSTER)) > 10
        assert out.of(ENDPOINT)
        vhosts = out.of(ROUTE)["local_15001"].message.virtual_hosts
        assert sum(len(v.routes) for v in vhosts) > 20
