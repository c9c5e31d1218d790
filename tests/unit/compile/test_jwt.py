"""RequestAuthentication -> jwt_authn, and request principals / request.auth.* -> RBAC
metadata matchers, read for their meaning (which workloads, which providers, which tokens
match). The behaviour of record is real Envoy's: tests/envoy/test_jwt.py."""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import yaml
from envoy.config.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import string_pb2, value_pb2

from controlplane.api import load
from controlplane.api.base import ObjectMeta
from controlplane.api.mesh import MESH_CONFIG_KEY, MeshConfig, MeshConfigSpec
from controlplane.api.request_authn import JwksKeySetSpec, jwks_key_set
from controlplane.compile import SnapshotCompiler
from controlplane.compile.jwt import PUBLIC_ONLY_JWKS
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.compile.rbac_matchers import (
    JWT_FILTER,
    authn_metadata_principal,
    request_principal_matcher,
)
from controlplane.store import Snapshot, Store, Submission
from tests.support.jwt import rsa_jwk
from tests.unit.compile.helpers import as_dict, snapshot_of

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  selector: {app: api}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: default, labels: {app: api}}
status: {podIP: 127.0.5.30}
"""
KEYS = json.dumps({"keys": [rsa_jwk("a")]})


def ra(name: str, spec: str, namespace: str = "default") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{spec}
"""


def api_proxy() -> Proxy:
    metadata = {
        "NAMESPACE": "default",
        "LABELS": {"app": "api"},
        "LOCAL_OUTBOUND_PORT": "15001",
        "LOCAL_APP_ADDRESS": "127.0.5.130",
    }
    return proxy_from_node("sidecar~127.0.5.30~api-1.default~default.svc.cluster.local", metadata)


def http_filters(snapshot: Snapshot) -> list[dict[str, Any]]:
    out = SnapshotCompiler(snapshot).compile(api_proxy())
    listeners = {
        name: as_dict(r.message) for t, rs in out.by_type.items() for name, r in rs.items()
    }
    [chain] = listeners["127.0.5.30_8080"]["filterChains"]
    filters: list[dict[str, Any]] = chain["filters"][0]["typedConfig"]["httpFilters"]
    return filters


def jwt_config(snapshot: Snapshot) -> dict[str, Any] | None:
    for f in http_filters(snapshot):
        if f["name"] == "envoy.filters.http.jwt_authn":
            found: dict[str, Any] = f["typedConfig"]
            return found
    return None


def with_key_sets(snapshot_docs: list[str], *specs: JwksKeySetSpec) -> Snapshot:
    store = Store()
    subs = []
    for text in snapshot_docs:
        for doc in yaml.safe_load_all(textwrap.dedent(text)):
            if doc:
                subs.append(Submission(load(doc)[0]))
    subs += [Submission(jwks_key_set(s)) for s in specs]
    store.apply(upserts=subs)
    return store.snapshot


# ---- the filter --------------------------------------------------------------------------------


def test_no_request_authentication_no_jwt_filter() -> None:
    names = [f["name"] for f in http_filters(snapshot_of(SERVICE))]
    assert names == ["envoy.filters.http.router"]


def test_jwt_filter_goes_before_rbac_and_the_router() -> None:
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: default}
spec:
  rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]
