"""A refused security policy fails closed for exactly the workloads it would have selected,
with the effect istiod gives each action, and status and analyze say which and how.

Policies go in as files (the file source's reader, then the store), as in file mode."""

from __future__ import annotations

import textwrap
from pathlib import Path

from envoy.config.rbac.v3 import rbac_pb2

from controlplane.analyze import analyze
from controlplane.api import Codes, Level
from controlplane.compile import SnapshotCompiler
from controlplane.compile.rbac import http_rbac_filters
from controlplane.sources.files import read_file
from controlplane.store import Store
from tests.unit.compile.rbac_eval import Request, allowed, rbac_of

ORDER = "spiffe://cluster.local/ns/default/sa/order-service"
REVIEWS = {"app": "reviews"}
RATINGS = {"app": "ratings"}


def policy(
    name: str, spec: str, namespace: str = "default", kind: str = "AuthorizationPolicy"
) -> str:
    return (
        f"apiVersion: security.istio.io/v1\nkind: {kind}\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec).strip(), "  ")
        + "\n"
    )


def store_of(tmp_path: Path, *docs: str, store: Store | None = None) -> Store:
    path = tmp_path / "policies.yaml"
    path.write_text("---\n".join(docs))
    result = read_file(path, "policies.yaml")
    store = store or Store()
    store.apply(upserts=result.submissions, rejections=result.rejections)
    return store


def decide(store: Store, namespace: str, labels: dict[str, str], request: Request) -> bool:
    selected = SnapshotCompiler(store.snapshot).authorization_policies(namespace, labels)
    return allowed([rbac_of(f) for f in http_rbac_filters(selected)], request)


def filters(store: Store, namespace: str, labels: dict[str, str]) -> list[rbac_pb2.RBAC]:
    selected = SnapshotCompiler(store.snapshot).authorization_policies(namespace, labels)
    return [rbac_of(f) for f in http_rbac_filters(selected)]


def note(store: Store, name: str, namespace: str = "default", kind: str = "AuthorizationPolicy"):
    (status,) = [
        s
        for k, s in store.snapshot.status.items()
        if (k.kind, k.namespace, k.name) == (kind, namespace, name)
    ]
    assert not status.accepted
    notes = [i for i in status.issues if i.code is Codes.POLICY_FAILS_CLOSED]
    assert len(notes) == 1, status.issues
    return notes[0]


# A misspelled `rules` is refused by the strict validation of issue 11 (part "validate");
# until then a bad condition key refuses a policy just as well.
BAD_RULES = "rules: [{when: [{key: source.ipaddress, values: [10.0.0.1]}]}]"
REQUEST = Request("GET", path="/", principal=ORDER)


def test_a_refused_allow_with_a_selector_denies_its_workloads_only(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy("reviews-allow", f"selector: {{matchLabels: {{app: reviews}}}}\n{BAD_RULES}"),
    )
    assert not decide(store, "default", REVIEWS, REQUEST)
    assert decide(store, "default", RATINGS, REQUEST)
    assert decide(store, "prod", REVIEWS, REQUEST)
    # An ALLOW filter with no rule of its own: what another ALLOW policy allows still passes.
    assert [(r.action, list(r.policies)) for r in filters(store, "default", REVIEWS)] == [
        (rbac_pb2.RBAC.ALLOW, [])
    ]
    assert note(store, "reviews-allow").field_message == (
        "ALLOW policy refused: until it is fixed workloads app=reviews in namespace default "
        "deny all requests that no other ALLOW policy allows (nothing is allowed by this "
        "one: fail closed)"
    )
    assert note(store, "reviews-allow").severity is Level.ERROR


def test_a_refused_allow_leaves_what_another_allow_allows(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy("reviews-allow", f"selector: {{matchLabels: {{app: reviews}}}}\n{BAD_RULES}"),
        policy(
            "reviews-get",
            "selector: {matchLabels: {app: reviews}}\nrules: [{to: [{operation: {methods: [GET]}}]}]",
        ),
    )
    assert decide(store, "default", REVIEWS, Request("GET", principal=ORDER))
    assert not decide(store, "default", REVIEWS, Request("POST", principal=ORDER))


