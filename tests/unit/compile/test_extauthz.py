"""CUSTOM -> ext_authz, checked against the meaning of istiod's golden cases for CUSTOM
(``pilot/pkg/security/authz/builder/testdata/{http,tcp}/custom-*``, with the mesh configs of
``builder_test.go``): the filters, their order, which requests the shadow RBAC sends to the
authorizer (policy names with istiod's ``istio-ext-authz-<provider>-`` prefix, the
``istio_ext_authz_`` shadow stat prefix), the ext_authz settings, and the fail-closed denials.
Expected values are written here from reading those cases; the RBAC rules are compared by
what they match (evaluated), not by their nesting."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as http_ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as tcp_ext_authz_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from google.protobuf import json_format

from controlplane.api import load, load_mesh_config
from controlplane.api.kube import Service
from controlplane.compile.extauthz import provider_names, resolve_providers
from controlplane.compile.rbac import (
    WorkloadPolicies,
    http_rbac_filters,
    network_rbac_filters,
    policies_for,
)
from controlplane.store.registry import mesh_service
from tests.unit.compile.rbac_eval import Request, policy_matches

LABELS = {"app": "httpbin", "version": "v1"}
EXT_AUTHZ_SERVICE = "my-custom-ext-authz.foo.svc.cluster.local"
CLUSTER = f"outbound|9000||{EXT_AUTHZ_SERVICE}"

MESH_GRPC_NO_NAMESPACE = f"""
extensionProviders:
- name: default
  envoyExtAuthzGrpc:
    service: {EXT_AUTHZ_SERVICE}
    port: 9000
    failOpen: true
    statusOnError: "403"
"""
MESH_GRPC = f"""
extensionProviders:
- name: default
  envoyExtAuthzGrpc:
    service: foo/{EXT_AUTHZ_SERVICE}
    port: 9000
    timeout: 0.002s
    failOpen: true
    statusOnError: "403"
    includeRequestBodyInCheck: {{maxRequestBytes: 4096, allowPartialMessage: true}}
"""
MESH_HTTP = f"""
extensionProviders:
- name: default
  envoyExtAuthzHttp:
    service: foo/{EXT_AUTHZ_SERVICE}
    port: 9000
    timeout: 10s
    failOpen: true
    statusOnError: "403"
    pathPrefix: /check
    includeRequestHeadersInCheck: [x-custom-id, x-prefix-*, "*-suffix"]
    includeHeadersInCheck: [should-not-include-when-IncludeRequestHeadersInCheck-is-set]
    includeAdditionalHeadersInCheck: {{x-header-1: value-1, x-header-2: value-2}}
    includeRequestBodyInCheck: {{maxRequestBytes: 2048, allowPartialMessage: true, packAsBytes: true}}
    headersToUpstreamOnAllow: [Authorization, x-prefix-*, "*-suffix"]
    headersToDownstreamOnDeny: [Set-cookie, x-prefix-*, "*-suffix"]
    headersToDownstreamOnAllow: [Set-cookie, x-prefix-*, "*-suffix"]
"""
MESH_INVALID = """
extensionProviders:
- name: default
  envoyExtAuthzHttp:
    service: foo/my-custom-ext-authz
    port: 999999
    pathPrefix: check
    statusOnError: "999"