"""
    rule = f"  jwtRules: [{{issuer: a.test, jwks: '{KEYS}'}}]"
    names = [f["name"] for f in http_filters(snapshot_of(SERVICE, ra("r", rule), policy))]
    assert names == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]


def test_one_rule_requires_its_provider_or_no_token_at_all() -> None:
    rule = f"""  jwtRules:
  - issuer: a.test
    audiences: [api, web]
    jwks: '{KEYS}'
    fromHeaders: [{{name: x-token, prefix: "Token "}}]
    fromParams: [tok]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]
    spaceDelimitedClaims: [roles]"""
    config = jwt_config(snapshot_of(SERVICE, ra("r", rule)))
    assert config is not None
    provider = config["providers"]["origins-0"]
    assert provider["issuer"] == "a.test"
    assert provider["audiences"] == ["api", "web"]
    assert provider["localJwks"] == {"inlineString": KEYS}
    assert provider["fromHeaders"] == [{"name": "x-token", "valuePrefix": "Token "}]
    assert provider["fromParams"] == ["tok"] and provider["fromCookies"] == ["session"]
    assert provider["forward"] is True
    assert provider["forwardPayloadHeader"] == "x-payload"
    assert provider["claimToHeaders"] == [{"headerName": "x-sub", "claimName": "sub"}]
    assert provider["payloadInMetadata"] == "payload"
    assert provider["normalizePayloadInMetadata"]["spaceDelimitedClaims"] == [
        "permission",
        "roles",
        "scope",
    ]
    assert config["bypassCorsPreflight"] is True
    [requirement] = config["rules"]
    assert requirement["match"] == {"prefix": "/"}
    assert requirement["requires"] == {
        "requiresAny": {"requirements": [{"providerName": "origins-0"}, {"allowMissing": {}}]}
    }


def test_several_rules_are_sorted_by_issuer_and_any_one_or_none_passes() -> None:
    first = ra("z", f"  jwtRules: [{{issuer: z.test, jwks: '{KEYS}'}}]")
    second = ra(
        "a", f"  jwtRules: [{{issuer: b.test, jwks: '{KEYS}'}}, {{issuer: a.test, jwks: '{KEYS}'}}]"
    )
    config = jwt_config(snapshot_of(SERVICE, first, second))
    assert config is not None
    issuers = [config["providers"][f"origins-{i}"]["issuer"] for i in range(3)]
    assert issuers == ["a.test", "b.test", "z.test"]
    alternatives = config["rules"][0]["requires"]["requiresAny"]["requirements"]
    assert alternatives[:3] == [{"providerName": f"origins-{i}"} for i in range(3)]
    each_or_missing = alternatives[3]["requiresAll"]["requirements"]
    assert each_or_missing == [
        {"requiresAny": {"requirements": [{"providerName": f"origins-{i}"}, {"allowMissing": {}}]}}
        for i in range(3)
    ]


def test_which_request_authentications_apply_to_a_workload() -> None:
    rule = f"  jwtRules: [{{issuer: ISSUER, jwks: '{KEYS}'}}]"
    docs = [
        SERVICE,
        ra("mesh", rule.replace("ISSUER", "mesh.test"), namespace="istio-system"),
        ra(
            "mesh-other",
            "  selector: {matchLabels: {app: other}}\n" + rule.replace("ISSUER", "no1.test"),
            namespace="istio-system",
        ),
        ra("ns", rule.replace("ISSUER", "ns.test")),
        ra("mine", "  selector: {matchLabels: {app: api}}\n" + rule.replace("ISSUER", "mine.test")),
        ra(
            "theirs", "  selector: {matchLabels: {app: web}}\n" + rule.replace("ISSUER", "no2.test")
        ),
        ra(
            "gateway",
            "  targetRefs: [{kind: Gateway, name: gw}]\n" + rule.replace("ISSUER", "no3.test"),
        ),
        ra("elsewhere", rule.replace("ISSUER", "no4.test"), namespace="prod"),
    ]
    config = jwt_config(snapshot_of(*docs))
    assert config is not None
    issuers = sorted(p["issuer"] for p in config["providers"].values())
    assert issuers == ["mesh.test", "mine.test", "ns.test"]


def test_the_root_namespace_is_the_mesh_configs() -> None:
    rule = f"  jwtRules: [{{issuer: root.test, jwks: '{KEYS}'}}]"
    docs = [SERVICE, ra("mesh", rule, namespace="mesh-root")]
    assert jwt_config(snapshot_of(*docs)) is None  # istio-system is not the root here...
    store = Store()
    snapshot = snapshot_of(*docs)
    resources = [r for kind in snapshot.resources.values() for r in kind.values()]
    mesh = MeshConfig(
        metadata=ObjectMeta(name=MESH_CONFIG_KEY.name, namespace=MESH_CONFIG_KEY.namespace),
        spec=MeshConfigSpec(root_namespace="mesh-root"),
    )
    store.apply(upserts=[Submission(r) for r in [*resources, mesh]])
    config = jwt_config(store.snapshot)  # ... mesh-root is
    assert config is not None and config["providers"]["origins-0"]["issuer"] == "root.test"


# ---- key sets the control plane fetched ------------------------------------------------------


URI = "https://keys.test/jwks.json"
URI_RULE = ra("r", f"  jwtRules: [{{issuer: keys.test, jwksUri: '{URI}'}}]")


def test_a_fetched_key_set_is_inlined() -> None:
    snapshot = with_key_sets([SERVICE, URI_RULE], JwksKeySetSpec(uri=URI, jwks=KEYS, fetched_at=1))
    config = jwt_config(snapshot)
    assert config is not None
    assert config["providers"]["origins-0"]["localJwks"] == {"inlineString": KEYS}
    assert "remoteJwks" not in config["providers"]["origins-0"]  # proxies never fetch


def test_a_key_set_never_fetched_fails_closed_for_that_issuer() -> None:
    for snapshot in (
        with_key_sets([SERVICE, URI_RULE]),  # not tried yet
        with_key_sets([SERVICE, URI_RULE], JwksKeySetSpec(uri=URI, error="HTTP 503")),
        with_key_sets([SERVICE, URI_RULE], JwksKeySetSpec(uri=URI, jwks='{"keys": 1}')),
    ):
        config = jwt_config(snapshot)
        assert config is not None
        assert config["providers"]["origins-0"]["localJwks"] == {"inlineString": PUBLIC_ONLY_JWKS}


def test_the_last_good_key_set_serves_while_refreshes_fail() -> None:
    spec = JwksKeySetSpec(uri=URI, jwks=KEYS, fetched_at=1, error="timeout", failing_since=2)
    config = jwt_config(with_key_sets([SERVICE, URI_RULE], spec))
    assert config is not None
    assert config["providers"]["origins-0"]["localJwks"] == {"inlineString": KEYS}


def test_an_issuer_without_keys_uses_its_openid_discovery_document() -> None:
    rule = ra("r", "  jwtRules: [{issuer: 'https://idp.test/realm'}]")
    discovery = "https://idp.test/realm/.well-known/openid-configuration"
    config = jwt_config(with_key_sets([SERVICE, rule], JwksKeySetSpec(uri=discovery, jwks=KEYS)))
    assert config is not None
    assert config["providers"]["origins-0"]["localJwks"] == {"inlineString": KEYS}


def test_a_key_change_recompiles_only_the_workloads_that_use_that_uri() -> None:
    other_uri = "https://other.test/jwks.json"
    web = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
status: {podIP: 127.0.5.31}
"""
    rules = [
        ra(
            "api",
            f"  selector: {{matchLabels: {{app: api}}}}\n  jwtRules: [{{issuer: a, jwksUri: '{URI}'}}]",
        ),
        ra(
            "web",
            f"  selector: {{matchLabels: {{app: web}}}}\n  jwtRules: [{{issuer: w, jwksUri: '{other_uri}'}}]",
        ),
    ]
    store = Store()
    docs = [
        d for text in [SERVICE, web, *rules] for d in yaml.safe_load_all(textwrap.dedent(text)) if d
    ]
    store.apply(upserts=[Submission(load(d)[0]) for d in docs])
    store.apply(
        upserts=[
            Submission(jwks_key_set(JwksKeySetSpec(uri=u, jwks=KEYS))) for u in (URI, other_uri)
        ]
    )
    web_proxy = proxy_from_node(
        "sidecar~127.0.5.31~web-1.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "LABELS": {"app": "web"},
            "LOCAL_OUTBOUND_PORT": "15001",
            "LOCAL_APP_ADDRESS": "127.0.5.131",
        },
    )
    compiler = SnapshotCompiler(store.snapshot)
    before = {p.node_id: compiler.compile(p) for p in (api_proxy(), web_proxy)}
    rotated = json.dumps({"keys": [rsa_jwk("b")]})
    change = store.apply(upserts=[Submission(jwks_key_set(JwksKeySetSpec(uri=URI, jwks=rotated)))])
    compiler, _ = SnapshotCompiler.following(compiler, store.snapshot, change.changed)
    after = {p.node_id: compiler.compile(p) for p in (api_proxy(), web_proxy)}

    def inbound(out: Any, name: str) -> Any:
        return next(r for rs in out.by_type.values() for n, r in rs.items() if n == name)

    assert inbound(after[web_proxy.node_id], "127.0.5.31_8080") is inbound(
        before[web_proxy.node_id], "127.0.5.31_8080"
    )
    api_after = as_dict(inbound(after[api_proxy().node_id], "127.0.5.30_8080").message)
    [chain] = api_after["filterChains"]
    jwt_filter = chain["filters"][0]["typedConfig"]["httpFilters"][0]["typedConfig"]
    assert jwt_filter["providers"]["origins-0"]["localJwks"] == {"inlineString": rotated}


