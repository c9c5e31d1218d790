"""istiod's authorization builder golden cases, by meaning.

Istio's repository keeps, for its AuthorizationPolicy -> Envoy RBAC translation, one golden
case per situation (``pilot/pkg/security/authz/builder/testdata/{http,tcp}`` with
``builder_test.go`` naming each case, its mesh trust domains and providers). Each case here
is written again with our own policies (same fields, same actions, same annotations, our own
names and values) and states what istiod's output means as a table of requests: allowed or
denied, audited, what each dry-run (shadow) engine says, or sent to ext_authz. The table is
checked against the RBAC filters this project emits, run by the evaluator of Envoy's RBAC
protos in ``rbac_eval.py``; real Envoy checks the same behaviours in
``tests/envoy/test_authz_istio.py``.

Every case passing (``len(CASES)``, 30) is the count the closing note reports. The CUSTOM cases
compile with the providers of ``MESH_PROVIDERS`` (or the case's own mesh config): a request
"sent to ext_authz" is one the CUSTOM shadow engine matched, so that the ext_authz filter after
it is enabled (compile/extauthz.py); ``tests/envoy/test_ext_authz.py`` checks the same with
real authorizers.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass, field

import pytest
import yaml

from controlplane.api import load, load_mesh_config
from controlplane.api.kube import Service
from controlplane.compile.extauthz import SHADOW_STAT_PREFIX as EXT_AUTHZ_SHADOW
from controlplane.compile.extauthz import provider_names, resolve_providers
from controlplane.compile.filters import HTTP_RBAC_FILTER, NETWORK_RBAC_FILTER
from controlplane.compile.rbac import http_rbac_filters, network_rbac_filters, policies_for
from controlplane.store.registry import mesh_service
from tests.unit.compile.rbac_eval import (
    Outcome,
    Request,
    evaluate,
    http_config_of,
    network_config_of,
)

NAMESPACE = "shop"
LABELS = {"app": "cart", "version": "v1"}

ALLOW, DENY, EXT_AUTHZ = "allow", "deny", "ext_authz"


@dataclass(frozen=True)
class Row:
    """One request and what istiod's output does with it."""

    request: Request
    verdict: str  # ALLOW, DENY or EXT_AUTHZ
    audited: bool = False
    shadow: dict[str, str] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Case:
    istio_case: str  # builder_test.go's name, "http/<name>" or "tcp/<name>"
    policies: str  # our own YAML, one or more documents
    rows: tuple[Row, ...]
    trust_domains: tuple[str, ...] = ("cluster.local",)
    mesh: str = ""  # the mesh config's extensionProviders (MESH_PROVIDERS when empty)


# The providers the CUSTOM cases name (istiod's builder tests define theirs in their mesh
# config): ``checker`` and ``another`` are gRPC, ``http-checker`` HTTP, all served by a
# Service of the registry.
MESH_PROVIDERS = """
extensionProviders:
- name: checker
  envoyExtAuthzGrpc: {service: ext-authz.shop.svc.cluster.local, port: 9000}
- name: another
  envoyExtAuthzGrpc: {service: ext-authz.shop.svc.cluster.local, port: 9000}
- name: http-checker
  envoyExtAuthzHttp: {service: shop/ext-authz.shop.svc.cluster.local, port: 9000, pathPrefix: /check}
"""
MESH_HTTP_CHECKER = MESH_PROVIDERS.replace(
    "name: checker\n  envoyExtAuthzGrpc: {service: ext-authz.shop.svc.cluster.local, port: 9000}",
    "name: checker\n  envoyExtAuthzHttp: {service: ext-authz.shop.svc.cluster.local, port: 9000}",
)
# custom-bad-invalid-config: a provider istiod refuses (port out of range, bad pathPrefix).
MESH_INVALID = """
extensionProviders:
- name: checker
  envoyExtAuthzHttp: {service: shop/ext-authz, port: 999999, pathPrefix: check}
"""


def spiffe(td: str, ns: str, sa: str) -> str:
    return f"spiffe://{td}/ns/{ns}/sa/{sa}"


def peer(principal: str, **kw: object) -> Request:
    return Request(principal=principal, **kw)  # type: ignore[arg-type]


SELECT_CART = "selector: {matchLabels: {app: cart, version: v1}}\n"


