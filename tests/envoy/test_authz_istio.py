"""AuthorizationPolicy at istiod's meaning, on the wire: real Envoy sidecars with mTLS enforce
what istiod's translation means for the forms the seed refused or got wrong (issue 12):
principals in any shape, URI templates, trust domains and their aliases, dry-run policies as
shadow rules counted under istiod's stat prefixes, and AUDIT on HTTP and TCP ports.

The mesh is the zero-trust one (``zero_trust.py``): ``payment`` serves HTTP on 9080 and a TCP
ledger on 7000, the clients ``order-service``, ``refund-service`` and ``web`` call it through
their own sidecars; every test writes its policies and removes them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest
import yaml
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from google.protobuf import json_format

from tests.envoy.zero_trust import (
    WORKLOADS,
    ZeroTrustMesh,
    peer_authentication,
    start_zero_trust_mesh,
)
from tests.unit.compile.rbac_eval import Request, policy_matches

ON_PAYMENT = "selector: {matchLabels: {app: payment}}\n"


@pytest.fixture(scope="module")
def zt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZeroTrustMesh]:
    mesh = start_zero_trust_mesh(tmp_path_factory.mktemp("authz-istio"))
    try:
        mesh.write("peer-authentication.yaml", peer_authentication("STRICT"))
        yield mesh
    finally:
        mesh.mesh.stop()


@pytest.fixture
def policies(zt: ZeroTrustMesh) -> Iterator[dict[str, str]]:
    """Policies a test writes (file name -> YAML), removed afterwards."""
    written: dict[str, str] = {}

    yield written
    for name in reversed(written):  # the last written first (mesh.yaml before its policy)
        zt.remove(name)


def apply(
    zt: ZeroTrustMesh, written: dict[str, str], name: str, spec: str, dry_run: str = ""
) -> None:
    """Write one AuthorizationPolicy (``spec`` may start with ``ON_PAYMENT``) and wait until
    the sidecars have it."""
    body: dict[str, object] = {}
    if spec.startswith(ON_PAYMENT):
        spec = spec[len(ON_PAYMENT) :]
        body["selector"] = {"matchLabels": {"app": "payment"}}
    body.update(yaml.safe_load(textwrap.dedent(spec)))
    metadata: dict[str, object] = {"name": name, "namespace": "default"}
    if dry_run:
        metadata["annotations"] = {"istio.io/dry-run": dry_run}
    text = yaml.safe_dump(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": metadata,
            "spec": body,
        }
    )
    zt.write(f"{name}.yaml", text)
    written[f"{name}.yaml"] = text


def http_stat(zt: ZeroTrustMesh, name: str) -> int:
    pod = WORKLOADS["payment"][0]
    full = f"http.inbound_{pod}_{zt.app_port}.rbac.{name}"
    # Read the whole rbac family: policy names hold brackets, which the admin filter's
    # regex would take as a character class.
    text = zt.sidecars["payment"].envoy.admin("/stats?filter=rbac")
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == full:
            return int(value)
    return 0


def tcp_stat(zt: ZeroTrustMesh, name: str) -> int:
    return zt.sidecars["payment"].envoy.stat(f"tcp.rbac.{name}")


# ---- principals of any shape, trust domains -------------------------------------------------


def test_a_principal_suffix_matches_the_spiffe_id_in_any_trust_domain(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    # Refused before ("not td/ns/x/sa/y"); istiod matches spiffe://.*<suffix>.
    apply(
        zt,
        policies,
        "suffix",
        ON_PAYMENT + "rules: [{from: [{source: {principals: ['*/sa/order-service']}}]}]",
    )
    assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 200
    assert zt.call("web", "POST", "/api/v1/charge")[0] == 403


def test_trust_domains_and_the_source_trust_domain_key(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    apply(
        zt,
        policies,
        "domains",
        ON_PAYMENT
        + """
        rules:
        - from: [{source: {trustDomains: [cluster.local]}}]
          to: [{operation: {paths: [/api/v1/charge]}}]
        - from: [{source: {trustDomains: [partner.example]}}]
          to: [{operation: {paths: [/api/v1/refund]}}]
        - when: [{key: source.trustDomain, notValues: ["cluster.*"]}]
          to: [{operation: {paths: [/api/v1/audit]}}]
        """,
    )
    assert zt.call("web", "POST", "/api/v1/charge")[0] == 200  # cluster.local peer
    assert zt.call("web", "POST", "/api/v1/refund")[0] == 403  # not partner.example
    assert zt.call("web", "GET", "/api/v1/audit")[0] == 403  # its trust domain is cluster.*


def test_principals_are_matched_under_the_trust_domain_aliases(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    # The workloads' certificates say cluster.local. The mesh moved to td-new and keeps
    # cluster.local as an alias: a policy written for td-new still admits them (istiod's
    # trustdomain bundle), and one from an unrelated trust domain does not.
    apply(
        zt,
        policies,
        "migrated",
        ON_PAYMENT
        + "rules: [{from: [{source: {principals: [td-new/ns/default/sa/order-service]}}]}]",
    )
    assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 403  # no alias yet
    zt.write("mesh.yaml", "trustDomain: td-new\ntrustDomainAliases: [cluster.local]\n")
    policies["mesh.yaml"] = ""
    assert zt.call("order-service", "POST", "/api/v1/charge")[0] == 200
    assert zt.call("web", "POST", "/api/v1/charge")[0] == 403


# ---- paths: URI templates -------------------------------------------------------------------


def test_path_templates_match_one_segment_or_any_segments(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    apply(
        zt,
        policies,
        "templates",
        ON_PAYMENT + "rules: [{to: [{operation: {paths: ['/api/{*}/charge', '/files/{**}']}}]}]",
    )
    assert zt.call("web", "POST", "/api/v1/charge")[0] == 200
    assert zt.call("web", "POST", "/api/v2/charge?x=1")[0] == 200  # the query is not the path
    assert zt.call("web", "POST", "/api/v1/x/charge")[0] == 403  # {*} is one segment
    assert zt.call("web", "GET", "/files/a/b/c.txt")[0] == 200  # {**} any segments
    assert zt.call("web", "GET", "/file/a")[0] == 403


# ---- dry-run: shadow rules only, counted with istiod's prefixes -----------------------------


def test_a_dry_run_allow_is_counted_but_never_enforced(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    apply(
        zt,
        policies,
        "try-allow",
        ON_PAYMENT + "rules: [{to: [{operation: {paths: [/api/v1/charge]}}]}]",
        dry_run="true",
    )
    allowed = http_stat(zt, "istio_dry_run_allow_.shadow_allowed")
    denied = http_stat(zt, "istio_dry_run_allow_.shadow_denied")
    # Enforced, this ALLOW on one path would deny every other: in dry-run it denies none.
    assert zt.call("web", "POST", "/api/v1/refund")[0] == 200
    assert zt.call("web", "POST", "/api/v1/charge")[0] == 200
    assert http_stat(zt, "istio_dry_run_allow_.shadow_denied") == denied + 1
    assert http_stat(zt, "istio_dry_run_allow_.shadow_allowed") == allowed + 1


def test_a_dry_run_deny_is_counted_while_the_enforced_allow_decides(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    apply(
        zt,
        policies,
        "enforced",
        ON_PAYMENT + "rules: [{to: [{operation: {paths: [/api/v1/charge]}}]}]",
        dry_run="false",
    )
    apply(
        zt,
        policies,
        "try-deny",
        ON_PAYMENT + "action: DENY\nrules: [{from: [{source: {principals: ['*/sa/web']}}]}]",
        dry_run="true",
    )
    shadow_denied = http_stat(zt, "istio_dry_run_deny_.shadow_denied")
    assert zt.call("web", "POST", "/api/v1/charge")[0] == 200  # the DENY only counts
    assert http_stat(zt, "istio_dry_run_deny_.shadow_denied") == shadow_denied + 1
    assert zt.call("web", "POST", "/api/v1/refund")[0] == 403  # the enforced ALLOW decides


def test_a_dry_run_allow_on_a_tcp_port_is_counted_but_never_enforced(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    apply(
        zt,
        policies,
        "try-ledger",
        ON_PAYMENT + f"rules: [{{to: [{{operation: {{ports: ['{zt.tcp_port + 1}']}}}}]}}]",
        dry_run="true",
    )
    denied = tcp_stat(zt, "istio_dry_run_allow_.shadow_denied")
    assert zt.ledger("web") == "ledger hello"
    assert tcp_stat(zt, "istio_dry_run_allow_.shadow_denied") == denied + 1


# ---- AUDIT: marks, never decides, HTTP and TCP ----------------------------------------------


def test_audit_marks_matching_http_requests_without_deciding(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    apply(
        zt,
        policies,
        "audit-charges",
        ON_PAYMENT + "action: AUDIT\nrules: [{to: [{operation: {paths: [/api/v1/charge]}}]}]",
    )
    # The AUDIT filter counts per rule (its only visible trace besides the access-log hint).
    audited = "policy.ns[default]-policy[audit-charges]-rule[0].allowed"
    before = http_stat(zt, audited)
    assert zt.call("web", "POST", "/api/v1/charge")[0] == 200
    assert http_stat(zt, audited) == before + 1
    assert zt.call("web", "POST", "/api/v1/refund")[0] == 200
    assert http_stat(zt, audited) == before + 1


def test_audit_on_a_tcp_port_drops_its_http_conditions_and_marks_the_connection(
    zt: ZeroTrustMesh, policies: dict[str, str]
) -> None:
    # The seed installed nothing on TCP for AUDIT. istiod broadens an AUDIT rule on TCP as it
    # does a DENY: the methods condition goes, the principal stays. Envoy's network RBAC has
    # no per-rule counter; the LOG engine's verdict goes to the access-log hint, so the test
    # reads the engine Envoy runs (its config dump) and checks connections pass through it.
    apply(
        zt,
        policies,
        "audit-web",
        ON_PAYMENT
        + """
        action: AUDIT
        rules:
        - from: [{source: {principals: [cluster.local/ns/default/sa/web]}}]
          to: [{operation: {methods: [DELETE]}}]
        """,
    )
    evaluated = tcp_stat(zt, "allowed")
    assert zt.ledger("order-service") == "ledger hello"
    assert zt.ledger("web") == "ledger hello"
    assert tcp_stat(zt, "allowed") == evaluated + 2  # the LOG engine saw both, denied none
    (audit,) = running_network_rbac(zt, "LOG")
    web = Request(principal="spiffe://cluster.local/ns/default/sa/web", method="GET")
    order = Request(principal="spiffe://cluster.local/ns/default/sa/order-service")
    assert list(audit.policies) == ["ns[default]-policy[audit-web]-rule[0]"]
    assert any(policy_matches(p, web) for p in audit.policies.values())
    assert not any(policy_matches(p, order) for p in audit.policies.values())


def running_network_rbac(zt: ZeroTrustMesh, action: str) -> list[rbac_pb2.RBAC]:
    """The network RBAC engines with ``action`` on payment's inbound listener, as Envoy
    runs them (its config dump)."""
    dump = zt.sidecars["payment"].envoy.admin_json("/config_dump?resource=dynamic_listeners")
    found: list[rbac_pb2.RBAC] = []
    for entry in dump["configs"]:
        listener = entry.get("active_state", {}).get("listener", {})
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                if f["name"] != "envoy.filters.network.rbac":
                    continue
                config = {k: v for k, v in f["typed_config"].items() if k != "@type"}
                parsed = json_format.ParseDict(config, network_rbac_pb2.RBAC())
                if (
                    parsed.HasField("rules")
                    and rbac_pb2.RBAC.Action.Name(parsed.rules.action) == action
                ):
                    found.append(parsed.rules)
    return found
