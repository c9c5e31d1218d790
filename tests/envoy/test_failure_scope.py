"""A refused security policy fails closed for exactly its own scope, through real Envoys.

Three workloads behind sidecars: ``reviews`` and ``ratings`` in namespace ``default``,
``cart`` in namespace ``prod``, and a ``productpage`` client sidecar that calls them. Each
test writes one refused policy (a condition key Istio does not define refuses it, as a
misspelled field will once validation is strict) and checks which workloads answer 403 from
Envoy's RBAC filter and which still answer 200 from their app.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.testing.backends import Backend
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port
from controlplane.testing.traffic import send

WORKLOADS = {
    # name: (namespace, pod address, app address)
    "reviews": ("default", "127.0.8.10", "127.0.8.110"),
    "ratings": ("default", "127.0.8.11", "127.0.8.111"),
    "cart": ("prod", "127.0.8.12", "127.0.8.112"),
}
CLIENT = "sidecar~127.0.8.1~productpage-1.default~default.svc.cluster.local"
BAD_RULES = "rules: [{when: [{key: source.ipaddress, values: [10.0.0.1]}]}]"


def workloads_yaml(app_port: int) -> str:
    docs = []
    for name, (namespace, pod, _) in WORKLOADS.items():
        docs.append(f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080, targetPort: {app_port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}-1, namespace: {namespace}, labels: {{app: {name}}}}}
status: {{podIP: {pod}}}
""")
    return "---".join(docs)


def policy(
    name: str, spec: str, namespace: str = "default", kind: str = "AuthorizationPolicy"
) -> str:
    body = "\n".join("  " + line for line in spec.strip().splitlines())
    return (
        f"apiVersion: security.istio.io/v1\nkind: {kind}\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}\n"
    )


@dataclass
class ScopeMesh:
    mesh: LocalMesh
    app_port: int
    sidecars: dict[str, Sidecar]
    client: Sidecar
    apps: dict[str, Backend]

    def status(self, name: str) -> int:
        namespace = WORKLOADS[name][0]
        host = f"{name}:9080" if namespace == "default" else f"{name}.{namespace}:9080"
        return send(self.client.outbound_port, host, "/")[0]

    def statuses(self) -> dict[str, int]:
        return {name: self.status(name) for name in WORKLOADS}

    def stat(self, name: str, counter: str) -> int:
        pod = WORKLOADS[name][1]
        return self.sidecars[name].envoy.stat(f"http.inbound_{pod}_{self.app_port}.rbac.{counter}")

    def apply(self, file: str, text: str | None) -> None:
        """Write (or, with None, remove) one config file, then wait until the control plane
        compiled the change and every sidecar ACKed it and drained its old chains."""
        before = self.mesh.debug.get("/debug/syncz")["snapshot_version"]
        if text is None:
            self.mesh.remove(file)
        else:
            self.mesh.write(file, text)
        deadline = 15.0
        end = time.time() + deadline
        while self.mesh.debug.get("/debug/syncz")["snapshot_version"] <= before:
            assert time.time() < end, "the control plane did not publish the change"
            time.sleep(0.02)
        for sidecar in [*self.sidecars.values(), self.client]:
            self.mesh.debug.wait_synced(
                sidecar.node_id, types=("cds", "eds", "lds", "rds"), timeout=deadline
            )
        for sidecar in self.sidecars.values():
            while (
                sidecar.envoy.stat("listener_manager.total_filter_chains_draining")
                or sidecar.envoy.stat("listener_manager.total_listeners_draining")
            ) and time.time() < end:
                time.sleep(0.05)

    def issues(self, resource: str) -> list[str]:
        found = {s["resource"]: s for s in self.mesh.debug.get("/debug/status")}
        return list(found[resource]["issues"])


@pytest.fixture(scope="module")
def sm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScopeMesh]:
    workdir: Path = tmp_path_factory.mktemp("scope")
    mesh = LocalMesh(workdir)
    try:
        mesh.start()
        app_port = free_port("127.0.8.110")
        mesh.write("workloads.yaml", workloads_yaml(app_port))
        apps = {n: mesh.backend(n, app, app_port) for n, (_, _, app) in WORKLOADS.items()}
        sidecars = {
            name: mesh.sidecar(
                f"sidecar~{pod}~{name}-1.{namespace}~{namespace}.svc.cluster.local",
                namespace=namespace,
                labels={"app": name},
                service_account=name,
                app_address=app,
            )
            for name, (namespace, pod, app) in WORKLOADS.items()
        }
        client = mesh.sidecar(CLIENT, labels={"app": "productpage"})
        scope = ScopeMesh(mesh, app_port, sidecars, client, apps)
        assert scope.statuses() == {"reviews": 200, "ratings": 200, "cart": 200}
        yield scope
    finally:
        mesh.stop()