def policy(name: str, spec: str, annotations: dict[str, str] | None = None) -> str:
    meta: dict[str, object] = {"name": name, "namespace": NAMESPACE}
    if annotations:
        meta["annotations"] = annotations
    body: dict[str, object] = {}
    if spec.startswith(SELECT_CART):
        spec = spec[len(SELECT_CART) :]
        body["selector"] = {"matchLabels": dict(LABELS)}
    body.update(yaml.safe_load(textwrap.dedent(spec)) or {})
    return yaml.safe_dump(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": meta,
            "spec": body,
        }
    )


DRY_RUN = {"istio.io/dry-run": "true"}
ALICE = spiffe("cluster.local", "shop", "alice")

# ---- HTTP cases -----------------------------------------------------------------------------

HTTP_CASES: list[Case] = [
    Case(
        "http/allow-empty-rule",
        policy("everyone", SELECT_CART + "rules: [{}]"),
        (
            Row(Request(), ALLOW, why="plaintext too"),
            Row(peer(ALICE, method="DELETE", path="/x"), ALLOW),
        ),
    ),
    Case(
        "http/allow-full-rule",
        policy(
            "full",
            SELECT_CART
            + """
            rules:
            - from:
              - source:
                  serviceAccounts: [billing/invoicer, cashier]
                  notServiceAccounts: [billing/invoicer-old, cashier-old]
            - from:
              - source:
                  principals: [cluster.local/ns/shop/sa/alice, "shop-*", "*-robot", "*"]
                  requestPrincipals: [issuer/alice, "issuer-*", "*-sub", "*"]
                  namespaces: [shop, "shop-*", "*-shop", "*"]
                  ipBlocks: [127.0.7.11, 10.1.0.0/16]
                  remoteIpBlocks: [127.0.7.11, 10.1.0.0/16]
                  notPrincipals: [mallory, "mallory-*", "*-mallory", "*"]
                  notRequestPrincipals: [evil, "evil-*", "*-evil", "*"]
                  notNamespaces: [attic, "attic-*", "*-attic", "*"]
                  notIpBlocks: [9.9.9.9, 9.8.0.0/16]
                  notRemoteIpBlocks: [9.9.9.9, 9.8.0.0/16]
              to:
              - operation:
                  methods: [GET, "GE*", "*ET", "*"]
                  hosts: [shop.example, "*.shop.example", "shop.*", "*"]
                  ports: ["9080", "9090"]
                  paths: [/cart, /cart/*, "*/items", "*", "/cart/{*}", "/{**}/items"]
                  notMethods: [TRACE, "TRA*", "*ACE", "*"]
                  notHosts: [attic.example, "*.attic.example", "attic.*", "*"]
                  notPorts: ["8000", "9000"]
                  notPaths: [/attic, /attic/*, "*/secret", "*", "/attic/{*}", "/{**}/secret"]
              when:
              - {key: "request.headers[x-shop]", values: [a, "a-*", "*-a", "*"], notValues: [b, "b-*", "*-b", "*"]}
              - {key: source.ip, values: [127.0.7.11, 10.2.0.0/24], notValues: [9.9.9.9, 9.7.0.0/24]}
              - {key: remote.ip, values: [127.0.7.11, 10.2.0.0/24], notValues: [9.9.9.9, 9.7.0.0/24]}
              - {key: source.namespace, values: [shop, "shop-*", "*-shop", "*"], notValues: [attic, "*"]}
              - {key: source.principal, values: [cluster.local/ns/shop/sa/alice, "*"], notValues: [mallory, "*"]}
              - {key: request.auth.principal, values: [issuer/alice, "*"], notValues: [evil, "*"]}
              - {key: request.auth.audiences, values: [shop, "*"], notValues: [attic, "*"]}
              - {key: request.auth.presenter, values: [web, "*"], notValues: [evil, "*"]}
              - {key: "request.auth.claims[iss]", values: [issuer, "*"], notValues: [evil, "*"]}
              - {key: "request.auth.claims[team][lead]", values: [alice, "*"], notValues: [bob, "*"]}
              - {key: destination.ip, values: [127.0.7.10, 10.3.0.0/24], notValues: [9.9.9.9]}
              - {key: destination.port, values: ["9080", "9090"], notValues: ["9001"]}
              - {key: connection.sni, values: [shop.example, "*"], notValues: [attic.example, "*"]}
              - {key: "experimental.envoy.filters.a.b[c]", values: [x, "x-*", "*-x", "*"], notValues: [y, "*"]}
            """,
        ),
        (
            Row(peer(spiffe("cluster.local", "billing", "invoicer")), ALLOW),
            Row(peer(spiffe("cluster.local", "shop", "cashier")), ALLOW, why="policy's ns"),
            Row(peer(spiffe("other.td", "shop", "cashier")), ALLOW, why="any trust domain"),
            Row(peer("spiffe://td/ns/billing/k/v/sa/invoicer/x"), ALLOW, why="k/v segments"),
            Row(peer(spiffe("cluster.local", "shop", "cashier-old")), DENY),
            Row(peer(spiffe("cluster.local", "other", "cashier")), DENY),
            Row(Request(), DENY, why="plaintext"),
            Row(
                peer(
                    ALICE,
                    path="/cart",
                    host="shop.example",
                    headers={"x-shop": "a"},
                    sni="shop.example",
                    metadata={"envoy.filters.a.b": {"c": "x"}},
                ),
                DENY,
                why="rule 1 excludes '*' in every not-field: it never matches",
            ),
        ),
    ),
    Case(
        "http/allow-host-before-111",
        policy(
            "hosts",
            SELECT_CART
            + """
            rules:
            - to:
              - operation:
                  hosts: [shop.example, "shop.ex*", "*.shop.example", "*"]
                  notHosts: [attic.example, "attic.ex*", "*.attic.example", "*"]
            """,
        ),
        (
            Row(peer(ALICE, host="shop.example"), DENY, why="notHosts '*': any host excluded"),
            Row(peer(ALICE, host="a.shop.example"), DENY),
        ),
    ),
    Case(
        "http/allow-nil-rule",
        policy("nobody", SELECT_CART),
        (Row(peer(ALICE), DENY), Row(Request(), DENY)),
    ),
    Case(
        "http/allow-path",
        policy(
            "paths",
            SELECT_CART
            + """
            rules:
            - to:
              - operation:
                  paths: [/cart, /cart/*, "*/items", "*", "/cart/{*}", "/{**}/items"]
                  notPaths: [/attic, /attic/*, "*/secret", "*", "/attic/{*}", "/{**}/secret"]
            """,
        ),
        (
            Row(peer(ALICE, path="/cart"), DENY, why="notPaths '*': every path excluded"),
            Row(peer(ALICE, path="/a/b/items"), DENY),
        ),
    ),
    Case(
        "http/audit-full-rule",
        policy("audit-all", "action: AUDIT\nrules: [{}]"),
        (
            Row(Request(), ALLOW, audited=True),
            Row(peer(ALICE, method="POST"), ALLOW, audited=True),
        ),
    ),
    Case(
        "http/custom-grpc-provider-no-namespace",
        policy(
            "ext-1",
            SELECT_CART + "action: CUSTOM\nprovider: {name: checker}\n"
            "rules: [{to: [{operation: {paths: [/checked-1]}}]}]",
        )
        + "---\n"
        + policy(
            "ext-2",
            SELECT_CART + "action: CUSTOM\nprovider: {name: checker}\n"
            "rules: [{to: [{operation: {paths: [/checked-2]}}]}]",
        ),
        (
            Row(peer(ALICE, path="/checked-1"), EXT_AUTHZ),
            Row(peer(ALICE, path="/checked-2"), EXT_AUTHZ),
            Row(peer(ALICE, path="/free"), ALLOW),
        ),
    ),
]
# The same two CUSTOM policies, with the gRPC provider given as ns/host and with an HTTP
# provider: istiod's meaning is the same table (only the ext_authz filter's fields differ).
HTTP_CASES += [
    Case("http/custom-grpc-provider", HTTP_CASES[-1].policies, HTTP_CASES[-1].rows),
    Case(
        "http/custom-http-provider",
        HTTP_CASES[-1].policies,
        HTTP_CASES[-1].rows,
        mesh=MESH_HTTP_CHECKER,
    ),
    Case(
        "http/custom-bad-multiple-providers",
        policy(
            "ext-1",
            SELECT_CART + "action: CUSTOM\nprovider: {name: checker}\n"
            "rules: [{to: [{operation: {paths: [/checked-1]}}]}]",
        )
        + "---\n"
        + policy(
            "ext-2",
            SELECT_CART + "action: CUSTOM\nprovider: {name: another}\n"
            "rules: [{to: [{operation: {paths: [/checked-2]}}]}]",
        ),
        (
            # istiod without PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS: deny what they match
            Row(peer(ALICE, path="/checked-1"), DENY),
            Row(peer(ALICE, path="/checked-2"), DENY),
            Row(peer(ALICE, path="/free"), ALLOW),
        ),
    ),
    Case(
        "http/custom-bad-invalid-config",
        HTTP_CASES[-1].policies.replace("name: another", "name: checker"),
        (
            # a provider istiod cannot use: it denies what the CUSTOM rules match
            Row(peer(ALICE, path="/checked-1"), DENY),
            Row(peer(ALICE, path="/checked-2"), DENY),
            Row(peer(ALICE, path="/free"), ALLOW),
        ),
        mesh=MESH_INVALID,
    ),
    Case(
        "http/deny-and-allow",
        policy("no-bob", "action: DENY\nrules: [{from: [{source: {principals: [bob]}}]}]")
        + "---\n"
        + policy("alice", "action: ALLOW\nrules: [{from: [{source: {principals: [alice]}}]}]"),
        (
            Row(peer("spiffe://alice"), ALLOW),
            Row(peer("spiffe://bob"), DENY),
            Row(peer("spiffe://carol"), DENY),
            Row(Request(), DENY),
        ),
    ),
    Case(
        "http/deny-empty-rule",
        policy("deny-all", SELECT_CART + "action: DENY\nrules: [{}]"),
        (Row(peer(ALICE), DENY), Row(Request(), DENY)),
    ),
    Case(
        "http/dry-run-allow-and-deny",
        policy(
            "try-allow",
            SELECT_CART + "action: ALLOW\nrules: [{to: [{operation: {paths: [/open]}}]}]",
            DRY_RUN,
        )
        + "---\n"
        + policy(
            "try-deny",
            SELECT_CART + "action: DENY\nrules: [{to: [{operation: {paths: [/closed]}}]}]",
            DRY_RUN,
        ),
        (
            Row(
                peer(ALICE, path="/open"),
                ALLOW,
                shadow={"istio_dry_run_allow_": "allowed", "istio_dry_run_deny_": "allowed"},
            ),
            Row(
                peer(ALICE, path="/closed"),
                ALLOW,
                shadow={"istio_dry_run_allow_": "denied", "istio_dry_run_deny_": "denied"},
            ),
            Row(
                peer(ALICE, path="/other"),
                ALLOW,
                shadow={"istio_dry_run_allow_": "denied", "istio_dry_run_deny_": "allowed"},
            ),
        ),
    ),
    Case(
        "http/dry-run-allow",
        policy("try", SELECT_CART + "rules: [{to: [{operation: {paths: [/open]}}]}]", DRY_RUN),
        (
            Row(peer(ALICE, path="/open"), ALLOW, shadow={"istio_dry_run_allow_": "allowed"}),
            Row(peer(ALICE, path="/x"), ALLOW, shadow={"istio_dry_run_allow_": "denied"}),
        ),
    ),
    Case(
        "http/dry-run-mix",
        policy(
            "try",
            SELECT_CART + "action: ALLOW\nrules: [{to: [{operation: {paths: [/open]}}]}]",
            DRY_RUN,
        )
        + "---\n"
        + policy(
            "real",
            SELECT_CART + "action: ALLOW\nrules: [{to: [{operation: {paths: [/real]}}]}]",
            {"istio.io/dry-run": "false"},
        ),
        (
            Row(peer(ALICE, path="/real"), ALLOW, shadow={"istio_dry_run_allow_": "denied"}),
            Row(peer(ALICE, path="/open"), DENY, shadow={"istio_dry_run_allow_": "allowed"}),
        ),
    ),
    Case(
        "http/multiple-policies",
        "---\n".join(
            [
                policy("m1", SELECT_CART + "rules: [{to: [{operation: {methods: [PUT, PATCH]}}]}]"),
                policy(
                    "m2",
                    "selector: {matchLabels: {app: cart}}\n"
                    "rules: [{to: [{operation: {paths: [/v1, /v2]}}]}]",
                ),
                policy(
                    "m3",
                    "selector: {matchLabels: {version: v1}}\n"
                    "rules: [{to: [{operation: {hosts: [a.example, b.example]}}]}]",
                ),
                policy("m4", "rules: [{to: [{operation: {ports: ['81', '82']}}]}]"),
                policy("m5", "rules: [{from: [{source: {principals: [p1, p2]}}]}]"),
                policy("m6", "rules: [{from: [{source: {requestPrincipals: [iss/s1]}}]}]"),
                policy("m7", "rules: [{from: [{source: {namespaces: [ns1, ns2]}}]}]"),
                policy("m8", "rules: [{from: [{source: {ipBlocks: [10.9.9.9, 10.8.8.0/24]}}]}]"),
                policy("m9", "rules: [{when: [{key: 'request.headers[x-k]', values: [k1, k2]}]}]"),
            ]
        ),
        (
            Row(peer(ALICE, method="PATCH"), ALLOW),
            Row(peer(ALICE, path="/v2"), ALLOW),
            Row(peer(ALICE, host="B.example"), ALLOW, why="hosts ignore case"),
            Row(peer(ALICE, destination_port=82), ALLOW),
            Row(peer("spiffe://p2"), ALLOW),
            Row(peer(spiffe("cluster.local", "ns1", "x")), ALLOW),
            Row(Request(source_ip="10.8.8.7"), ALLOW),
            Row(Request(headers={"x-k": "k1"}), ALLOW),
            Row(peer(ALICE), DENY, why="GET / on 9080 from shop: none of them"),
            Row(Request(headers={"x-k": "k3"}), DENY),
        ),
    ),
    Case(
        "http/single-policy",
        policy(
            "single",
            SELECT_CART
            + """
            rules:
            - from:
              - source:
                  principals: [p1, p2]
                  requestPrincipals: [iss/s1, iss/s2]
                  namespaces: [ns1, ns2]
                  ipBlocks: [127.0.7.11, 10.0.0.2]
                  remoteIpBlocks: [127.0.7.11]
              - source:
                  principals: [p3]
                  requestPrincipals: [iss/s3]
                  namespaces: [ns3]
                  ipBlocks: [127.0.7.0/24]
                  remoteIpBlocks: [127.0.7.0/24]
              to:
              - operation: {methods: [PUT], hosts: [h1], ports: ["9080"], paths: [/p1]}
              - operation: {methods: [POST], hosts: [h2], ports: ["9090"], paths: [/p2]}
              when:
              - {key: "request.headers[x-k]", values: [v, "v-*", "*-v", "*"]}
              - {key: destination.ip, values: [127.0.7.10, 10.0.0.0/24]}
              - {key: remote.ip, values: [127.0.7.11, 10.80.64.0/18]}
            - from:
              - source:
                  principals: [p4]
                  requestPrincipals: [iss/s4]
                  namespaces: [ns4]
                  ipBlocks: [127.0.7.11]
                  remoteIpBlocks: [127.0.7.11]
              to:
              - operation: {methods: [GET], hosts: [h4], ports: ["9080"], paths: [/p4]}
            """,
        ),
        (
            # every source needs a request principal: without a JWT nothing matches (the
            # rows with a JWT belong to part jwt, which builds RequestAuthentication)
            Row(
                peer("spiffe://p1", method="PUT", host="h1", path="/p1", headers={"x-k": "v"}),
                DENY,
            ),
            Row(peer("spiffe://p4", host="h4", path="/p4"), DENY),
        ),
    ),
    Case(
        "http/trust-domain-one-alias",
        policy(
            "aliases",
            SELECT_CART
            + """
            rules:
            - from:
              - source: {principals: [cluster.local/ns/orders/sa/a]}
              - source:
                  principals: [cluster.local/ns/orders/sa/b, cluster.local/ns/orders/sa/c]
                  namespaces: [orders]
              to: [{operation: {methods: [PUT]}}]
            - from:
              - source: {principals: [cluster.local/ns/orders/sa/d]}
              to: [{operation: {methods: [PATCH]}}]
            """,
        ),
        (
            Row(peer(spiffe("td1", "orders", "a"), method="PUT"), ALLOW, why="new trust domain"),
            Row(peer(spiffe("cluster.local", "orders", "c"), method="PUT"), ALLOW),
            Row(peer(spiffe("td1", "orders", "b"), method="PUT"), ALLOW),
            Row(peer(spiffe("td1", "orders", "d"), method="PATCH"), ALLOW),
            Row(peer(spiffe("td1", "orders", "a"), method="GET"), DENY),
            Row(peer(spiffe("td2", "orders", "a"), method="PUT"), DENY, why="not an alias"),
        ),
        trust_domains=("td1", "cluster.local"),
    ),
    Case(
        "http/trust-domain-multiple-aliases",
        policy(
            "aliases",
            SELECT_CART
            + """
            rules:
            - from:
              - source: {principals: [cluster.local/ns/orders/sa/a]}
              - source:
                  principals: [some-td/ns/orders/sa/b, cluster.local/ns/orders/sa/c]
                  namespaces: [orders]
            """,
        ),
        (
            Row(peer(spiffe("td1", "orders", "a")), ALLOW),
            Row(peer(spiffe("some-td", "orders", "a")), ALLOW),
            Row(peer(spiffe("cluster.local", "orders", "b")), ALLOW, why="some-td is an alias"),
            Row(peer(spiffe("td1", "orders", "b")), ALLOW),
            Row(peer(spiffe("some-td", "orders", "c")), ALLOW),
            Row(peer(spiffe("elsewhere", "orders", "a")), DENY),
        ),
        trust_domains=("td1", "cluster.local", "some-td"),
    ),
    Case(
        "http/trust-domain-wildcard-in-principal",
        policy(
            "wildcards",
            SELECT_CART
            + """
            rules:
            - from:
              - source: {principals: ["*"]}
              - source: {principals: ["*/ns/shop/sa/a", "*bar/ns/shop/sa/b"]}
            """,
        ),
        (
            Row(peer(spiffe("anything", "x", "y")), ALLOW, why="'*': any authenticated peer"),
            Row(Request(), DENY, why="plaintext has no principal"),
        ),
        trust_domains=("td1", "foobar"),
    ),
    Case(
        "http/trust-domain-aliases-in-source-principal",
        policy(
            "mesh-system",
            SELECT_CART
            + """
            rules:
            - from: [{source: {namespaces: [istio-system]}}]
              when:
              - key: source.principal
                values: ["*", "*/ns/shop/sa/all-td", "*-td/ns/shop/sa/prefix-td"]
            """,
        ),
        (
            Row(peer(spiffe("old-td", "istio-system", "gw")), ALLOW),
            Row(peer(spiffe("new-td", "istio-system", "gw")), ALLOW),
            Row(peer(spiffe("new-td", "shop", "all-td")), DENY, why="not in istio-system"),
            Row(Request(), DENY),
        ),
        trust_domains=("new-td", "old-td", "some-trustdomain"),
    ),
    Case(
        "http/trust-domains-field",
        policy(
            "domains",
            SELECT_CART
            + """
            rules:
            - from:
              - source: {trustDomains: [cluster.local, partner.local]}
              - source: {notTrustDomains: ["bad*", untrusted]}
            """,
        ),
        (
            Row(peer(spiffe("cluster.local", "a", "b")), ALLOW),
            Row(peer(spiffe("partner.local", "a", "b")), ALLOW),
            Row(peer(spiffe("other", "a", "b")), ALLOW, why="second source: not bad*"),
            Row(peer(spiffe("bad-td", "a", "b")), DENY),
            Row(peer(spiffe("untrusted", "a", "b")), DENY),
            Row(Request(), ALLOW, why="plaintext: no trust domain, so not a bad one"),
        ),
    ),
]

