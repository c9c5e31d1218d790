"""Incremental recompilation never serves stale configuration: after every edit of the corpus,
the compiler chain the hub keeps (``SnapshotCompiler.following`` plus the shape cache) gives
every proxy exactly the resources a fresh compile of the new snapshot gives, and the store,
which re-checks in context only what an edit touched, decides every effective version and
status as a store that re-checks everything does.

The edits are generated from the corpus itself: each Istio resource is changed in a way that
matters to Envoy, each Service and Pod is edited, and each is deleted and put back, so every
kind of dependency (policies, rules, routes, ports, labels, addresses) is exercised.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from controlplane.api import load
from controlplane.api.resources import key_of
from controlplane.cache.shapes import ShapeCache
from controlplane.compile import ProxyResources, SnapshotCompiler
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.store import ChangeSet, Store, Submission
from tests.corpus import load_corpus

Edit = Callable[[dict[str, Any]], dict[str, Any] | None]


def _proxies(pods: list[Any]) -> list[Proxy]:
    out = [
        proxy_from_node(
            "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
            {"NAMESPACE": "default", "LOCAL_OUTBOUND_PORT": "15001", "LABELS": {"app": "client"}},
        ),
        # A gateway (router mode) selected by the corpus's Gateways (issue 13).
        proxy_from_node(
            "router~10.1.0.90~ingress-1.istio-system~istio-system.svc.cluster.local",
            {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}},
        ),
    ]
    for i, pod in enumerate(pods):
        meta = pod.metadata
        node_id = f"sidecar~{pod.status.pod_ip}~{meta.name}.{meta.namespace}~{meta.namespace}.svc.cluster.local"
        labels = {"NAMESPACE": meta.namespace, "LABELS": dict(meta.labels)}
        account = pod.spec.service_account_name or "default"
        identity = f"spiffe://cluster.local/ns/{meta.namespace}/sa/{account}"
        for local in (False, True) if i < 4 else (i % 2 == 1,):
            metadata = dict(labels)
            if local:
                metadata |= {"LOCAL_OUTBOUND_PORT": "15001", "LOCAL_APP_ADDRESS": "127.0.4.250"}
            proxy = proxy_from_node(node_id, metadata)
            out.append(replace(proxy, identity=identity, service_account=account))
    return out


def _mutations(kind: str) -> list[Edit]:
    """Edits of a document of ``kind`` that change what Envoy gets (None: delete it)."""

    def delete(doc: dict[str, Any]) -> None:
        return None

    def spec_edit(change: Callable[[dict[str, Any]], None]) -> Edit:
        def edit(doc: dict[str, Any]) -> dict[str, Any]:
            out = copy.deepcopy(doc)
            change(out.setdefault("spec", {}))
            return out

        return edit

    def flip_action(spec: dict[str, Any]) -> None:
        spec["action"] = "DENY" if spec.get("action", "ALLOW") == "ALLOW" else "ALLOW"
        spec.setdefault("rules", [{}])

    def drop_rules(spec: dict[str, Any]) -> None:
        spec.pop("rules", None)
        spec["action"] = "ALLOW"

    def flip_mtls(spec: dict[str, Any]) -> None:
        mode = (spec.get("mtls") or {}).get("mode", "UNSET")
        spec["mtls"] = {"mode": "DISABLE" if mode == "STRICT" else "STRICT"}

    def round_robin(spec: dict[str, Any]) -> None:
        spec.setdefault("trafficPolicy", {})["loadBalancer"] = {"simple": "RANDOM"}

    def drop_subset(spec: dict[str, Any]) -> None:
        spec["subsets"] = (spec.get("subsets") or [])[1:]

    def reverse_http(spec: dict[str, Any]) -> None:
        spec["http"] = list(reversed(spec.get("http") or []))
        for route in spec["http"]:
            route["timeout"] = "7s"

    def move_target_port(spec: dict[str, Any]) -> None:
        for port in spec.get("ports") or []:
            port["targetPort"] = 31000 + int(port["port"]) % 1000

    def move_server(spec: dict[str, Any]) -> None:
        for server in spec.get("servers") or []:
            server["port"]["number"] = int(server["port"]["number"]) + 1
            server["hosts"] = ["*"]

    def relabel(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        out["metadata"].setdefault("labels", {})["version"] = "edited"
        return out

    def readdress(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        out.setdefault("status", {})["podIP"] = "10.10.250.250"
        return out

    def resolve_by_dns(spec: dict[str, Any]) -> None:
        spec["resolution"] = "DNS" if spec.get("resolution") == "STATIC" else "STATIC"

    def relabel_workload(spec: dict[str, Any]) -> None:
        spec.setdefault("labels", {})["app"] = "edited"

    def readdress_workload(spec: dict[str, Any]) -> None:
        spec["address"] = "10.10.250.251"

    def narrow_egress(spec: dict[str, Any]) -> None:
        spec["egress"] = [{"hosts": ["~/*"]}]

    def widen_selector(spec: dict[str, Any]) -> None:
        spec.pop("workloadSelector", None)

    def add_ingress(spec: dict[str, Any]) -> None:
        spec["ingress"] = [
            {"port": {"number": 7070, "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1:7071"}
        ]
        spec["inboundConnectionPool"] = {"tcp": {"maxConnections": 5}}

    by_kind: dict[str, list[Edit]] = {
        "ServiceEntry": [spec_edit(resolve_by_dns)],
        "WorkloadEntry": [spec_edit(relabel_workload), spec_edit(readdress_workload)],
        "Sidecar": [spec_edit(narrow_egress), spec_edit(widen_selector), spec_edit(add_ingress)],
        "AuthorizationPolicy": [spec_edit(flip_action), spec_edit(drop_rules)],
        "PeerAuthentication": [spec_edit(flip_mtls)],
        "DestinationRule": [spec_edit(round_robin), spec_edit(drop_subset)],
        "VirtualService": [spec_edit(reverse_http)],
        "Gateway": [spec_edit(move_server)],
        "Service": [spec_edit(move_target_port)],
        "Pod": [relabel, readdress],
    }
    return [*by_kind.get(kind, []), delete]


class Chain:
    """The store and the hub's incremental chain, next to fresh compiles for comparison."""

    def __init__(self, documents: list[dict[str, Any]], proxies: list[Proxy]) -> None:
        self.store = Store()
        self.reference = Store(recheck_everything=True)
        self.reference.apply(upserts=[self._submission(d) for d in documents])
        self.changes: list[ChangeSet] = []
        self.store.subscribe(lambda snapshot, change: self.changes.append(change))
        self.store.apply(upserts=[self._submission(d) for d in documents])
        self.compiler = SnapshotCompiler(self.store.snapshot)
        self.shapes = ShapeCache()
        self.proxies = proxies
        self.check()

    @staticmethod
    def _submission(doc: dict[str, Any]) -> Submission:
        resource, issues = load(doc)
        return Submission(resource, tuple(issues))

    def apply(self, doc: dict[str, Any] | None, original: dict[str, Any]) -> None:
        self.changes.clear()
        for store in (self.store, self.reference):
            if doc is None:
                store.apply(deletes=[key_of(self._submission(original).resource)])
            else:
                store.apply(upserts=[self._submission(doc)])
        keys = set().union(*(c.changed | c.status_changed for c in self.changes))
        if not keys:
            return
        self.compiler, touched = SnapshotCompiler.following(
            self.compiler, self.store.snapshot, keys
        )
        self.shapes = self.shapes.next_generation(touched)

    def check(self) -> None:
        mine, reference = self.store.snapshot, self.reference.snapshot
        assert _effective(mine) == _effective(reference)
        assert dict(mine.status) == dict(reference.status)
        fresh = SnapshotCompiler(self.store.snapshot)
        for proxy in self.proxies:
            snapshot = self.compiler.snapshot
            shape = self.shapes.lookup(proxy, snapshot) or self.shapes.build(proxy, self.compiler)
            assert _versions(shape.resources) == _versions(fresh.compile(proxy)), proxy.node_id


