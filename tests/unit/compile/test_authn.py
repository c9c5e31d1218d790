"""PeerAuthentication resolution with Istio's precedence: workload selector > namespace > root
namespace, oldest wins within a scope, UNSET inherits, no policy means PERMISSIVE."""

from __future__ import annotations

from controlplane.api.issues import ResourceKey
from controlplane.compile import SnapshotCompiler
from controlplane.compile.authn import MtlsPolicy
from tests.unit.compile.helpers import snapshot_of


def pa(
    name: str,
    namespace: str,
    mode: str | None,
    selector: dict[str, str] | None = None,
    ports: dict[int, str] | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> str:
    spec = []
    if selector is not None:
        labels = ", ".join(f"{k}: {v}" for k, v in selector.items())
        spec.append(f"selector: {{matchLabels: {{{labels}}}}}")
    if mode is not None:
        spec.append(f"mtls: {{mode: {mode}}}")
    if ports:
        entries = ", ".join(f"'{p}': {{mode: {m}}}" for p, m in ports.items())
        spec.append(f"portLevelMtls: {{{entries}}}")
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: '{created}'}}
spec: {{{", ".join(spec)}}}
"""


def resolve(*docs: str, namespace: str = "default", labels: dict[str, str] | None = None):
    compiler = SnapshotCompiler(snapshot_of(*docs))
    return compiler.peer_authentication(namespace, labels or {"app": "payment"})


def key(namespace: str, name: str) -> ResourceKey:
    return ResourceKey("PeerAuthentication", namespace, name)


def test_no_policy_means_permissive() -> None:
    assert resolve() == MtlsPolicy("PERMISSIVE")


def test_the_root_namespace_policy_applies_mesh_wide() -> None:
    found = resolve(pa("default", "istio-system", "STRICT"))
    assert found.mode == "STRICT"
    assert found.sources == (key("istio-system", "default"),)


def test_a_namespace_policy_beats_the_mesh_policy() -> None:
    found = resolve(pa("default", "istio-system", "STRICT"), pa("default", "default", "PERMISSIVE"))
    assert found.mode == "PERMISSIVE"


def test_a_workload_policy_beats_the_namespace_policy() -> None:
    found = resolve(
        pa("ns", "default", "PERMISSIVE"),
        pa("payment", "default", "STRICT", selector={"app": "payment"}),
    )
    assert found.mode == "STRICT"
    assert found.sources == (key("default", "ns"), key("default", "payment"))


def test_a_workload_policy_that_does_not_select_the_workload_is_ignored() -> None:
    found = resolve(
        pa("ns", "default", "PERMISSIVE"),
        pa("web", "default", "STRICT", selector={"app": "web"}),
    )
    assert found.mode == "PERMISSIVE"


def test_policies_of_other_namespaces_do_not_apply() -> None:
    found = resolve(
        pa("other", "prod", "STRICT"),
        pa("sel", "prod", "DISABLE", selector={"app": "payment"}),
    )
    assert found == MtlsPolicy("PERMISSIVE")


def test_a_selector_policy_in_the_root_namespace_only_selects_root_namespace_workloads() -> None:
    found = resolve(pa("sel", "istio-system", "STRICT", selector={"app": "payment"}))
    assert found.mode == "PERMISSIVE"
    assert resolve(
        pa("sel", "istio-system", "STRICT", selector={"app": "payment"}), namespace="istio-system"
    ).mode == ("STRICT")


def test_the_oldest_policy_wins_within_a_scope() -> None:
    found = resolve(
        pa("newer", "default", "DISABLE", created="2026-03-01T00:00:00Z"),
        pa("older", "default", "STRICT", created="2026-02-01T00:00:00Z"),
    )
    assert found.mode == "STRICT"
    assert found.sources == (key("default", "older"),)


def test_the_oldest_of_several_matching_workload_policies_wins() -> None:
    found = resolve(
        pa("b", "default", "DISABLE", selector={"app": "payment"}, created="2026-03-01T00:00:00Z"),
        pa("a", "default", "STRICT", selector={"app": "payment"}, created="2026-04-01T00:00:00Z"),
    )
    assert found.mode == "DISABLE"


def test_unset_inherits_from_the_scope_above() -> None:
    found = resolve(
        pa("mesh", "istio-system", "STRICT"),
        pa("ns", "default", "UNSET"),
        pa("wl", "default", None, selector={"app": "payment"}),
    )
    assert found.mode == "STRICT"


def test_port_level_mtls_overrides_one_port_and_unset_ports_inherit() -> None:
    found = resolve(
        pa("ns", "default", "STRICT"),
        pa(
            "wl",
            "default",
            "UNSET",
            selector={"app": "payment"},
            ports={8080: "DISABLE", 9090: "UNSET", 7070: "PERMISSIVE"},
        ),
    )
    assert found.mode == "STRICT"
    assert found.for_port(8080) == "DISABLE"
    assert found.for_port(9090) == "STRICT"
    assert found.for_port(7070) == "PERMISSIVE"
    assert found.for_port(1234) == "STRICT"


def test_namespace_port_settings_do_not_exist_so_workload_mode_applies_to_all_ports() -> None:
    found = resolve(pa("wl", "default", "DISABLE", selector={"app": "payment"}))
    assert found.for_port(9080) == "DISABLE"


def test_a_refused_policy_without_a_good_version_makes_its_namespace_strict() -> None:
    from controlplane.api import validate
    from controlplane.api.resources import parse_resource
    from controlplane.store import Store, Submission

    broken = parse_resource(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "legacy", "namespace": "default"},
            "spec": {"mtls": {"mode": "DISABLE"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}},
        }
    )
    store = Store()
    store.apply(upserts=[Submission(broken, tuple(validate(broken)))])
    compiler = SnapshotCompiler(store.snapshot)
    found = compiler.peer_authentication("default", {"app": "payment"})
    assert found.mode == "STRICT"
    assert key("default", "legacy") in found.sources
    assert compiler.peer_authentication("prod", {}).mode == "PERMISSIVE"