# ---- request principals and request.auth.* ------------------------------------------------------


def _string(m: string_pb2.StringMatcher, value: str) -> bool:
    kind = m.WhichOneof("match_pattern")
    if kind == "exact":
        return value == m.exact
    if kind == "prefix":
        return value.startswith(m.prefix)
    if kind == "suffix":
        return value.endswith(m.suffix)
    assert kind == "safe_regex"
    return re.fullmatch(m.safe_regex.regex, value) is not None


def _value(m: value_pb2.ValueMatcher, value: Any) -> bool:
    kind = m.WhichOneof("match_pattern")
    if kind == "string_match":
        return isinstance(value, str) and _string(m.string_match, value)
    if kind == "list_match":
        return isinstance(value, list) and any(_value(m.list_match.one_of, v) for v in value)
    assert kind == "or_match"
    return any(_value(v, value) for v in m.or_match.value_matchers)


def matches(principal: rbac_pb2.Principal, payload: dict[str, Any] | None) -> bool:
    """Envoy's meaning of the matchers emitted here, over jwt_authn's metadata."""
    kind = principal.WhichOneof("identifier")
    if kind == "and_ids":
        return all(matches(p, payload) for p in principal.and_ids.ids)
    assert kind == "metadata"
    md = principal.metadata
    assert md.filter == JWT_FILTER
    node: Any = {"payload": payload} if payload is not None else {}
    for segment in md.path:
        if not isinstance(node, dict) or segment.key not in node:
            return False
        node = node[segment.key]
    return _value(md.value, node)