"""


def custom(name: str, provider: str, rules: str, selector: bool = True) -> Any:
    spec: dict[str, Any] = {
        "action": "CUSTOM",
        "provider": {"name": provider},
        "rules": yaml.safe_load(textwrap.dedent(rules)),
    }
    if selector:
        spec["selector"] = {"matchLabels": LABELS}
    resource, _ = load(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "foo"},
            "spec": spec,
        }
    )
    return resource


def simple_http_in() -> list[Any]:
    """custom-simple-http-in.yaml: two CUSTOM policies, paths /httpbin1 and /httpbin2."""
    return [
        custom("httpbin-1", "default", "[{to: [{operation: {paths: [/httpbin1]}}]}]"),
        custom("httpbin-2", "default", "[{to: [{operation: {paths: [/httpbin2]}}]}]"),
    ]


def workload(policies: list[Any], mesh_yaml: str) -> WorkloadPolicies:
    mesh, _ = load_mesh_config(yaml.safe_load(mesh_yaml))
    service, _ = load(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "my-custom-ext-authz", "namespace": "foo"},
            "spec": {"ports": [{"name": "grpc", "port": 9000}]},
        }
    )
    assert isinstance(service, Service)
    registry = {EXT_AUTHZ_SERVICE: mesh_service(service)}
    found = policies_for(policies, "foo", LABELS)
    names = provider_names(found.of("CUSTOM"))
    return WorkloadPolicies(
        found.by_action, found.rejected, resolve_providers(mesh.spec, registry, names)
    )


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def http_pair(policies: WorkloadPolicies) -> tuple[http_rbac_pb2.RBAC, dict[str, Any]]:
    filters = http_rbac_filters(policies)
    assert [f.name for f in filters] == ["envoy.filters.http.rbac", "envoy.filters.http.ext_authz"]
    rbac, ext_authz = http_rbac_pb2.RBAC(), http_ext_authz_pb2.ExtAuthz()
    filters[0].typed_config.Unpack(rbac)
    filters[1].typed_config.Unpack(ext_authz)
    return rbac, as_dict(ext_authz)


ENABLED_DEFAULT = {
    "filter": "envoy.filters.http.rbac",
    "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
    "value": {"stringMatch": {"prefix": "istio-ext-authz-default"}},
}


def check_simple_shadow_rules(rbac: http_rbac_pb2.RBAC) -> None:
    """The shadow rules of custom-simple-http-in: enforce nothing, mark /httpbin1 and
    /httpbin2 with the policy's name."""
    assert not rbac.HasField("rules")
    assert rbac.shadow_rules_stat_prefix == "istio_ext_authz_"
    assert rbac.shadow_rules.action == rbac_pb2.RBAC.DENY
    one = "istio-ext-authz-default-ns[foo]-policy[httpbin-1]-rule[0]"
    two = "istio-ext-authz-default-ns[foo]-policy[httpbin-2]-rule[0]"
    assert set(rbac.shadow_rules.policies) == {one, two}
    assert policy_matches(rbac.shadow_rules.policies[one], Request(path="/httpbin1"))
    assert not policy_matches(rbac.shadow_rules.policies[one], Request(path="/httpbin2"))
    assert policy_matches(rbac.shadow_rules.policies[two], Request(path="/httpbin2"))
    assert not policy_matches(rbac.shadow_rules.policies[two], Request(path="/other"))


def test_golden_custom_grpc_provider_no_namespace() -> None:
    rbac, ext_authz = http_pair(workload(simple_http_in(), MESH_GRPC_NO_NAMESPACE))
    check_simple_shadow_rules(rbac)
    assert ext_authz == {
        "failureModeAllow": True,
        "filterEnabledMetadata": ENABLED_DEFAULT,
        "grpcService": {
            "envoyGrpc": {"authority": EXT_AUTHZ_SERVICE, "clusterName": CLUSTER},
            "timeout": "600s",
        },
        "statusOnError": {"code": "Forbidden"},
        "transportApiVersion": "V3",
    }


def test_golden_custom_grpc_provider() -> None:
    rbac, ext_authz = http_pair(workload(simple_http_in(), MESH_GRPC))
    check_simple_shadow_rules(rbac)
    assert ext_authz == {
        "failureModeAllow": True,
        "filterEnabledMetadata": ENABLED_DEFAULT,
        "grpcService": {
            "envoyGrpc": {"authority": EXT_AUTHZ_SERVICE, "clusterName": CLUSTER},
            "timeout": "0.002s",
        },
        "statusOnError": {"code": "Forbidden"},
        "transportApiVersion": "V3",
        "withRequestBody": {"allowPartialMessage": True, "maxRequestBytes": 4096},
    }


def test_golden_custom_http_provider() -> None:
    rbac, ext_authz = http_pair(workload(simple_http_in(), MESH_HTTP))
    check_simple_shadow_rules(rbac)

    def patterns(first: str) -> dict[str, Any]:
        return {
            "patterns": [
                {"exact": first, "ignoreCase": True},
                {"ignoreCase": True, "prefix": "x-prefix-"},
                {"ignoreCase": True, "suffix": "-suffix"},
            ]
        }

    assert ext_authz == {
        "allowedHeaders": patterns("x-custom-id"),
        "failureModeAllow": True,
        "filterEnabledMetadata": ENABLED_DEFAULT,
        "httpService": {
            "authorizationRequest": {
                "headersToAdd": [
                    {"key": "x-header-1", "value": "value-1"},
                    {"key": "x-header-2", "value": "value-2"},
                ]
            },
            "authorizationResponse": {
                "allowedClientHeaders": patterns("Set-cookie"),
                "allowedClientHeadersOnSuccess": patterns("Set-cookie"),
                "allowedUpstreamHeaders": patterns("Authorization"),
            },
            "pathPrefix": "/check",
            "serverUri": {
                "cluster": CLUSTER,
                "timeout": "10s",
                "uri": f"http://{EXT_AUTHZ_SERVICE}",
            },
        },
        "statusOnError": {"code": "Forbidden"},
        "transportApiVersion": "V3",
        "withRequestBody": {
            "allowPartialMessage": True,
            "maxRequestBytes": 2048,
            "packAsBytes": True,
        },
    }


