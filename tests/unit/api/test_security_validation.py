"""PeerAuthentication and AuthorizationPolicy validation: bad input is rejected with the field
path and the reason, never compiled into a permissive filter."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from controlplane.api import Codes, InvalidResource, Level, load
from tests.support import meshes


def _load(text: str) -> list[str]:
    """Findings as ``path: reason`` for warnings, or raise InvalidResource for errors."""
    _, issues = load(yaml.safe_load(textwrap.dedent(text)))
    return [i.field_message for i in issues]


def _errors(text: str) -> list[str]:
    """The errors found (what a refused policy does meanwhile is the store's to say:
    tests/unit/compile/test_rbac_failure_scope.py)."""
    with pytest.raises(InvalidResource) as caught:
        load(yaml.safe_load(textwrap.dedent(text)))
    issues = caught.value.issues
    assert all(i.code is not Codes.POLICY_FAILS_CLOSED for i in issues)
    return [i.field_message for i in issues if i.severity is Level.ERROR]


def policy(rules: str, action: str = "ALLOW", extra: str = "") -> str:
    return f"""
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: p, namespace: default}}
    spec:
      action: {action}
      {extra}
      rules: {rules}
    """


# ---- AuthorizationPolicy ---------------------------------------------------------------------


def test_the_mesh_docs_payment_policy_is_valid_and_fully_supported() -> None:
    assert (
        _load(
            policy(
                "[{from: [{source: {principals: [cluster.local/ns/default/sa/order-service]}}],"
                " to: [{operation: {methods: [POST], paths: [/api/v1/charge]}}]}]"
            )
        )
        == []
    )


def test_an_empty_principal_is_rejected_with_its_path() -> None:
    found = _errors(policy("[{from: [{source: {principals: ['']}}]}]"))
    assert found == ["spec.rules[0].from[0].source.principals[0]: principal must not be empty"]


@pytest.mark.parametrize(
    ("principal", "reason"),
    [
        ("cluster.local/ns/*/sa/b", "matched as the character '*'"),
        ("cluster.local/ns/a/sa/b c", "contains whitespace, matched literally"),
    ],
)
def test_principals_istiod_matches_literally_are_accepted_with_a_warning(
    principal: str, reason: str
) -> None:
    # istiod refuses only empty values (pkg/config/validation ValidateAuthorizationPolicy,
    # CheckEmptyValues) and matches a '*' inside a value as that character (issue 12).
    found = _load(policy(f"[{{from: [{{source: {{principals: ['{principal}']}}}}]}}]"))
    assert len(found) == 1
    assert found[0].startswith("spec.rules[0].from[0].source.principals[0]: ")
    assert reason in found[0]


def test_principals_istiod_accepts_are_accepted_and_one_that_never_matches_is_a_warning() -> None:
    # istiod accepts any principal string (it matches spiffe://<value>); issue 11: where
    # istiod accepts, accept. These were refused before.
    assert (
        _load(policy("[{from: [{source: {principals: [principal, cluster.local/sa/b]}}]}]")) == []
    )
    assert _load(
        policy("[{from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]}]")
    ) == [
        "spec.rules[0].from[0].source.principals[0]: principal 'spiffe://cluster.local/ns/a/sa/b'"
        " is matched as 'spiffe://spiffe://cluster.local/ns/a/sa/b' and never matches; write it"
        " without 'spiffe://' (e.g. 'cluster.local/ns/a/sa/b')"
    ]


@pytest.mark.parametrize("principal", ["*", "cluster.local/ns/default/*", "*/sa/order"])
def test_wildcard_principals_at_either_end_are_accepted(principal: str) -> None:
    assert _load(policy(f"[{{from: [{{source: {{principals: ['{principal}']}}}}]}}]")) == []


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "10.0.0.300", "not-an-ip", "10.0.0.0/"])
def test_a_malformed_cidr_is_rejected(cidr: str) -> None:
    found = _errors(
        policy(f"[{{from: [{{source: {{ipBlocks: [10.0.0.0/8], notIpBlocks: ['{cidr}']}}}}]}}]")
    )
    assert found == [
        f"spec.rules[0].from[0].source.notIpBlocks[0]: {cidr!r} is not an IP address or "
        "CIDR block (e.g. 10.0.0.0/16)"
    ]


def test_an_unknown_when_key_is_rejected_naming_the_known_ones() -> None:
    found = _errors(policy("[{when: [{key: source.ipaddress, values: [10.0.0.1]}]}]"))
    assert len(found) == 1
    assert found[0].startswith("spec.rules[0].when[0].key: unknown key 'source.ipaddress'")
    assert "request.headers[<name>]" in found[0]


@pytest.mark.parametrize(
    ("condition", "path", "reason"),
    [
        ("{key: source.ip, values: [10.0.0.0/40]}", "values[0]", "not an IP address"),
        ("{key: destination.port, values: ['65536']}", "values[0]", "between 0 and 65535"),
        ("{key: source.trustDomain, notValues: ['a*b']}", "notValues[0]", "one '*' at most"),
        ("{key: destination.namespace, values: [a]}", "key", "metadata.namespace"),
        ("{key: 'destination.labels[app]', values: [a]}", "key", "workload selector"),
        ("{key: 'experimental.envoy.filters.a.b[]', values: [a]}", "key", "unknown key"),
        ("{key: 'request.headers[x-user]'}", "", "needs values or notValues"),
        ("{key: 'request.headers[]', values: [a]}", "key", "unknown key"),
        ("{values: [a]}", "key", "key is required"),
    ],
)
def test_when_values_are_checked_by_their_key(condition: str, path: str, reason: str) -> None:
    found = _errors(policy(f"[{{when: [{condition}]}}]"))
    assert len(found) == 1
    expected = "spec.rules[0].when[0]" + (f".{path}" if path else "")
    assert found[0].startswith(expected + ": ")
    assert reason in found[0]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("request.headers[x-user]", "alice"),
        ("request.auth.claims[groups]", "admins"),
        ("source.namespace", "default"),
        ("remote.ip", "10.1.0.0/16"),
        ("destination.ip", "127.0.7.10"),
        ("destination.port", "9080"),
        ("connection.sni", "*.example.com"),
        ("request.auth.principal", "issuer/subject"),
        ("source.serviceAccount", "default/order"),
        ("source.trustDomain", "*.local"),
        ("source.principal", "x/ns/*/sa/b"),  # literal '*': a warning, below
        ("destination.port", "0"),
        ("experimental.envoy.filters.network.mysql_proxy[db.table]", "[update]"),
    ],
)
def test_known_when_keys_are_accepted(key: str, value: str) -> None:
    found = _load(policy(f"[{{when: [{{key: '{key}', values: ['{value}']}}]}}]"))
    assert all("matched as the character" in f for f in found), found


def test_empty_source_operation_and_ports_out_of_range_are_rejected() -> None:
    found = _errors(
        policy(
            "[{from: [{source: {}}], to: [{operation: {ports: ['80', '70000', http]}},"
            " {operation: {}}]}]"
        )
    )
    assert found == [
        "spec.rules[0].from[0].source: a from entry needs a source with at least one field",
        "spec.rules[0].to[0].operation.ports[1]: port '70000' must be a number between 0 and 65535",
        "spec.rules[0].to[0].operation.ports[2]: port 'http' must be a number between 0 and 65535",
        "spec.rules[0].to[1].operation: a to entry needs an operation with at least one field",
    ]


def test_lower_case_methods_warn_and_middle_wildcard_paths_warn_they_are_literal() -> None:
    # istiod accepts any method string (issue 11: accept it); one that matches no standard
    # method is a warning, since HTTP methods are case-sensitive.
    assert _load(policy("[{to: [{operation: {methods: [get, 'method-prefix-*']}}]}]")) == [
        "spec.rules[0].to[0].operation.methods[0]: 'get' matches no standard HTTP method",
        "spec.rules[0].to[0].operation.methods[1]: 'method-prefix-*' matches no standard HTTP"
        " method",
    ]
    found = _load(policy("[{to: [{operation: {methods: [GET], paths: ['/api/*/charge']}}]}]"))
    assert found == [
        "spec.rules[0].to[0].operation.paths[0]: path '/api/*/charge': a '*' inside a value is"
        " matched as the character '*' (it is a wildcard only alone, as a prefix '*foo' or as a"
        " suffix 'foo*')"
    ]


@pytest.mark.parametrize("path", ["/path/template/{*}", "/{**}/path/template", "/a/{*}/b/{**}"])
def test_path_templates_istiod_accepts_are_accepted(path: str) -> None:
    assert _load(policy(f"[{{to: [{{operation: {{paths: ['{path}']}}}}]}}]")) == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/a/{**}/{*}", "{**} must be the last operator"),
        ("/a/{x}", "outside a {*} or {**} segment"),
        ("/a/b*/{*}", "not a valid template literal"),
    ],
)
def test_path_templates_istiod_refuses_are_refused(path: str, reason: str) -> None:
    found = _errors(policy(f"[{{to: [{{operation: {{notPaths: ['{path}']}}}}]}}]"))
    assert len(found) == 1 and found[0].startswith("spec.rules[0].to[0].operation.notPaths[0]: "), (
        found
    )
    assert reason in found[0]


def test_trust_domains_are_accepted_and_checked_as_istiod_checks_them() -> None:
    assert (
        _load(
            policy(
                "[{from: [{source: {trustDomains: [cluster.local, '*.td'], notTrustDomains: ['bad*']}}]}]"
            )
        )
        == []
    )
    assert _errors(policy("[{from: [{source: {trustDomains: ['a/b', 'x*y*']}}]}]")) == [
        "spec.rules[0].from[0].source.trustDomains[0]: trust domain 'a/b' must not contain '/'",
        "spec.rules[0].from[0].source.trustDomains[1]: trust domain 'x*y*': one '*' at most,"
        " alone, at the start or at the end",
    ]


def test_empty_from_or_to_lists_are_refused_as_istiod_refuses_them() -> None:
    assert _errors(policy("[{from: [], to: []}]")) == [
        "spec.rules[0].from: `from` must not be empty when set",
        "spec.rules[0].to: `to` must not be empty when set",
    ]


def test_an_unreadable_dry_run_annotation_is_a_warning_and_the_policy_is_enforced() -> None:
    found = _load(
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default, annotations: {istio.io/dry-run: "yes"}}
        spec: {rules: [{}]}
        """
    )
    assert found == [
        "metadata.annotations[istio.io/dry-run]: 'yes' is not a boolean ('true' or 'false');"
        " the policy is enforced, as istiod does"
    ]