# ---- TCP cases ------------------------------------------------------------------------------

TCP_CASES: list[Case] = [
    Case(
        "tcp/allow-both-http-tcp",
        policy(
            "mixed",
            """
            action: ALLOW
            rules:
            - from: [{source: {requestPrincipals: [iss/s1]}}]
              to: [{operation: {methods: [GET]}}]
            - from: [{source: {namespaces: [ns-1]}}]
              to: [{operation: {ports: ["8080"], methods: [GET]}}]
            - from: [{source: {namespaces: [ns-2], requestPrincipals: [iss/s2]}}]
              to: [{operation: {ports: ["9090"]}}]
            - from: [{source: {namespaces: [ns-1]}}]
              to: [{operation: {ports: ["80"]}}]
            """,
        ),
        (
            Row(peer(spiffe("cluster.local", "ns-1", "a"), destination_port=80), ALLOW),
            Row(peer(spiffe("cluster.local", "ns-1", "a"), destination_port=8080), DENY),
            Row(peer(spiffe("cluster.local", "ns-2", "a"), destination_port=9090), DENY),
            Row(peer(spiffe("cluster.local", "ns-3", "a"), destination_port=80), DENY),
        ),
    ),
    Case(
        "tcp/allow-only-http",
        policy(
            "http-only",
            """
            action: ALLOW
            rules:
            - from: [{source: {requestPrincipals: [iss/s1]}}]
              to: [{operation: {methods: [GET]}}]
            - from: [{source: {namespaces: [ns-1]}}]
              to: [{operation: {hosts: [shop.example]}}]
            """,
        ),
        (
            Row(peer(spiffe("cluster.local", "ns-1", "a")), DENY),
            Row(Request(), DENY),
        ),
    ),
    Case(
        "tcp/audit-both-http-tcp",
        policy(
            "audit",
            """
            action: AUDIT
            rules:
            - from:
              - source:
                  principals: [cluster.local/ns/ledger/sa/auditor]
                  requestPrincipals: [iss/s1]
                  namespaces: [ledger]
                  ipBlocks: [127.0.7.11]
                  remoteIpBlocks: [127.0.7.0/24]
                  notPrincipals: [cluster.local/ns/ledger/sa/intruder]
                  notRequestPrincipals: [iss/evil]
                  notNamespaces: [attic]
                  notIpBlocks: [9.0.0.1]
                  notRemoteIpBlocks: [9.0.0.2]
              to:
              - operation:
                  methods: [GET]
                  hosts: [shop.example]
                  ports: ["9080"]
                  paths: [/exact]
                  notMethods: [TRACE]
                  notHosts: [attic.example]
                  notPorts: ["8000"]
                  notPaths: [/attic]
              when:
              - {key: "request.headers[x-k]", values: [v], notValues: [w]}
              - {key: source.ip, values: [127.0.7.11], notValues: [9.0.0.3]}
              - {key: remote.ip, values: [127.0.7.11], notValues: [9.0.0.4]}
              - {key: source.namespace, values: [ledger], notValues: [attic]}
              - {key: source.principal, values: [cluster.local/ns/ledger/sa/auditor], notValues: [x]}
              - {key: request.auth.principal, values: [iss/s1], notValues: [iss/evil]}
              - {key: request.auth.audiences, values: [aud], notValues: [other]}
              - {key: request.auth.presenter, values: [web], notValues: [evil]}
              - {key: "request.auth.claims[iss]", values: [iss], notValues: [evil]}
              - {key: destination.ip, values: [127.0.7.10], notValues: [9.0.0.5]}
              - {key: destination.port, values: ["9080"], notValues: ["9001"]}
              - {key: connection.sni, values: [shop.example], notValues: [attic.example]}
              - {key: "experimental.envoy.filters.a.b[c]", values: [exact], notValues: [other]}
            """,
        ),
        (
            Row(
                peer(
                    spiffe("cluster.local", "ledger", "auditor"),
                    sni="shop.example",
                    metadata={"envoy.filters.a.b": {"c": "exact"}},
                ),
                ALLOW,
                audited=True,
                why="its HTTP conditions dropped on TCP: audited without a JWT, any method",
            ),
            Row(
                peer(
                    spiffe("cluster.local", "ledger", "auditor"),
                    sni="shop.example",
                    metadata={"envoy.filters.a.b": {"c": "other"}},
                ),
                ALLOW,
                why="the Envoy filter metadata differs",
            ),
            Row(
                peer(spiffe("cluster.local", "ledger", "auditor"), sni="shop.example"),
                ALLOW,
                why="no metadata",
            ),
            Row(
                peer(
                    spiffe("cluster.local", "shop", "auditor"),
                    sni="shop.example",
                    metadata={"envoy.filters.a.b": {"c": "exact"}},
                ),
                ALLOW,
                why="another namespace",
            ),
        ),
    ),
    Case(
        "tcp/custom-both-http-tcp",
        policy(
            "ext",
            """
            action: CUSTOM
            provider: {name: checker}
            rules:
            - to: [{operation: {methods: [GET]}}]
            - from: [{source: {ipBlocks: [10.7.7.7]}}]
              to: [{operation: {ports: ["80"]}}]
            """,
        ),
        (Row(peer(ALICE), EXT_AUTHZ, why="rule 0 loses its HTTP field on TCP"),),
    ),
    Case(
        "tcp/custom-only-http",
        policy(
            "ext-1",
            SELECT_CART + "action: CUSTOM\nprovider: {name: http-checker}\n"
            "rules: [{to: [{operation: {paths: [/checked-1]}}]}]",
        ),
        (
            # an HTTP provider installs nothing on a TCP port in istiod
            Row(peer(ALICE), ALLOW),
        ),
    ),
    Case(
        "tcp/deny-both-http-tcp",
        policy(
            "deny",
            """
            action: DENY
            rules:
            - from: [{source: {requestPrincipals: [iss/s1]}}]
              to: [{operation: {methods: [GET]}}]
            - from: [{source: {namespaces: [ns-1]}}]
              to: [{operation: {ports: ["80"]}}]
            - when: [{key: destination.port, values: ["80"]}]
            """,
        ),
        (
            Row(peer(ALICE), DENY, why="rule 0 loses every HTTP condition: matches all"),
            Row(Request(destination_port=81), DENY),
        ),
    ),
    Case(
        "tcp/dry-run-mix",
        policy(
            "try",
            SELECT_CART + "action: ALLOW\nrules: [{to: [{operation: {ports: ['80']}}]}]",
            DRY_RUN,
        )
        + "---\n"
        + policy(
            "real",
            SELECT_CART + "action: ALLOW\nrules: [{to: [{operation: {ports: ['9000']}}]}]",
            {"istio.io/dry-run": "false"},
        ),
        (
            Row(Request(destination_port=9000), ALLOW, shadow={"istio_dry_run_allow_": "denied"}),
            Row(Request(destination_port=80), DENY, shadow={"istio_dry_run_allow_": "allowed"}),
        ),
    ),
]