def _effective(snapshot: Any) -> dict[str, dict[Any, Any]]:
    return {kind: dict(items) for kind, items in snapshot.resources.items() if items}


def _versions(resources: ProxyResources) -> dict[str, dict[str, str]]:
    return {t: {n: r.version for n, r in m.items()} for t, m in resources.by_type.items()}


def _corpus_documents() -> list[dict[str, Any]]:
    corpus = load_corpus()
    return [
        s.resource.model_dump(by_alias=True, exclude_none=True, exclude_unset=True)
        for s in corpus.submissions
    ]


DOCUMENTS = _corpus_documents()


def _cases() -> Iterator[tuple[str, int]]:
    for i, doc in enumerate(DOCUMENTS):
        if doc["kind"] in ("Namespace", "EndpointSlice"):
            continue
        yield f"{doc['kind']} {doc['metadata'].get('namespace')}/{doc['metadata']['name']}", i


@pytest.fixture(scope="module")
def chain() -> Chain:
    """One chain for the module: each test edits the corpus and puts it back."""
    snapshot = load_corpus().snapshot
    pods: dict[tuple[str, str], Any] = {}  # one workload per app and namespace is enough
    for pod in sorted(snapshot.of_kind("Pod").values(), key=lambda p: p.metadata.name):
        app = pod.metadata.labels.get("app", pod.metadata.name)
        pods.setdefault((pod.metadata.namespace, app), pod)
    return Chain(DOCUMENTS, _proxies(list(pods.values())))


@pytest.mark.slow
@pytest.mark.parametrize("index", [i for _, i in _cases()], ids=[n for n, _ in _cases()])
def test_every_edit_of_the_corpus_recompiles_to_what_a_fresh_compile_gives(
    index: int, chain: Chain
) -> None:
    original = DOCUMENTS[index]
    for edit in _mutations(original["kind"]):
        chain.apply(edit(original), original)
        chain.check()
        chain.apply(original, original)  # and back
        chain.check()