def test_a_deny_rule_with_only_http_attributes_warns_it_denies_every_tcp_connection() -> None:
    found = _load(policy("[{to: [{operation: {methods: [DELETE]}}]}]", action="DENY"))
    assert found == [
        "spec.rules[0]: this DENY rule uses only HTTP attributes, so it denies every connection"
        " to the TCP ports it covers (as in istiod); name the ports to narrow it"
    ]
    assert (
        _load(policy("[{to: [{operation: {methods: [DELETE], ports: ['80']}}]}]", action="DENY"))
        == []
    )


def test_custom_refuses_the_identity_fields_istiod_refuses() -> None:
    found = _errors(
        policy(
            "[{from: [{source: {principals: [a]}}], when: [{key: source.namespace, values: [x]}]}]",
            action="CUSTOM",
            extra="provider: {name: ext}",
        )
    )
    assert found == [
        "spec.rules[0].from[0].source.principals: not supported with action CUSTOM (as in istiod)",
        "spec.rules[0].when[0].key: 'source.namespace' is not supported with action CUSTOM"
        " (as in istiod)",
    ]


def test_service_accounts_cannot_be_mixed_with_principals() -> None:
    found = _errors(
        policy(
            "[{from: [{source: {serviceAccounts: [default/order],"
            " principals: [cluster.local/ns/default/sa/web]}}]}]"
        )
    )
    assert found == [
        "spec.rules[0].from[0].source.serviceAccounts: serviceAccounts cannot be combined "
        "with principals or namespaces"
    ]