def test_a_refused_audit_policy_denies_nothing_and_marks_every_request(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy("audit", f"selector: {{matchLabels: {{app: reviews}}}}\naction: AUDIT\n{BAD_RULES}"),
    )
    assert decide(store, "default", REVIEWS, REQUEST)
    assert [(r.action, list(r.policies)) for r in filters(store, "default", REVIEWS)] == [
        (rbac_pb2.RBAC.LOG, ["ns[default]-policy[audit]-rejected"])
    ]
    assert filters(store, "default", RATINGS) == []
    found = note(store, "audit")
    assert found.severity is Level.WARNING
    assert found.field_message.startswith("AUDIT policy refused: no effect on traffic")


def test_a_refused_deny_with_a_selector_denies_only_its_workloads(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy(
            "no-admin", f"selector: {{matchLabels: {{app: reviews}}}}\naction: DENY\n{BAD_RULES}"
        ),
    )
    assert not decide(store, "default", REVIEWS, REQUEST)
    assert decide(store, "default", RATINGS, REQUEST)
    assert note(store, "no-admin").field_message == (
        "DENY policy refused: until it is fixed workloads app=reviews in namespace default "
        "deny all requests"
    )


def test_a_refused_custom_policy_denies_its_workloads(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy(
            "ext",
            "selector: {matchLabels: {app: reviews}}\naction: CUSTOM\nprovider: {name: opa}\n"
            + BAD_RULES,
        ),
    )
    assert not decide(store, "default", REVIEWS, REQUEST)
    assert decide(store, "default", RATINGS, REQUEST)
    assert note(store, "ext").field_message.startswith("CUSTOM policy refused")


def test_a_refused_namespace_wide_policy_denies_its_namespace_only(tmp_path: Path) -> None:
    store = store_of(tmp_path, policy("all", f"action: DENY\n{BAD_RULES}"))
    assert not decide(store, "default", REVIEWS, REQUEST)
    assert not decide(store, "default", RATINGS, REQUEST)
    assert decide(store, "prod", REVIEWS, REQUEST)
    assert "all workloads of namespace default deny all requests" in note(store, "all").reason


def test_a_refused_policy_in_the_root_namespace_denies_the_whole_mesh(tmp_path: Path) -> None:
    store = store_of(tmp_path, policy("mesh", BAD_RULES, namespace="istio-system"))
    assert not decide(store, "default", REVIEWS, REQUEST)
    assert not decide(store, "prod", RATINGS, REQUEST)
    assert "all workloads of the mesh" in note(store, "mesh", "istio-system").reason


def test_a_refused_root_policy_with_a_selector_denies_those_workloads_everywhere(
    tmp_path: Path,
) -> None:
    store = store_of(
        tmp_path,
        policy(
            "mesh",
            f"selector: {{matchLabels: {{app: reviews}}}}\naction: DENY\n{BAD_RULES}",
            namespace="istio-system",
        ),
    )
    assert not decide(store, "prod", REVIEWS, REQUEST)
    assert decide(store, "prod", RATINGS, REQUEST)
    assert "workloads app=reviews of every namespace" in note(store, "mesh", "istio-system").reason


def test_an_unreadable_selector_fails_closed_for_its_namespace(tmp_path: Path) -> None:
    # The selector could have matched any workload of its namespace, and a policy outside
    # the root namespace reaches no further.
    store = store_of(
        tmp_path,
        policy(
            "bad-selector", "selector: {matchLabels: [app, reviews]}\naction: DENY\nrules: [{}]"
        ),
    )
    assert not decide(store, "default", RATINGS, REQUEST)
    assert decide(store, "prod", RATINGS, REQUEST)
    assert "(its selector cannot be read)" in note(store, "bad-selector").reason


def test_an_unreadable_action_counts_as_deny(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy("what", "selector: {matchLabels: {app: reviews}}\naction: DNY\nrules: [{}]"),
    )
    assert not decide(store, "default", REVIEWS, REQUEST)
    assert decide(store, "default", RATINGS, REQUEST)
    assert "its action cannot be read" in note(store, "what").reason