def deny_filters(policies: WorkloadPolicies) -> list[rbac_pb2.RBAC]:
    out = []
    for found in http_rbac_filters(policies):
        assert found.name == "envoy.filters.http.rbac"
        config = http_rbac_pb2.RBAC()
        found.typed_config.Unpack(config)
        assert not config.HasField("shadow_rules")
        assert config.rules.action == rbac_pb2.RBAC.DENY
        out.append(config.rules)
    return out


def test_golden_custom_bad_multiple_providers_denies_what_each_policy_matches() -> None:
    policies = [
        custom("httpbin-1", "default", "[{to: [{operation: {paths: [/httpbin1]}}]}]"),
        custom("httpbin-2", "another", "[{to: [{operation: {paths: [/httpbin2]}}]}]"),
    ]
    another, default = deny_filters(workload(policies, MESH_HTTP))
    bad = "-deny-due-to-bad-CUSTOM-action"
    assert list(another.policies) == [
        f"istio-ext-authz-another-ns[foo]-policy[httpbin-2]-rule[0]{bad}"
    ]
    assert list(default.policies) == [
        f"istio-ext-authz-default-ns[foo]-policy[httpbin-1]-rule[0]{bad}"
    ]
    assert policy_matches(next(iter(another.policies.values())), Request(path="/httpbin2"))
    assert policy_matches(next(iter(default.policies.values())), Request(path="/httpbin1"))
    assert not policy_matches(next(iter(default.policies.values())), Request(path="/other"))


def test_golden_custom_bad_invalid_config_denies_what_the_policies_match() -> None:
    [denied] = deny_filters(workload(simple_http_in(), MESH_INVALID))
    bad = "-deny-due-to-bad-CUSTOM-action"
    assert set(denied.policies) == {
        f"istio-ext-authz-default-ns[foo]-policy[httpbin-1]-rule[0]{bad}",
        f"istio-ext-authz-default-ns[foo]-policy[httpbin-2]-rule[0]{bad}",
    }


BOTH_HTTP_TCP_RULES = """
- to: [{operation: {methods: [GET]}}]
- from: [{source: {ipBlocks: [1.2.3.4]}}]
  to: [{operation: {methods: [GET]}}]
- from: [{source: {ipBlocks: [1.2.3.4]}}]
  to: [{operation: {ports: ["80"]}}]
- when: [{key: "request.headers[:method]", values: [GET]}]
- when: [{key: destination.port, values: ["80"]}]
"""


def test_golden_tcp_custom_both_http_tcp_with_a_grpc_provider() -> None:
    """TCP: HTTP-only conditions are dropped (broader, as for DENY), the pair is network
    filters, and the network ext_authz is enabled by the network RBAC's metadata."""
    policy = custom("httpbin-deny", "default", BOTH_HTTP_TCP_RULES, selector=False)
    filters = network_rbac_filters(workload([policy], MESH_GRPC))
    assert [f.name for f in filters] == [
        "envoy.filters.network.rbac",
        "envoy.filters.network.ext_authz",
    ]
    rbac, ext_authz = network_rbac_pb2.RBAC(), tcp_ext_authz_pb2.ExtAuthz()
    filters[0].typed_config.Unpack(rbac)
    filters[1].typed_config.Unpack(ext_authz)
    assert rbac.stat_prefix == "tcp." and rbac.shadow_rules_stat_prefix == "istio_ext_authz_"
    assert not rbac.HasField("rules")
    rules = rbac.shadow_rules.policies
    name = "istio-ext-authz-default-ns[foo]-policy[httpbin-deny]-rule[{}]"
    assert set(rules) == {name.format(i) for i in range(5)}
    anyone = Request(source_ip="9.9.9.9", remote_ip="9.9.9.9", destination_port=81)
    from_block = Request(source_ip="1.2.3.4", remote_ip="1.2.3.4", destination_port=81)
    to_80 = Request(source_ip="9.9.9.9", remote_ip="9.9.9.9", destination_port=80)
    expected = {  # rule -> (anyone, from 1.2.3.4, to port 80)
        0: (True, True, True),
        1: (False, True, False),
        2: (False, False, False),
        3: (True, True, True),
        4: (False, False, True),
    }
    for i, want in expected.items():
        got = tuple(policy_matches(rules[name.format(i)], r) for r in (anyone, from_block, to_80))
        assert got == want, i
    assert policy_matches(
        rules[name.format(2)],
        Request(source_ip="1.2.3.4", remote_ip="1.2.3.4", destination_port=80),
    )
    assert as_dict(ext_authz) == {
        "failureModeAllow": True,
        "filterEnabledMetadata": {**ENABLED_DEFAULT, "filter": "envoy.filters.network.rbac"},
        "grpcService": {
            "envoyGrpc": {"authority": EXT_AUTHZ_SERVICE, "clusterName": CLUSTER},
            "timeout": "0.002s",
        },
        "statPrefix": "tcp.",
        "transportApiVersion": "V3",
    }