def test_provider_is_only_for_custom_and_custom_needs_one() -> None:
    assert _errors(policy("[{}]", extra="provider: {name: ext}")) == [
        "spec.provider: provider is only allowed with action CUSTOM"
    ]
    assert _errors(policy("[{}]", action="CUSTOM")) == [
        "spec.provider.name: a CUSTOM policy needs a provider"
    ]


def test_custom_with_a_provider_is_accepted_without_findings() -> None:
    # CUSTOM is implemented (compile/extauthz.py): no "not supported" warning any more; an
    # unknown provider is a finding in context (CP0421), not of the policy alone.
    found = _load(policy("[{}]", action="CUSTOM", extra="provider: {name: ext}"))
    assert found == []


def test_a_deny_without_rules_is_refused_as_istiod_refuses_it() -> None:
    # istiod refuses it (a DENY that never triggers); so does the webhook now, which also
    # catches a misspelt `rules:` that the apiserver pruned before admission (issue 11).
    found = _errors(
        """
        apiVersion: security.istio.io/v1beta1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec: {action: DENY}
        """
    )
    assert found == [
        "spec.rules: a DENY policy without rules never triggers; add an empty rule {} to "
        "deny every request"
    ]


def test_a_wildcard_in_the_selector_is_rejected() -> None:
    found = _errors(policy("[{}]", extra="selector: {matchLabels: {app: 'pay*'}}"))
    assert found == [
        "spec.selector.matchLabels.app: wildcards are not allowed in a workload selector"
    ]


