"""AuthorizationPolicy -> RBAC with Istio's semantics: which policies apply, the filter order
(CUSTOM, AUDIT, DENY, ALLOW), policy names, and what each rule matches, checked by evaluating
the emitted config on requests."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from controlplane.api import InvalidResource, load, parse_resource
from controlplane.compile.rbac import (
    HTTP_RBAC_FILTER,
    NETWORK_RBAC_FILTER,
    http_rbac_filters,
    network_rbac_filters,
    policies_for,
)
from tests.support import meshes
from tests.unit.compile.rbac_eval import Request, allowed, rbac_of

ORDER = "spiffe://cluster.local/ns/default/sa/order-service"
REFUND = "spiffe://cluster.local/ns/default/sa/refund-service"
WEB = "spiffe://cluster.local/ns/default/sa/web"
PAYMENT_LABELS = {"app": "payment"}


def policy(
    spec: str, name: str = "p", namespace: str = "default", selector: str | None = "app: payment"
) -> object:
    body = yaml.safe_load(textwrap.dedent(spec)) or {}
    if selector is not None:
        body["selector"] = {"matchLabels": yaml.safe_load(f"{{{selector}}}")}
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }
    resource, _ = load(doc)
    return resource


def configs(*policies: object, namespace: str = "default", labels=None) -> list[rbac_pb2.RBAC]:
    selected = policies_for(policies, namespace, labels or PAYMENT_LABELS)  # type: ignore[arg-type]
    filters = http_rbac_filters(selected)
    assert all(f.name == HTTP_RBAC_FILTER for f in filters)
    return [rbac_of(f) for f in filters]


def tcp_configs(*policies: object) -> list[rbac_pb2.RBAC]:
    filters = network_rbac_filters(policies_for(policies, "default", PAYMENT_LABELS))  # type: ignore[arg-type]
    out = []
    for f in filters:
        assert f.name == NETWORK_RBAC_FILTER
        config = network_rbac_pb2.RBAC()
        f.typed_config.Unpack(config)
        assert config.stat_prefix
        out.append(config.rules)
    return out


PAYMENT = """
action: ALLOW
rules:
- from:
  - source:
      principals: [cluster.local/ns/default/sa/order-service, cluster.local/ns/default/sa/refund-service]
  to:
  - operation:
      methods: [POST]
      paths: [/api/v1/charge, /api/v1/refund]