def test_a_refused_policy_attached_by_target_ref_leaves_sidecars_alone(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy(
            "gw",
            "targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"
            "action: DENY\n" + BAD_RULES,
        ),
    )
    assert decide(store, "default", REVIEWS, REQUEST)
    assert note(store, "gw").severity is Level.WARNING


def test_a_good_policy_attached_by_target_ref_selects_no_sidecar(tmp_path: Path) -> None:
    # istiod: a non-gateway workload ignores a policy with targetRefs altogether.
    store = store_of(
        tmp_path,
        policy(
            "gw",
            "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n"
            "action: DENY\nrules: [{}]",
        ),
    )
    assert decide(store, "default", REVIEWS, REQUEST)


def test_an_earlier_good_version_keeps_serving(tmp_path: Path) -> None:
    good = policy(
        "reviews-allow",
        "selector: {matchLabels: {app: reviews}}\nrules: [{to: [{operation: {methods: [GET]}}]}]",
    )
    store = store_of(tmp_path, good)
    assert decide(store, "default", REVIEWS, Request("GET", principal=ORDER))
    store_of(
        tmp_path,
        policy("reviews-allow", f"selector: {{matchLabels: {{app: reviews}}}}\n{BAD_RULES}"),
        store=store,
    )
    assert decide(store, "default", REVIEWS, Request("GET", principal=ORDER))
    assert not decide(store, "default", REVIEWS, Request("POST", principal=ORDER))
    (status,) = store.snapshot.status.values()
    assert not status.accepted
    assert not any(i.code is Codes.POLICY_FAILS_CLOSED for i in status.issues)


# ---- PeerAuthentication ------------------------------------------------------------------------

BAD_PA = "portLevelMtls: {80: {mode: DISABLE}}"  # port settings need a selector


def mtls(store: Store, namespace: str, labels: dict[str, str]) -> str:
    return SnapshotCompiler(store.snapshot).peer_authentication(namespace, labels).mode


def test_a_refused_peer_authentication_makes_only_its_workloads_strict(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy(
            "reviews",
            "selector: {matchLabels: {app: reviews}}\nmtls: {mode: DISABLE}\n"
            "portLevelMtls: {80: {mode: DISABLED}}",
            kind="PeerAuthentication",
        ),
    )
    assert mtls(store, "default", REVIEWS) == "STRICT"
    assert mtls(store, "default", RATINGS) == "PERMISSIVE"
    assert (
        "workloads app=reviews in namespace default accept mTLS only"
        in note(store, "reviews", kind="PeerAuthentication").reason
    )


def test_a_refused_namespace_peer_authentication_yields_to_a_workload_one(tmp_path: Path) -> None:
    store = store_of(
        tmp_path,
        policy("ns", BAD_PA, kind="PeerAuthentication"),
        policy(
            "ratings",
            "selector: {matchLabels: {app: ratings}}\nmtls: {mode: PERMISSIVE}",
            kind="PeerAuthentication",
        ),
    )
    assert mtls(store, "default", REVIEWS) == "STRICT"
    assert mtls(store, "default", RATINGS) == "PERMISSIVE"  # as it would have whatever ns said
    assert mtls(store, "prod", REVIEWS) == "PERMISSIVE"


def test_a_refused_mesh_peer_authentication_makes_the_mesh_strict(tmp_path: Path) -> None:
    store = store_of(
        tmp_path, policy("mesh", BAD_PA, namespace="istio-system", kind="PeerAuthentication")
    )
    assert mtls(store, "prod", REVIEWS) == "STRICT"
    assert mtls(store, "default", RATINGS) == "STRICT"


# ---- analyze -----------------------------------------------------------------------------------