CASES = HTTP_CASES + TCP_CASES
# The cases whose meaning differs today, and why (each stays a test: its other rows pass).


def outcome_of(case: Case, request: Request) -> Outcome:
    resources = [load(doc)[0] for doc in yaml.safe_load_all(case.policies) if doc]
    selected = policies_for(
        resources,  # type: ignore[arg-type]
        NAMESPACE,
        LABELS,
        trust_domains=case.trust_domains,
    )
    names = provider_names(selected.of("CUSTOM"))
    if names:
        mesh, issues = load_mesh_config(yaml.safe_load(case.mesh or MESH_PROVIDERS))
        service, _ = load(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "ext-authz", "namespace": NAMESPACE},
                "spec": {"ports": [{"name": "grpc", "port": 9000}]},
            }
        )
        assert isinstance(service, Service)
        found = mesh_service(service)
        selected = dataclasses.replace(
            selected,
            providers=resolve_providers(mesh.spec, {found.hostname: found}, names),
        )
    tcp = case.istio_case.startswith("tcp/")
    filters = network_rbac_filters(selected) if tcp else http_rbac_filters(selected)
    rbac_names = (NETWORK_RBAC_FILTER, HTTP_RBAC_FILTER)
    unpack = network_config_of if tcp else http_config_of
    configs = [unpack(f) for f in filters if f.name in rbac_names]
    got = evaluate(configs, request)  # type: ignore[arg-type]
    # CUSTOM: the ext_authz filter (right after its shadow RBAC filter, before every other
    # RBAC filter) is asked when that shadow engine matched (istiod's filter_enabled_metadata).
    asked = any(f.name not in rbac_names for f in filters)
    if asked and got.shadow.pop(EXT_AUTHZ_SHADOW, None) == "denied":
        return Outcome(allowed=True, audited=False, shadow={}, ext_authz=True)
    return got


def _meets(row: Row, got: Outcome) -> bool:
    verdict = EXT_AUTHZ if got.ext_authz else ALLOW if got.allowed else DENY
    return verdict == row.verdict and got.audited == row.audited and got.shadow == row.shadow


def test_every_builder_golden_case_of_istio_is_here() -> None:
    # builder_test.go: 22 HTTP cases (TestGenerator_GenerateHTTP) and 7 TCP cases, plus
    # testdata/http/allow-host-before-111, which has its in/out files but no entry there.
    assert len(HTTP_CASES) == 23 and len(TCP_CASES) == 7
    assert len({c.istio_case for c in CASES}) == 30


@pytest.mark.parametrize("case", CASES, ids=[c.istio_case for c in CASES])
def test_the_rbac_we_emit_means_what_istiods_does(case: Case) -> None:
    # Every row of every case is asserted: allowed, denied, audited, shadowed or sent to
    # ext_authz as istiod's output does it.
    wrong = [
        f"{row.request} ({row.why}): expected {row}, got {got}"
        for row in case.rows
        if not _meets(row, got := outcome_of(case, row.request))
    ]
    assert not wrong, "\n".join(wrong)