def test_target_ref_is_reported_as_not_supported_yet() -> None:
    found = _load(policy("[{}]", extra="targetRef: {kind: Service, name: payment}"))
    assert found == ["spec.targetRef: not supported yet; ignored"]


# ---- PeerAuthentication ----------------------------------------------------------------------


def peer(spec: str) -> str:
    return f"""
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {{name: pa, namespace: default}}
    spec: {spec}
    """


def test_port_level_mtls_without_a_selector_is_rejected() -> None:
    found = _errors(peer("{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}"))
    assert found == [
        "spec.portLevelMtls: portLevelMtls applies to the ports of selected workloads and "
        "needs a selector with matchLabels"
    ]


def test_port_level_mtls_with_an_empty_selector_is_rejected() -> None:
    found = _errors(peer("{selector: {matchLabels: {}}, portLevelMtls: {8080: {mode: STRICT}}}"))
    assert [f.split(":")[0] for f in found] == ["spec.portLevelMtls"]


def test_port_level_mtls_ports_must_be_valid() -> None:
    found = _errors(
        peer("{selector: {matchLabels: {app: a}}, portLevelMtls: {'0': {mode: STRICT}}}")
    )
    assert found == ["spec.portLevelMtls.0: port must be between 1 and 65535"]


def test_a_workload_policy_with_port_level_mtls_is_valid_and_supported() -> None:
    assert (
        _load(
            peer(
                "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT},"
                " portLevelMtls: {'8080': {mode: PERMISSIVE}}}"
            )
        )
        == []
    )


def test_an_unknown_mode_is_a_schema_error_with_its_path() -> None:
    with pytest.raises(InvalidResource) as caught:
        load(yaml.safe_load(textwrap.dedent(peer("{mtls: {mode: STRICTER}}"))))
    assert [i.path for i in caught.value.issues] == ["spec.mtls.mode"]


def test_a_refused_policy_says_that_it_fails_closed() -> None:
    """The note comes from the store, which knows the policy's scope and whether an earlier
    version is in effect (more in tests/unit/compile/test_rbac_failure_scope.py)."""
    from controlplane.sources.files import ReadResult, _read_document
    from controlplane.store import Store

    def status_note(text: str) -> str:
        result = ReadResult()
        _read_document(yaml.safe_load(textwrap.dedent(text)), "f.yaml:1", "default", result)
        store = Store()
        store.apply(rejections=result.rejections)
        (status,) = store.snapshot.status.values()
        note = status.issues[-1]
        assert note.code is Codes.POLICY_FAILS_CLOSED
        return note.field_message

    assert status_note(policy("[{when: [{key: nope, values: [x]}]}]")) == (
        "ALLOW policy refused: until it is fixed all workloads of namespace default deny "
        "all requests that no other ALLOW policy allows (nothing is allowed by this one: "
        "fail closed)"
    )
    assert "all workloads of the mesh accept mTLS only (STRICT" in status_note(
        "{apiVersion: security.istio.io/v1, kind: PeerAuthentication, metadata: "
        "{name: pa, namespace: istio-system}, spec: {portLevelMtls: {80: {mode: STRICT}}}}"
    )


def test_destination_rule_tls_is_supported_but_credential_name_is_reported() -> None:
    found = _load(
        meshes.resource(
            "DestinationRule",
            "payment",
            """
          host: payment
          trafficPolicy:
            tls: {mode: SIMPLE, sni: pay.example, credentialName: pay-cert}
            portLevelSettings:
            - port: {number: 9080}
              tls: {mode: ISTIO_MUTUAL}
          subsets:
          - name: v1
            trafficPolicy: {tls: {mode: DISABLE}}
        """,
        )
    )
    assert found == ["spec.trafficPolicy.tls.credentialName: not supported yet; ignored"]


def test_only_one_of_selector_target_ref_and_target_refs_as_istiod_checks() -> None:
    found = _errors(
        policy(
            "[{}]",
            extra="targetRef: {kind: Service, name: a}\n      targetRefs: [{kind: Service, name: b}]",
        )
    )
    assert found == ["spec.targetRefs: targetRef and targetRefs are mutually exclusive"]