def test_analyze_says_which_workloads_a_refused_policy_affects_and_how(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        policy(
            "no-admin", f"selector: {{matchLabels: {{app: reviews}}}}\naction: DENY\n{BAD_RULES}"
        )
        + "---\n"
        + policy("audit", f"action: AUDIT\n{BAD_RULES}")
    )
    report = analyze([tmp_path])
    lines = [str(i) for i in report.issues if i.code is Codes.POLICY_FAILS_CLOSED]
    assert lines == [
        f"Error [CP0203 BrokenPolicyFailsClosed] {tmp_path / 'p.yaml'}:1: "
        "AuthorizationPolicy default/no-admin: DENY policy refused: until it is fixed "
        "workloads app=reviews in namespace default deny all requests",
        f"Warning [CP0203 BrokenPolicyFailsClosed] {tmp_path / 'p.yaml'}:9: "
        "AuthorizationPolicy default/audit: AUDIT policy refused: no effect on traffic; until "
        "it is fixed every request to all workloads of namespace default is marked for audit",
    ]


def test_in_cluster_mode_a_refused_policy_has_the_same_scope() -> None:
    import yaml

    from controlplane.sources.kube.watch import translate

    raw = yaml.safe_load(
        policy(
            "no-admin", f"selector: {{matchLabels: {{app: reviews}}}}\naction: DENY\n{BAD_RULES}"
        )
    )
    update = translate("ADDED", raw)
    assert update is not None and update.rejection is not None
    store = Store()
    store.apply(rejections=[update.rejection])
    assert not decide(store, "default", REVIEWS, REQUEST)
    assert decide(store, "default", RATINGS, REQUEST)
    assert "workloads app=reviews in namespace default deny all" in note(store, "no-admin").reason


def test_the_status_conditions_say_what_a_refused_policy_does_meanwhile(tmp_path: Path) -> None:
    from controlplane.status.conditions import conditions

    store = store_of(
        tmp_path,
        policy(
            "no-admin", f"selector: {{matchLabels: {{app: reviews}}}}\naction: DENY\n{BAD_RULES}"
        ),
    )
    (status,) = store.snapshot.status.values()
    accepted, reconciled = conditions(status)
    assert accepted["status"] == "False"
    assert accepted["message"].startswith("spec.rules[0].when[0].key: unknown key")
    assert "refused" not in accepted["message"]
    assert reconciled == {
        "type": "Reconciled",
        "status": "False",
        "reason": "NotAccepted",
        "message": "DENY policy refused: until it is fixed workloads app=reviews in namespace "
        "default deny all requests",
    }


def test_a_refused_dry_run_policy_changes_nothing_and_says_so(tmp_path: Path) -> None:
    # istiod never enforces a dry-run policy, broken or not: failing closed for it would
    # enforce what its author said must not be enforced.
    broken = policy(
        "try-deny",
        """
        action: DENY
        rules: [{when: [{key: source.ipaddr, values: [10.0.0.1]}]}]
        """,
    ).replace(
        "metadata: {name: try-deny, namespace: default}",
        "metadata: {name: try-deny, namespace: default, annotations: {istio.io/dry-run: 'true'}}",
    )
    assert "dry-run" in broken
    store = store_of(tmp_path, broken)
    assert decide(store, "default", REVIEWS, Request(principal=ORDER))
    assert filters(store, "default", REVIEWS) == []
    issue = note(store, "try-deny")
    assert issue.reason.startswith("dry-run DENY policy refused: no effect on traffic")


def test_a_refused_policy_in_the_mesh_config_root_namespace_fails_closed_mesh_wide(
    tmp_path: Path,
) -> None:
    from controlplane.api.base import ObjectMeta
    from controlplane.api.mesh import MeshConfig, MeshConfigSpec
    from controlplane.store import Submission

    store = Store()
    mesh = MeshConfig(
        metadata=ObjectMeta(name="istio", namespace="istio-system"),
        spec=MeshConfigSpec(root_namespace="mesh-root"),
    )
    store.apply(upserts=[Submission(mesh, ())])
    store = store_of(
        tmp_path, policy("typo", "action: DENY\n" + BAD_RULES, namespace="mesh-root"), store=store
    )
    assert not decide(store, "prod", REVIEWS, REQUEST)  # every namespace
    assert note(store, "typo", namespace="mesh-root").reason == (
        "DENY policy refused: until it is fixed all workloads of the mesh deny all requests"
    )
