"""TLS in compiled config: inbound mTLS chains by PeerAuthentication mode, automatic mTLS on
outbound clusters, DestinationRule trafficPolicy.tls modes, and RBAC on inbound chains."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy, proxy_from_node
from tests.support import meshes
from tests.unit.compile.helpers import compiled, snapshot_of

PAYMENT = """
apiVersion: v1
kind: Service
metadata: {name: payment, namespace: default}
spec:
  selector: {app: payment}
  ports:
  - {name: http, port: 9080, targetPort: 8080}
  - {name: tcp-ledger, port: 7000, targetPort: 7001}
---
apiVersion: v1
kind: Pod
metadata: {name: payment-1, namespace: default, labels: {app: payment, version: v1, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: payment}
status: {podIP: 127.0.7.10}
---
apiVersion: v1
kind: Pod
metadata: {name: payment-2, namespace: default, labels: {app: payment, version: v2}}
spec: {serviceAccountName: payment-v2}
status: {podIP: 127.0.7.11}
"""
CLUSTER = "outbound|9080||payment.default.svc.cluster.local"
TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def payment_proxy(identity: bool = True) -> Proxy:
    proxy = proxy_from_node(
        "sidecar~127.0.7.10~payment-1.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "LABELS": {"app": "payment", "version": "v1"},
            "SERVICE_ACCOUNT": "payment",
            "LOCAL_OUTBOUND_PORT": "15001",
            "LOCAL_APP_ADDRESS": "127.0.7.110",
        },
    )
    return replace(
        proxy, identity="spiffe://cluster.local/ns/default/sa/payment" if identity else ""
    )


def client_proxy(identity: bool = True) -> Proxy:
    return Proxy(
        node_id="sidecar~127.0.7.20~order-1.default~default.svc.cluster.local",
        namespace="default",
        labels={"app": "order"},
        service_account="order",
        local_outbound_port=15001,
        identity="spiffe://cluster.local/ns/default/sa/order" if identity else "",
    )


def peer(mode: str, selector: str = "", ports: str = "") -> str:
    spec = f"mtls: {{mode: {mode}}}"
    if selector:
        spec += f", selector: {{matchLabels: {{{selector}}}}}"
    if ports:
        spec += f", portLevelMtls: {{{ports}}}"
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: pa-{mode.lower()}, namespace: default}}
spec: {{{spec}}}
"""


def destination_rule(tls: str, subsets: str = "") -> str:
    return meshes.resource(
        "DestinationRule",
        "payment",
        f"""
  host: payment
  trafficPolicy: {{tls: {tls}}}
  subsets: [{subsets}]
""",
    )


def inbound_chains(*docs: str, identity: bool = True, port: int = 8080) -> list[dict[str, Any]]:
    out = compiled(snapshot_of(PAYMENT, *docs), payment_proxy(identity))
    return out["lds"][f"127.0.7.10_{port}"]["filterChains"]


def tls_context(chain: dict[str, Any]) -> dict[str, Any]:
    return chain["transportSocket"]["typedConfig"]


# ---- inbound --------------------------------------------------------------------------------


MESH_ALPNS = ["istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"]


def test_permissive_by_default_gives_mtls_plaintext_and_tls_passthrough_chains() -> None:
    chains = inbound_chains()
    assert [c["filterChainMatch"] for c in chains] == [
        {"destinationPort": 8080, "transportProtocol": "tls", "applicationProtocols": MESH_ALPNS},
        {"destinationPort": 8080, "transportProtocol": "raw_buffer"},
        {"destinationPort": 8080, "transportProtocol": "tls"},
    ]
    assert "transportSocket" in chains[0]
    assert "transportSocket" not in chains[1]
    # TLS that is not the mesh's reaches the app as it is (the app terminates it).
    assert "transportSocket" not in chains[2]
    assert chains[2]["filters"][-1]["name"] == "envoy.filters.network.tcp_proxy"
    assert chains[1]["filters"][-1]["name"] == "envoy.filters.network.http_connection_manager"
    out = compiled(snapshot_of(PAYMENT), payment_proxy())
    filters = [f["name"] for f in out["lds"]["127.0.7.10_8080"]["listenerFilters"]]
    assert filters == ["envoy.filters.listener.tls_inspector"]


def test_strict_keeps_only_the_tls_chain_which_demands_a_mesh_client_certificate() -> None:
    [chain] = inbound_chains(peer("STRICT"))
    assert chain["filterChainMatch"]["transportProtocol"] == "tls"
    context = tls_context(chain)
    assert context["requireClientCertificate"] is True
    common = context["commonTlsContext"]
    assert common["tlsParams"] == {"tlsMinimumProtocolVersion": "TLSv1_2"}
    assert [s["name"] for s in common["tlsCertificateSdsSecretConfigs"]] == ["default"]
    validation = common["combinedValidationContext"]
    assert validation["validationContextSdsSecretConfig"]["name"] == "ROOTCA"
    assert validation["validationContextSdsSecretConfig"]["sdsConfig"]["ads"] == {}
    assert common["alpnProtocols"] == ["h2", "http/1.1"]


def test_disable_keeps_the_plaintext_chain_alone() -> None:
    [chain] = inbound_chains(peer("DISABLE"))
    assert chain["filterChainMatch"] == {"destinationPort": 8080}
    assert "transportSocket" not in chain


def test_port_level_mtls_changes_one_port_only() -> None:
    docs = (peer("STRICT", selector="app: payment", ports="'7001': {mode: DISABLE}"),)
    assert len(inbound_chains(*docs, port=8080)) == 1
    [tcp] = inbound_chains(*docs, port=7001)
    assert "transportSocket" not in tcp
    assert tcp["filters"][-1]["name"] == "envoy.filters.network.tcp_proxy"


def test_a_server_without_a_certificate_serves_plaintext_or_under_strict_refuses_all() -> None:
    [plain] = inbound_chains(identity=False)
    assert "transportSocket" not in plain
    [refused] = inbound_chains(peer("STRICT"), identity=False)
    first = refused["filters"][0]
    assert first["name"] == "envoy.filters.network.rbac"
    assert first["typedConfig"]["rules"] == {}  # ALLOW with no policy: every connection closed


def test_inbound_http_chains_run_rbac_before_the_router() -> None:
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payment, namespace: default}
spec:
  selector: {matchLabels: {app: payment}}
  rules: [{to: [{operation: {methods: [POST]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
"""
    for chain in inbound_chains(peer("STRICT"), policy) + inbound_chains(policy)[:2]:
        hcm = chain["filters"][0]["typedConfig"]
        names = [f["name"] for f in hcm["httpFilters"]]
        assert names == [
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.router",
        ]
        actions = [f["typedConfig"]["rules"].get("action", "ALLOW") for f in hcm["httpFilters"][:2]]
        assert actions == ["DENY", "ALLOW"]
    passthrough = inbound_chains(policy)[2]
    assert [f["name"] for f in passthrough["filters"]][-1] == "envoy.filters.network.tcp_proxy"
    assert passthrough["filters"][0]["name"] == "envoy.filters.network.rbac"
    tcp = inbound_chains(policy, port=7001)
    assert [f["name"] for f in tcp[0]["filters"]] == [
        "envoy.filters.network.rbac",  # the ALLOW rule needs HTTP: on TCP it allows nothing
        "envoy.filters.network.rbac",
        "envoy.filters.network.tcp_proxy",
    ]


def test_workloads_of_one_shape_share_one_compiled_inbound_listener() -> None:
    compiler = SnapshotCompiler(snapshot_of(PAYMENT, peer("STRICT")))
    a = compiler.compile(payment_proxy())
    b = compiler.compile(
        replace(payment_proxy(), node_id="sidecar~127.0.7.10~payment-1b.default~x")
    )
    from controlplane.compile.resources import LISTENER

    assert a.of(LISTENER)["127.0.7.10_8080"] is b.of(LISTENER)["127.0.7.10_8080"]


# ---- outbound: automatic mTLS ------------------------------------------------------------------


def clusters(*docs: str, identity: bool = True) -> dict[str, dict[str, Any]]:
    return compiled(snapshot_of(PAYMENT, *docs), client_proxy(identity))["cds"]


def test_auto_mtls_uses_istio_mutual_for_sidecar_endpoints_and_plaintext_for_the_rest() -> None:
    cluster = clusters()[CLUSTER]
    assert "transportSocket" not in cluster
    istio, plain = cluster["transportSocketMatches"]
    assert istio["name"] == "tlsMode-istio" and istio["match"] == {"tlsMode": "istio"}
    assert plain["name"] == "tlsMode-disabled" and plain["match"] == {}
    assert plain["transportSocket"]["name"] == "envoy.transport_sockets.raw_buffer"
    context = istio["transportSocket"]["typedConfig"]
    assert context["@type"] == TLS_CONTEXT
    assert context["sni"] == "outbound_.9080_._.payment.default.svc.cluster.local"
    common = context["commonTlsContext"]
    assert common["alpnProtocols"] == ["istio-peer-exchange", "istio"]
    assert [s["name"] for s in common["tlsCertificateSdsSecretConfigs"]] == ["default"]
    sans = common["combinedValidationContext"]["defaultValidationContext"]
    assert sans["matchTypedSubjectAltNames"] == [
        {"sanType": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/payment"}},
        {"sanType": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/payment-v2"}},
    ]


def test_endpoint_metadata_marks_sidecar_endpoints_for_the_match() -> None:
    out = compiled(snapshot_of(PAYMENT), client_proxy())
    endpoints = out["eds"][CLUSTER]["endpoints"][0]["lbEndpoints"]
    marks = [
        e.get("metadata", {}).get("filterMetadata", {}).get("envoy.transport_socket_match")
        for e in endpoints
    ]
    assert marks == [{"tlsMode": "istio"}, None]


def test_auto_mtls_is_off_when_the_destination_disables_mtls() -> None:
    assert "transportSocketMatches" not in clusters(peer("DISABLE"))[CLUSTER]
    # A policy for other workloads does not count.
    other = peer("DISABLE", selector="app: web")
    assert "transportSocketMatches" in clusters(other)[CLUSTER]


def test_a_client_without_a_certificate_speaks_plaintext() -> None:
    assert "transportSocketMatches" not in clusters(identity=False)[CLUSTER]


# ---- outbound: DestinationRule tls ---------------------------------------------------------------


def test_destination_rule_disable_turns_auto_mtls_off() -> None:
    cluster = clusters(destination_rule("{mode: DISABLE}"))[CLUSTER]
    assert "transportSocketMatches" not in cluster and "transportSocket" not in cluster


def test_destination_rule_istio_mutual_applies_to_every_endpoint_with_istio_sni() -> None:
    found = clusters(destination_rule("{mode: ISTIO_MUTUAL}", "{name: v1, labels: {version: v1}}"))
    subset = found["outbound|9080|v1|payment.default.svc.cluster.local"]
    context = subset["transportSocket"]["typedConfig"]
    assert context["sni"] == "outbound_.9080_.v1_.payment.default.svc.cluster.local"
    assert "transportSocketMatches" not in subset
    assert [s["name"] for s in context["commonTlsContext"]["tlsCertificateSdsSecretConfigs"]] == [
        "default"
    ]


def test_istio_mutual_san_and_sni_can_be_overridden() -> None:
    found = clusters(
        destination_rule(
            "{mode: ISTIO_MUTUAL, sni: pay.example, subjectAltNames: [spiffe://cluster.local/ns/x/sa/y]}"
        )
    )
    context = found[CLUSTER]["transportSocket"]["typedConfig"]
    assert context["sni"] == "pay.example"
    sans = context["commonTlsContext"]["combinedValidationContext"]["defaultValidationContext"]
    assert [m["matcher"]["exact"] for m in sans["matchTypedSubjectAltNames"]] == [
        "spiffe://cluster.local/ns/x/sa/y"
    ]


def test_simple_and_mutual_originate_tls_from_files() -> None:
    simple = clusters(
        destination_rule("{mode: SIMPLE, caCertificates: /etc/ca.pem, sni: pay.example}")
    )[CLUSTER]["transportSocket"]["typedConfig"]
    assert simple["sni"] == "pay.example"
    assert simple["commonTlsContext"]["validationContext"]["trustedCa"] == {
        "filename": "/etc/ca.pem"
    }
    assert "tlsCertificates" not in simple["commonTlsContext"]
    system = clusters(destination_rule("{mode: SIMPLE, sni: pay.example}"))[CLUSTER]
    validation = system["transportSocket"]["typedConfig"]["commonTlsContext"]["validationContext"]
    # Verified against the OS roots, never skipped.
    assert validation == {"trustedCa": {"filename": "/etc/ssl/certs/ca-certificates.crt"}}
    skip = clusters(destination_rule("{mode: SIMPLE, insecureSkipVerify: true}"))[CLUSTER]
    assert "validationContext" not in skip["transportSocket"]["typedConfig"]["commonTlsContext"]
    mutual = clusters(
        destination_rule(
            "{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}"
        )
    )[CLUSTER]["transportSocket"]["typedConfig"]
    assert mutual["commonTlsContext"]["tlsCertificates"] == [
        {"certificateChain": {"filename": "/c.pem"}, "privateKey": {"filename": "/k.pem"}}
    ]


def test_subset_tls_beats_port_level_which_beats_the_top_level() -> None:
    rule = meshes.resource(
        "DestinationRule",
        "payment",
        """
  host: payment
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: DISABLE}}
  - name: v2
    labels: {version: v2}
""",
    )
    found = clusters(rule)
    assert "transportSocket" in found[CLUSTER]  # port-level beats top-level
    assert "transportSocket" not in found["outbound|7000||payment.default.svc.cluster.local"]
    assert "transportSocket" not in found["outbound|9080|v1|payment.default.svc.cluster.local"]
    assert "transportSocket" in found["outbound|9080|v2|payment.default.svc.cluster.local"]


# ---- transparent mode: virtualInbound ------------------------------------------------------------


def virtual_inbound(*docs: str, identity: bool = True) -> list[dict[str, Any]]:
    proxy = proxy_from_node(
        "sidecar~127.0.7.10~payment-1.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": {"app": "payment"}, "SERVICE_ACCOUNT": "payment"},
    )
    proxy = replace(
        proxy, identity="spiffe://cluster.local/ns/default/sa/payment" if identity else ""
    )
    out = compiled(snapshot_of(PAYMENT, *docs), proxy)
    return out["lds"]["virtualInbound"]["filterChains"]


def test_virtual_inbound_under_strict_accepts_only_mtls_on_declared_and_undeclared_ports() -> None:
    chains = virtual_inbound(peer("STRICT"))
    matches = [(c["name"], c.get("filterChainMatch", {})) for c in chains]
    assert ("0.0.0.0_8080", {"destinationPort": 8080, "transportProtocol": "tls"}) in matches
    assert ("0.0.0.0_7001", {"destinationPort": 7001, "transportProtocol": "tls"}) in matches
    passthrough = [m for n, m in matches if n in ("virtualInbound", "virtualInbound-catchall-http")]
    assert passthrough and all(m.get("transportProtocol") == "tls" for m in passthrough)
    assert not [m for _, m in matches if m.get("transportProtocol") == "raw_buffer"]


def test_virtual_inbound_under_permissive_has_plaintext_twins_everywhere() -> None:
    chains = virtual_inbound()

    def named(transport: str, mtls: bool) -> set[str]:
        return {
            c["name"]
            for c in chains
            if c.get("filterChainMatch", {}).get("transportProtocol") == transport
            and ("transportSocket" in c) == mtls
        }

    assert named("raw_buffer", False) == {
        "0.0.0.0_8080",
        "0.0.0.0_7001",
        "virtualInbound",
        "virtualInbound-catchall-http",
    }
    assert named("tls", True) == {"0.0.0.0_8080", "0.0.0.0_7001", "virtualInbound"}
    assert named("tls", False) == {"0.0.0.0_8080", "0.0.0.0_7001", "virtualInbound"}


def test_virtual_inbound_without_identity_is_plaintext_as_before() -> None:
    chains = virtual_inbound(identity=False)
    assert not [c for c in chains if "transportSocket" in c]


def test_an_endpoint_whose_own_policy_disables_mtls_is_reached_in_plaintext() -> None:
    # payment-1 (v1) has a sidecar; a workload policy disables mTLS for v1 only. The service
    # as a whole stays on auto mTLS; v1's endpoint loses its tlsMode mark, as in istiod's EDS.
    docs = (peer("DISABLE", selector="version: v1"),)
    out = compiled(snapshot_of(PAYMENT, *docs), client_proxy())
    assert "transportSocketMatches" in out["cds"][CLUSTER]
    endpoints = out["eds"][CLUSTER]["endpoints"][0]["lbEndpoints"]
    assert [
        e.get("metadata", {}).get("filterMetadata", {}).get("envoy.transport_socket_match")
        for e in endpoints
    ] == [None, None]
    # Port-level: DISABLE on another port leaves this one marked.
    docs = (peer("STRICT", selector="app: payment", ports="'7001': {mode: DISABLE}"),)
    out = compiled(snapshot_of(PAYMENT, *docs), client_proxy())
    http = out["eds"][CLUSTER]["endpoints"][0]["lbEndpoints"]
    assert http[0]["metadata"]["filterMetadata"]["envoy.transport_socket_match"] == {
        "tlsMode": "istio"
    }
    tcp = out["eds"]["outbound|7000||payment.default.svc.cluster.local"]["endpoints"][0][
        "lbEndpoints"
    ]
    assert "envoy.transport_socket_match" not in tcp[0]["metadata"]["filterMetadata"]
