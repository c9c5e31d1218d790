"""The valid corpus is valid: no errors, no unsupported fields, nothing rejected in context,
and it compiles for clients in several namespaces and localities."""

from __future__ import annotations

from pydantic import BaseModel

from controlplane.api.support import SUPPORTED
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
    assert [str(i) for i in corpus.issues if not i.reason.startswith("deprecated")] == []
    deprecated = {(str(i.resource), i.path) for i in corpus.issues}
    # The corpus uses deprecated fields on purpose, to show they are still compiled.
    assert {
        (
            "DestinationRule default/ratings",
            "spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        ),
        ("VirtualService default/productpage", "spec.http[1].mirrorPercent"),
        ("VirtualService default/ratings", "spec.http[2].fault.delay.percent"),
    } <= deprecated
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


def _used_paths(model: BaseModel, path: str, out: set[str]) -> None:
    fields = type(model).model_fields
    for name in model.model_fields_set:
        if name not in fields:
            continue
        value = getattr(model, name)
        child = f"{path}.{fields[name].alias or name}"
        out.add(child)
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict):
            items = list(value.values())
            child_items = f"{child}.*"
        else:
            child_items = child
        for item in items:
            if isinstance(item, BaseModel):
                _used_paths(item, child_items, out)


_POLICY_ROOTS = (
    "spec.subsets.trafficPolicy.portLevelSettings",
    "spec.subsets.trafficPolicy",
    "spec.trafficPolicy.portLevelSettings",
    "spec.trafficPolicy",
)


def _policy_relative(path: str) -> str:
    """A traffic-policy field is covered wherever it appears (top level, subset, port)."""
    for root in _POLICY_ROOTS:
        if path == root or path.startswith(root + "."):
            return "trafficPolicy" + path[len(root) :]
    return path


def test_the_corpus_uses_every_supported_http_route_and_traffic_policy_field() -> None:
    used: set[str] = set()
    for submission in load_corpus().submissions:
        resource = submission.resource
        if resource.kind in ("VirtualService", "DestinationRule"):
            found: set[str] = set()
            _used_paths(resource.spec, "spec", found)
            used.update(f"{resource.kind}:{_policy_relative(p)}" for p in found)
    missing = []
    for kind in ("VirtualService", "DestinationRule"):
        for path in sorted(SUPPORTED[kind]):
            mine = path.startswith(("spec.http", "spec.trafficPolicy", "spec.subsets"))
            if not mine or ".tls" in path:
                continue  # TCP/TLS routes and upstream TLS have their own corpus files
            base = f"{kind}:{_policy_relative(path.removesuffix('.**'))}"
            if not any(u == base or u.startswith(base + ".") for u in used):
                missing.append(f"{kind} {path}")
    assert missing == []