"""


# ---- the mesh docs example --------------------------------------------------------------------


def test_the_payment_policy_allows_order_and_refund_to_post_and_nothing_else() -> None:
    rbac = configs(policy(PAYMENT, name="payment"))
    assert allowed(rbac, Request("POST", "/api/v1/charge", principal=ORDER))
    assert allowed(rbac, Request("POST", "/api/v1/refund", principal=REFUND))
    assert not allowed(rbac, Request("POST", "/api/v1/charge", principal=WEB))
    assert not allowed(rbac, Request("GET", "/api/v1/charge", principal=ORDER))
    assert not allowed(rbac, Request("POST", "/api/v1/charge/x", principal=ORDER))
    assert not allowed(rbac, Request("POST", "/api/v1/charge"))  # plaintext: no principal


def test_policy_names_follow_istio() -> None:
    rbac = configs(policy(PAYMENT + "- {}\n", name="payment"))
    assert sorted(rbac[0].policies) == [
        "ns[default]-policy[payment]-rule[0]",
        "ns[default]-policy[payment]-rule[1]",
    ]


def test_principals_get_the_spiffe_scheme_prepended() -> None:
    rbac = configs(policy(PAYMENT))
    principals = rbac[0].policies["ns[default]-policy[p]-rule[0]"].principals[0]
    names = [p.authenticated.principal_name.exact for p in principals.or_ids.ids]
    assert names == [ORDER, REFUND]


# ---- decisions --------------------------------------------------------------------------------


def test_no_policy_means_no_filter_and_everything_is_allowed() -> None:
    assert configs() == []


def test_deny_is_evaluated_before_allow_and_wins() -> None:
    deny = policy(
        """
        action: DENY
        rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/order-service]}}]}]
        """,
        name="deny",
    )
    rbac = configs(policy(PAYMENT), deny)
    assert [r.action for r in rbac] == [rbac_pb2.RBAC.DENY, rbac_pb2.RBAC.ALLOW]
    assert not allowed(rbac, Request("POST", "/api/v1/charge", principal=ORDER))
    assert allowed(rbac, Request("POST", "/api/v1/charge", principal=REFUND))


def test_an_allow_policy_without_rules_denies_everything() -> None:
    rbac = configs(policy("action: ALLOW"))
    assert len(rbac) == 1 and rbac[0].action == rbac_pb2.RBAC.ALLOW and not rbac[0].policies
    assert not allowed(rbac, Request(principal=ORDER))


def test_a_deny_policy_without_rules_is_refused_and_would_match_nothing() -> None:
    # Validation refuses it as istiod does (issue 11); the compiler still gives it Istio's
    # meaning (it matches nothing) if handed one, e.g. a version accepted before.
    with pytest.raises(InvalidResource):
        policy("action: DENY")
    unvalidated = parse_resource(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"action": "DENY", "selector": {"matchLabels": PAYMENT_LABELS}},
        }
    )
    assert configs(unvalidated) == []


def test_one_empty_rule_matches_everything() -> None:
    assert allowed(configs(policy("rules: [{}]")), Request())
    assert not allowed(configs(policy("{action: DENY, rules: [{}]}")), Request(principal=ORDER))


def test_with_any_allow_policy_a_request_matching_none_is_denied() -> None:
    other = policy("rules: [{to: [{operation: {paths: [/health]}}]}]", name="health", selector=None)
    rbac = configs(policy(PAYMENT), other)
    assert allowed(rbac, Request("GET", "/health"))
    assert allowed(rbac, Request("POST", "/api/v1/charge", principal=ORDER))
    assert not allowed(rbac, Request("GET", "/other", principal=ORDER))


def test_audit_logs_without_changing_the_decision() -> None:
    audit = policy("{action: AUDIT, rules: [{}]}", name="audit")
    rbac = configs(audit)
    assert [r.action for r in rbac] == [rbac_pb2.RBAC.LOG]
    assert allowed(rbac, Request())


def test_filters_come_in_istio_order_custom_audit_deny_allow() -> None:
    rbac = configs(
        policy("rules: [{}]", name="allow"),
        policy("{action: DENY, rules: [{to: [{operation: {paths: [/x]}}]}]}", name="deny"),
        policy("{action: AUDIT, rules: [{}]}", name="audit"),
        policy(
            "{action: CUSTOM, provider: {name: ext}, rules: [{to: [{operation: {paths: [/c]}}]}]}",
            name="custom",
        ),
    )
    assert [r.action for r in rbac] == [
        # CUSTOM whose provider "ext" the (default) mesh config does not define: denies what
        # it matches, as istiod does (a defined provider: tests/unit/compile/test_extauthz.py)
        rbac_pb2.RBAC.DENY,
        rbac_pb2.RBAC.LOG,
        rbac_pb2.RBAC.DENY,
        rbac_pb2.RBAC.ALLOW,
    ]
    assert list(rbac[0].policies) == [
        "istio-ext-authz-ext-ns[default]-policy[custom]-rule[0]-deny-due-to-bad-CUSTOM-action"
    ]
    assert not allowed(rbac, Request(path="/c"))
    assert not allowed(rbac, Request(path="/x"))
    assert allowed(rbac, Request(path="/y"))


# ---- which policies apply -----------------------------------------------------------------------


def test_a_selector_that_does_not_match_leaves_the_workload_alone() -> None:
    assert configs(policy("action: ALLOW", selector="app: web")) == []


def test_a_policy_without_selector_applies_to_its_whole_namespace_only() -> None:
    everyone = policy("action: ALLOW", selector=None)
    assert len(configs(everyone)) == 1
    assert configs(everyone, namespace="prod") == []


def test_root_namespace_policies_apply_in_every_namespace() -> None:
    mesh_wide = policy("action: ALLOW", namespace="istio-system", selector=None)
    assert len(configs(mesh_wide, namespace="prod", labels={"app": "x"})) == 1
    scoped = policy("action: ALLOW", namespace="istio-system", selector="app: payment")
    assert len(configs(scoped, namespace="prod")) == 1
    assert configs(scoped, namespace="prod", labels={"app": "web"}) == []


# ---- from ---------------------------------------------------------------------------------------


def test_from_entries_are_alternatives_and_the_fields_of_one_must_all_hold() -> None:
    rbac = configs(
        policy(
            """
            rules:
            - from:
              - source: {principals: [cluster.local/ns/default/sa/order-service], ipBlocks: [127.0.7.0/24]}
              - source: {namespaces: [prod]}
            """
        )
    )
    assert allowed(rbac, Request(principal=ORDER, source_ip="127.0.7.11"))
    assert not allowed(rbac, Request(principal=ORDER, source_ip="10.0.0.1"))
    assert allowed(
        rbac, Request(principal="spiffe://cluster.local/ns/prod/sa/x", source_ip="10.0.0.1")
    )
    assert not allowed(rbac, Request(principal=WEB))


def test_principal_wildcards_match_prefix_suffix_or_any_authenticated_peer() -> None:
    def allows(principal: str, peer: str) -> bool:
        return allowed(
            configs(policy(f"rules: [{{from: [{{source: {{principals: ['{principal}']}}}}]}}]")),
            Request(principal=peer),
        )

    assert allows("*", WEB)
    assert not allows("*", "")  # plaintext has no principal
    assert allows("cluster.local/ns/default/*", WEB)
    assert not allows("cluster.local/ns/prod/*", WEB)
    assert allows("*/sa/web", WEB)
    assert not allows("*/sa/web", ORDER)


def test_not_principals_exclude_and_still_require_nothing_else() -> None:
    rbac = configs(
        policy("rules: [{from: [{source: {notPrincipals: [cluster.local/ns/default/sa/web]}}]}]")
    )
    assert allowed(rbac, Request(principal=ORDER))
    assert not allowed(rbac, Request(principal=WEB))
    assert allowed(rbac, Request())  # plaintext is "not web"


def test_namespaces_match_the_namespace_inside_the_spiffe_id() -> None:
    rbac = configs(policy("rules: [{from: [{source: {namespaces: [default]}}]}]"))
    assert allowed(rbac, Request(principal=ORDER))
    assert not allowed(rbac, Request(principal="spiffe://cluster.local/ns/defaultx/sa/a"))
    assert not allowed(rbac, Request(principal="spiffe://cluster.local/ns/prod/sa/default"))
    assert not allowed(rbac, Request())
    deny_ns = configs(policy("rules: [{from: [{source: {notNamespaces: [prod]}}]}]"))
    assert allowed(deny_ns, Request(principal=ORDER))
    assert not allowed(deny_ns, Request(principal="spiffe://cluster.local/ns/prod/sa/a"))


def test_service_accounts_name_one_account_in_any_trust_domain() -> None:
    rbac = configs(
        policy("rules: [{from: [{source: {serviceAccounts: [order-service, prod/batch]}}]}]")
    )
    assert allowed(rbac, Request(principal=ORDER))
    assert allowed(rbac, Request(principal="spiffe://other.domain/ns/prod/sa/batch"))
    assert not allowed(rbac, Request(principal="spiffe://cluster.local/ns/prod/sa/order-service"))


def test_ip_blocks_use_the_direct_peer_and_remote_ip_blocks_the_original_client() -> None:
    rbac = configs(
        policy("rules: [{from: [{source: {ipBlocks: [127.0.7.0/24], notIpBlocks: [127.0.7.13]}}]}]")
    )
    assert allowed(rbac, Request(source_ip="127.0.7.11"))
    assert not allowed(rbac, Request(source_ip="127.0.7.13"))
    assert not allowed(rbac, Request(source_ip="10.0.0.1"))
    remote = configs(policy("rules: [{from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]}]"))
    assert allowed(remote, Request(remote_ip="10.1.2.3", source_ip="127.0.7.11"))
    assert not allowed(remote, Request(remote_ip="127.0.7.11", source_ip="10.1.2.3"))


def test_request_principals_never_match_without_a_jwt() -> None:
    rbac = configs(policy("rules: [{from: [{source: {requestPrincipals: ['*']}}]}]"))
    assert not allowed(rbac, Request(principal=ORDER))
    deny = configs(
        policy("{action: DENY, rules: [{from: [{source: {notRequestPrincipals: ['*']}}]}]}")
    )
    assert not allowed(deny, Request(principal=ORDER))  # no JWT is "not any request principal"


# ---- to -----------------------------------------------------------------------------------------


def test_paths_match_exactly_by_prefix_or_by_suffix_ignoring_the_query() -> None:
    rbac = configs(policy("rules: [{to: [{operation: {paths: [/exact, /api/*, '*.png']}}]}]"))
    assert allowed(rbac, Request(path="/exact?x=1"))
    assert not allowed(rbac, Request(path="/exact/more"))
    assert allowed(rbac, Request(path="/api/v1/charge"))
    assert not allowed(rbac, Request(path="/apiv1"))
    assert allowed(rbac, Request(path="/img/logo.png"))


def test_methods_hosts_and_ports_and_their_not_forms() -> None:
    rbac = configs(
        policy(
            """
            rules:
            - to:
              - operation:
                  notMethods: [DELETE]
                  hosts: [payment.default.svc.cluster.local, '*.example.com']
                  ports: ['9080']
            """
        )
    )
    assert allowed(rbac, Request("GET", host="PAYMENT.default.svc.cluster.local"))
    assert allowed(rbac, Request("GET", host="shop.example.com"))
    assert not allowed(rbac, Request("DELETE", host="shop.example.com"))
    assert not allowed(rbac, Request("GET", host="other"))
    assert not allowed(rbac, Request("GET", host="shop.example.com", destination_port=8080))


def test_to_entries_are_alternatives() -> None:
    rbac = configs(
        policy("rules: [{to: [{operation: {methods: [GET]}}, {operation: {paths: [/w]}}]}]")
    )
    assert allowed(rbac, Request("GET", "/r"))
    assert allowed(rbac, Request("PUT", "/w"))
    assert not allowed(rbac, Request("PUT", "/r"))


# ---- when ---------------------------------------------------------------------------------------


def test_when_conditions_must_all_hold() -> None:
    rbac = configs(
        policy(
            """
            rules:
            - when:
              - {key: 'request.headers[x-tenant]', values: [acme, 'beta*']}
              - {key: source.namespace, values: [default]}
              - {key: destination.port, notValues: ['15000']}
            """
        )
    )
    ok = Request(headers={"X-Tenant": "beta-2"}, principal=ORDER)
    assert allowed(rbac, ok)
    assert not allowed(rbac, Request(headers={"x-tenant": "other"}, principal=ORDER))
    assert not allowed(rbac, Request(principal=ORDER))  # header absent
    assert not allowed(rbac, Request(headers={"x-tenant": "acme"}))  # no namespace (plaintext)
    assert not allowed(
        rbac, Request(headers={"x-tenant": "acme"}, principal=ORDER, destination_port=15000)
    )


def test_when_source_ip_principal_and_destination_ip() -> None:
    rbac = configs(
        policy(
            """
            rules:
            - when:
              - {key: source.ip, values: [127.0.7.0/24]}
              - {key: source.principal, values: [cluster.local/ns/default/sa/order-service]}
              - {key: destination.ip, values: [127.0.7.10]}
            """
        )
    )
    assert allowed(rbac, Request(principal=ORDER))
    assert not allowed(rbac, Request(principal=WEB))
    assert not allowed(rbac, Request(principal=ORDER, destination_ip="127.0.7.99"))


def test_jwt_conditions_never_match_without_a_jwt() -> None:
    rbac = configs(policy("rules: [{when: [{key: 'request.auth.claims[iss]', values: [me]}]}]"))
    assert not allowed(rbac, Request(principal=ORDER))


# ---- TCP ports ----------------------------------------------------------------------------------


def test_for_tcp_an_allow_rule_needing_http_is_dropped_so_it_allows_nothing() -> None:
    rbac = tcp_configs(policy(PAYMENT))
    assert len(rbac) == 1 and not rbac[0].policies
    assert not allowed(rbac, Request(principal=ORDER))


def test_for_tcp_an_allow_rule_without_http_fields_applies() -> None:
    rbac = tcp_configs(
        policy(
            "rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/order-service]}}]}]"
        )
    )
    assert allowed(rbac, Request(principal=ORDER))
    assert not allowed(rbac, Request(principal=WEB))


def test_for_tcp_a_deny_rule_loses_only_its_http_conditions_and_denies_more() -> None:
    deny = policy(
        """
        action: DENY
        rules:
        - from: [{source: {principals: [cluster.local/ns/default/sa/web]}}]
          to: [{operation: {methods: [DELETE]}}]
        """
    )
    rbac = tcp_configs(deny)
    assert not allowed(rbac, Request("GET", principal=WEB))  # every TCP connection of web
    assert allowed(rbac, Request("GET", principal=ORDER))
    # On HTTP ports the method still counts.
    assert allowed(configs(deny), Request("GET", principal=WEB))
    assert not allowed(configs(deny), Request("DELETE", principal=WEB))


# ---- refused policies fail closed ---------------------------------------------------------------


def test_a_refused_policy_without_a_good_version_makes_its_namespace_deny_everything() -> None:
    from controlplane.api import validate
    from controlplane.api.resources import parse_resource
    from controlplane.compile import SnapshotCompiler
    from controlplane.store import Store, Submission

    broken = parse_resource(
        yaml.safe_load(
            meshes.resource(
                "AuthorizationPolicy",
                "typo",
                """
              action: DENY
              rules: [{when: [{key: source.ipaddr, values: [10.0.0.1]}]}]
            """,
            )
        )
    )
    store = Store()
    store.apply(upserts=[Submission(broken, tuple(validate(broken)))])
    compiler = SnapshotCompiler(store.snapshot)
    selected = compiler.authorization_policies("default", {"app": "payment"})
    rbac = [rbac_of(f) for f in http_rbac_filters(selected)]
    assert [r.action for r in rbac] == [rbac_pb2.RBAC.DENY]
    assert list(rbac[0].policies) == ["ns[default]-policy[typo]-rejected"]
    assert not allowed(rbac, Request(principal=ORDER))
    assert compiler.authorization_policies("prod", {"app": "payment"}).rejected == ()
    # Once fixed, it applies as written.
    fixed = parse_resource(
        yaml.safe_load(
            meshes.resource(
                "AuthorizationPolicy",
                "typo",
                """
              action: DENY
              rules: [{when: [{key: source.ip, values: [10.0.0.1]}]}]
            """,
            )
        )
    )
    store.apply(upserts=[Submission(fixed, tuple(validate(fixed)))])
    selected = SnapshotCompiler(store.snapshot).authorization_policies("default", {})
    assert selected.rejected == ()
    assert allowed([rbac_of(f) for f in http_rbac_filters(selected)], Request(principal=ORDER))


# ---- the mesh config: root namespace and trust-domain aliases ---------------------------------


def _compiler_with(mesh_spec: object, *resources: object) -> object:
    from controlplane.api.base import ObjectMeta
    from controlplane.api.mesh import MeshConfig
    from controlplane.compile import SnapshotCompiler
    from controlplane.store import Store, Submission

    store = Store()
    mesh = MeshConfig(metadata=ObjectMeta(name="istio", namespace="istio-system"), spec=mesh_spec)
    store.apply(upserts=[Submission(mesh, ()), *(Submission(r, ()) for r in resources)])
    return SnapshotCompiler(store.snapshot)


def test_the_root_namespace_is_the_mesh_configs() -> None:
    from controlplane.api.mesh import MeshConfigSpec

    mesh_wide = policy("rules: [{from: [{source: {principals: [nobody]}}]}]", namespace="mesh-root")
    compiler = _compiler_with(MeshConfigSpec(root_namespace="mesh-root"), mesh_wide)
    selected = compiler.authorization_policies("prod", PAYMENT_LABELS)  # type: ignore[attr-defined]
    assert [p.metadata.name for p in selected.of("ALLOW")] == ["p"]
    # istio-system is no longer the root: its policies stay in istio-system.
    in_old_root = policy("rules: [{}]", name="old", namespace="istio-system")
    compiler = _compiler_with(MeshConfigSpec(root_namespace="mesh-root"), in_old_root)
    assert not compiler.authorization_policies("prod", PAYMENT_LABELS)  # type: ignore[attr-defined]


def test_principals_are_expanded_over_the_mesh_trust_domain_aliases() -> None:
    from controlplane.api.mesh import MeshConfigSpec

    allow = policy(
        "rules: [{from: [{source: {principals: [td-new/ns/default/sa/order-service]}}]}]"
    )
    spec = MeshConfigSpec(trust_domain="td-new", trust_domain_aliases=["cluster.local", "td-old"])
    compiler = _compiler_with(spec, allow)
    selected = compiler.authorization_policies("default", PAYMENT_LABELS)  # type: ignore[attr-defined]
    rbac = [rbac_of(f) for f in http_rbac_filters(selected)]
    for td in ("td-new", "cluster.local", "td-old"):
        assert allowed(rbac, Request(principal=f"spiffe://{td}/ns/default/sa/order-service"))
    assert not allowed(rbac, Request(principal="spiffe://td-x/ns/default/sa/order-service"))
    # Without aliases only the trust domain written matches.
    compiler = _compiler_with(MeshConfigSpec(trust_domain="td-new"), allow)
    selected = compiler.authorization_policies("default", PAYMENT_LABELS)  # type: ignore[attr-defined]
    rbac = [rbac_of(f) for f in http_rbac_filters(selected)]
    assert not allowed(rbac, Request(principal=ORDER))


def test_a_cluster_local_principal_means_the_local_trust_domain() -> None:
    # istiod: "cluster.local" in a principal stands for the mesh's trust domain and aliases.
    from controlplane.api.mesh import MeshConfigSpec

    compiler = _compiler_with(MeshConfigSpec(trust_domain="td-new"), policy(PAYMENT))
    selected = compiler.authorization_policies("default", PAYMENT_LABELS)  # type: ignore[attr-defined]
    rbac = [rbac_of(f) for f in http_rbac_filters(selected)]
    request = Request(
        "POST", "/api/v1/charge", principal="spiffe://td-new/ns/default/sa/order-service"
    )
    assert allowed(rbac, request)