def test_golden_tcp_custom_only_http_provider_adds_nothing_to_tcp() -> None:
    assert network_rbac_filters(workload(simple_http_in(), MESH_HTTP)) == []


# ---- beyond the golden cases ----------------------------------------------------------------


def test_custom_comes_first_then_audit_deny_allow() -> None:
    def policy(name: str, action: str, rules: str) -> Any:
        resource, _ = load(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": name, "namespace": "foo"},
                "spec": {"action": action, "rules": yaml.safe_load(rules)},
            }
        )
        return resource

    policies = [
        policy("allow", "ALLOW", "[{}]"),
        policy("deny", "DENY", "[{to: [{operation: {paths: [/x]}}]}]"),
        policy("audit", "AUDIT", "[{}]"),
        *simple_http_in(),
    ]
    filters = http_rbac_filters(workload(policies, MESH_GRPC))
    assert [f.name.rsplit(".", 1)[-1] for f in filters] == [
        "rbac",
        "ext_authz",
        "rbac",
        "rbac",
        "rbac",
    ]
    actions = []
    for found in (filters[2], filters[3], filters[4]):
        config = http_rbac_pb2.RBAC()
        found.typed_config.Unpack(config)
        actions.append(config.rules.action)
    assert actions == [rbac_pb2.RBAC.LOG, rbac_pb2.RBAC.DENY, rbac_pb2.RBAC.ALLOW]


def test_an_undefined_provider_denies_what_the_policy_matches() -> None:
    [denied] = deny_filters(workload(simple_http_in(), "extensionProviders: []"))
    assert all(name.endswith("-deny-due-to-bad-CUSTOM-action") for name in denied.policies)


def test_a_provider_whose_service_is_not_in_the_registry_fails_closed() -> None:
    mesh = MESH_GRPC.replace(f"foo/{EXT_AUTHZ_SERVICE}", "foo/missing.foo.svc.cluster.local")
    [denied] = deny_filters(workload(simple_http_in(), mesh))
    assert len(denied.policies) == 2


def test_a_dry_run_custom_policy_sends_nothing_to_the_authorizer() -> None:
    policy = custom("httpbin-1", "default", "[{to: [{operation: {paths: [/httpbin1]}}]}]")
    meta = policy.metadata.model_copy(update={"annotations": {"istio.io/dry-run": "true"}})
    dry = policy.model_copy(update={"metadata": meta})
    assert http_rbac_filters(workload([dry], MESH_GRPC)) == []


def test_an_incremental_compile_after_a_mesh_config_change_rebuilds_the_ext_authz_filter() -> None:
    """The memo keeps builds whose tokens a change did not touch: the authorization build
    read the mesh config, so a change of the mesh config alone must rebuild it."""
    from controlplane.compile import SnapshotCompiler
    from controlplane.compile.proxy import Proxy
    from controlplane.compile.resources import LISTENER
    from controlplane.store import Store, Submission

    def submit(doc: dict[str, Any]) -> Submission:
        resource, found = load(doc)
        return Submission(resource, tuple(found))

    store = Store()
    policy = simple_http_in()[0]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "my-custom-ext-authz", "namespace": "foo"},
        "spec": {"ports": [{"name": "grpc", "port": 9000}]},
    }
    workload = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "httpbin", "namespace": "foo"},
        "spec": {"selector": {"app": "httpbin"}, "ports": [{"name": "http", "port": 8000}]},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "httpbin-1", "namespace": "foo", "labels": LABELS},
        "status": {"podIP": "10.0.0.5"},
    }
    mesh, _ = load_mesh_config(yaml.safe_load(MESH_GRPC))
    store.apply(
        upserts=[
            submit(service),
            submit(workload),
            submit(pod),
            Submission(policy),
            Submission(mesh),
        ]
    )
    proxy = Proxy(
        node_id="sidecar~10.0.0.5~httpbin-1.foo~foo.svc.cluster.local",
        namespace="foo",
        labels=LABELS,
        ips=("10.0.0.5",),
        mode="transparent",
    )
    first = SnapshotCompiler(store.snapshot)

    def ext_authz_timeouts(compiler: SnapshotCompiler) -> list[str]:
        listeners = compiler.compile(proxy).of(LISTENER)
        text = json_format.MessageToJson(listeners["virtualInbound"].message)
        return [line.strip() for line in text.splitlines() if '"timeout"' in line]

    assert '"timeout": "0.002s"' in ext_authz_timeouts(first)
    changed, _ = load_mesh_config(yaml.safe_load(MESH_GRPC.replace("0.002s", "3s")))
    change = store.apply(upserts=[Submission(changed)])
    second, touched = SnapshotCompiler.following(first, store.snapshot, change.changed)
    assert ("kind", "MeshConfig") in touched
    assert '"timeout": "3s"' in ext_authz_timeouts(second)