def test_request_principal_splits_issuer_and_subject_at_the_last_slash() -> None:
    url = {"iss": "https://idp.test/realm", "sub": "alice"}
    cases = [
        # (value, payload, matches) as istiod's requestPrincipalGenerator reads the value
        ("https://idp.test/realm/alice", url, True),
        ("https://idp.test/realm/bob", url, False),
        ("https://idp.test/alice", url, False),
        ("*", url, True),
        ("*", {"iss": "https://idp.test/realm"}, False),  # no subject
        ("https://idp.test/realm/*", url, True),
        ("https://idp.test/other/*", url, False),
        ("https://idp.test/realm/al*", url, True),
        ("https://idp.test/realm/bo*", url, False),
        ("*/alice", url, True),
        ("*/realm/alice", url, True),  # issuer suffix
        ("*/other/alice", url, False),
        ("*ice", url, True),  # no slash: subject suffix, any issuer
        ("https://idp*", url, False),  # a slash: issuer exactly 'https:/', as istiod reads it
        ("idp*", url, False),
        ("https://idp.test/realm/alice", None, False),  # no token
    ]
    for value, payload, expected in cases:
        assert matches(request_principal_matcher(value), payload) is expected, (value, payload)


def test_claims_audiences_and_presenter_match_strings_and_lists() -> None:
    payload = {"aud": ["api", "web"], "azp": "cli", "group": "admins", "org": {"team": "pay"}}
    cases = [
        (["request.auth.audiences"], "web", True),
        (["request.auth.audiences"], "billing", False),
        (["request.auth.presenter"], "cli", True),
        (["request.auth.claims", "group"], "admins", True),
        (["request.auth.claims", "group"], "adm*", True),
        (["request.auth.claims", "group"], "users", False),
        (["request.auth.claims", "org", "team"], "pay", True),
        (["request.auth.claims", "missing"], "*", False),
    ]
    for path, value, expected in cases:
        assert matches(authn_metadata_principal(path, value), payload) is expected, (path, value)
        assert matches(authn_metadata_principal(path, value), None) is False


def test_transparent_sidecars_authenticate_on_every_inbound_http_chain() -> None:
    """virtualInbound: the service's HTTP port and the pass-through HTTP chain get the JWT
    filter; TCP chains (no HTTP to read a token from) do not."""
    tcp_service = """
apiVersion: v1
kind: Service
metadata: {name: api-db, namespace: default}
spec:
  selector: {app: api}
  ports: [{name: tcp-db, port: 5432, targetPort: 5432}]
"""
    rule = ra("r", f"  jwtRules: [{{issuer: a.test, jwks: '{KEYS}'}}]")
    proxy = proxy_from_node(
        "sidecar~127.0.5.30~api-1.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": {"app": "api"}, "INTERCEPTION_MODE": "REDIRECT"},
    )
    out = SnapshotCompiler(snapshot_of(SERVICE, tcp_service, rule)).compile(proxy)
    listeners = {n: as_dict(r.message) for rs in out.by_type.values() for n, r in rs.items()}
    with_jwt, without = [], []
    for chain in listeners["virtualInbound"]["filterChains"]:
        filters = chain["filters"]
        hcm = [f for f in filters if f["name"].endswith("http_connection_manager")]
        if not hcm:
            without.append(chain.get("name", ""))
            continue
        names = [f["name"] for f in hcm[0]["typedConfig"]["httpFilters"]]
        assert names[0] == "envoy.filters.http.jwt_authn", chain.get("name")
        with_jwt.append(chain.get("name", ""))
    assert "0.0.0.0_8080" in with_jwt and "virtualInbound-catchall-http" in with_jwt
    assert "0.0.0.0_5432" in without