@pytest.fixture
def clean(sm: ScopeMesh) -> Iterator[ScopeMesh]:
    """Each test leaves the mesh as it found it: every workload answering."""
    yield sm
    for path in sm.mesh.config_dir.glob("policy-*.yaml"):
        sm.apply(path.name, None)
    assert sm.statuses() == {"reviews": 200, "ratings": 200, "cart": 200}


def test_a_refused_allow_for_reviews_denies_reviews_and_not_ratings(clean: ScopeMesh) -> None:
    clean.apply(
        "policy-allow.yaml",
        policy("reviews-allow", f"selector: {{matchLabels: {{app: reviews}}}}\n{BAD_RULES}"),
    )
    served = clean.apps["reviews"].count()
    assert clean.statuses() == {"reviews": 403, "ratings": 200, "cart": 200}
    assert clean.apps["reviews"].count() == served  # Envoy denied it, the app never saw it
    assert any(
        "CP0203" in i and "workloads app=reviews in namespace default deny all requests" in i
        for i in clean.issues("AuthorizationPolicy default/reviews-allow")
    )


def test_a_refused_audit_policy_denies_nothing(clean: ScopeMesh) -> None:
    checked = clean.stat("reviews", "allowed")
    clean.apply("policy-audit.yaml", policy("audit", f"action: AUDIT\n{BAD_RULES}"))
    assert clean.statuses() == {"reviews": 200, "ratings": 200, "cart": 200}
    # It is in effect: an RBAC filter (LOG, matching every request: each is marked for
    # audit) now sees every request to its namespace, and lets it through.
    assert clean.stat("reviews", "allowed") == checked + 1
    assert any(
        "AUDIT policy refused: no effect on traffic" in i
        for i in clean.issues("AuthorizationPolicy default/audit")
    )


def test_a_refused_deny_with_a_selector_denies_only_its_workloads(clean: ScopeMesh) -> None:
    clean.apply(
        "policy-deny.yaml",
        policy(
            "no-ratings", f"selector: {{matchLabels: {{app: ratings}}}}\naction: DENY\n{BAD_RULES}"
        ),
    )
    denied = clean.stat("ratings", "denied")
    assert clean.statuses() == {"reviews": 200, "ratings": 403, "cart": 200}
    assert clean.stat("ratings", "denied") == denied + 1


def test_a_refused_namespace_wide_policy_denies_its_namespace_only(clean: ScopeMesh) -> None:
    clean.apply("policy-prod.yaml", policy("prod-deny", f"action: DENY\n{BAD_RULES}", "prod"))
    assert clean.statuses() == {"reviews": 200, "ratings": 200, "cart": 403}
    assert any(
        "CP0203" in i
        and "DENY policy refused: until it is fixed all workloads of namespace prod deny all" in i
        for i in clean.issues("AuthorizationPolicy prod/prod-deny")
    )


def test_a_refused_policy_in_the_root_namespace_denies_the_whole_mesh(clean: ScopeMesh) -> None:
    clean.apply("policy-root.yaml", policy("mesh-allow", BAD_RULES, "istio-system"))
    assert clean.statuses() == {"reviews": 403, "ratings": 403, "cart": 403}
    assert any(
        "all workloads of the mesh deny all requests" in i
        for i in clean.issues("AuthorizationPolicy istio-system/mesh-allow")
    )


def test_a_refused_peer_authentication_closes_only_its_workloads_to_plaintext(
    clean: ScopeMesh,
) -> None:
    # These sidecars have no certificate: STRICT refuses every connection, so plaintext
    # requests tell a STRICT workload from a PERMISSIVE one.
    clean.apply(
        "policy-pa.yaml",
        policy(
            "reviews-pa",
            "selector: {matchLabels: {app: reviews}}\nmtls: {mode: PERMISIVE}",
            kind="PeerAuthentication",
        ),
    )
    found = clean.statuses()
    assert found["reviews"] != 200  # refused before any byte reaches the app
    assert found == {"reviews": found["reviews"], "ratings": 200, "cart": 200}


def test_an_earlier_good_version_keeps_serving(clean: ScopeMesh) -> None:
    # Already true before issue 11 (a regression guard): the last good version stays.
    good = "selector: {matchLabels: {app: reviews}}\nrules: [{to: [{operation: {methods: [GET]}}]}]"
    clean.apply("policy-good.yaml", policy("reviews-get", good))
    host = "reviews:9080"
    assert send(clean.client.outbound_port, host, "/", method="POST")[0] == 403
    assert clean.statuses() == {"reviews": 200, "ratings": 200, "cart": 200}
    clean.apply(
        "policy-good.yaml",
        policy("reviews-get", f"selector: {{matchLabels: {{app: reviews}}}}\n{BAD_RULES}"),
    )
    assert clean.statuses() == {"reviews": 200, "ratings": 200, "cart": 200}
    assert send(clean.client.outbound_port, host, "/", method="POST")[0] == 403
    issues = clean.issues("AuthorizationPolicy default/reviews-get")
    assert any("unknown key 'source.ipaddress'" in i for i in issues)
    assert not any("CP0203" in i for i in issues)
