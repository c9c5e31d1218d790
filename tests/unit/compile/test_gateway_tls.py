"""What a Gateway server's ``tls`` becomes on the gateway's listener, as istiod builds it
(BuildListenerTLSContext, ApplyCredentialSDSToServerCommonTLSContext): SDS names of the
credential and its CA, client certificates required for MUTUAL and ISTIO_MUTUAL, the mesh's
own certificate for ISTIO_MUTUAL, files for file-based servers, TLS parameters; SNI chains for
PASSTHROUGH with duplicates skipped; AUTO_PASSTHROUGH gives no chain and says so."""

from __future__ import annotations

from typing import Any

from controlplane.api import load
from controlplane.compile.proxy import ROUTER, Proxy
from tests.support import meshes
from tests.unit.compile.helpers import compiled, snapshot_of

GATEWAY_PROXY = Proxy(
    node_id="router~10.0.0.50~ingressgateway-1.istio-system~istio-system.svc.cluster.local",
    namespace="istio-system",
    labels={"istio": "ingressgateway"},
    proxy_type=ROUTER,
)


def gateway(servers: str) -> str:
    return meshes.resource(
        "Gateway",
        "gw",
        f"selector: {{istio: ingressgateway}}\nservers:\n{servers}",
    )


def listener(servers: str, *extra: str) -> dict[str, Any]:
    out = compiled(snapshot_of(gateway(servers), *extra), GATEWAY_PROXY)["lds"]
    assert len(out) == 1, sorted(out)
    return next(iter(out.values()))


def tls_context(chain: dict[str, Any]) -> dict[str, Any]:
    return dict(chain["transportSocket"]["typedConfig"])


def test_simple_names_the_credential_over_sds_and_matches_the_servers_sni() -> None:
    found = listener("""
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: [ns1/bookinfo.example.com, "*/shop.example.com"]
      tls: {mode: SIMPLE, credentialName: bookinfo-cred, minProtocolVersion: TLSV1_3}
    """)
    assert found["listenerFilters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    chain = found["filterChains"][0]
    assert chain["filterChainMatch"] == {
        "serverNames": ["bookinfo.example.com", "shop.example.com"],
        "transportProtocol": "tls",
    }
    context = tls_context(chain)
    common = context["commonTlsContext"]
    assert [s["name"] for s in common["tlsCertificateSdsSecretConfigs"]] == [
        "kubernetes://bookinfo-cred"
    ]
    assert common["tlsCertificateSdsSecretConfigs"][0]["sdsConfig"] == {
        "ads": {},
        "resourceApiVersion": "V3",
    }
    assert common["alpnProtocols"] == ["h2", "http/1.1"]
    assert common["tlsParams"] == {"tlsMinimumProtocolVersion": "TLSv1_3"}
    assert context["requireClientCertificate"] is False
    assert "combinedValidationContext" not in common


def test_mutual_requires_a_client_certificate_checked_against_the_cacert_secret() -> None:
    chain = listener("""
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: ["*"]
      tls:
        mode: MUTUAL
        credentialName: bookinfo-cred
        subjectAltNames: [client.example.com]
    """)["filterChains"][0]
    assert chain["filterChainMatch"] == {"transportProtocol": "tls"}  # "*": any SNI
    context = tls_context(chain)
    assert context["requireClientCertificate"] is True
    combined = context["commonTlsContext"]["combinedValidationContext"]
    assert (
        combined["validationContextSdsSecretConfig"]["name"] == "kubernetes://bookinfo-cred-cacert"
    )
    assert combined["defaultValidationContext"]["matchSubjectAltNames"] == [
        {"exact": "client.example.com"}
    ]


def test_ca_cert_credential_name_and_several_credentials() -> None:
    common = tls_context(
        listener("""
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: ["*"]
      tls:
        mode: MUTUAL
        credentialNames: [rsa-cred, ecdsa-cred]
        caCertCredentialName: client-roots
    """)["filterChains"][0]
    )["commonTlsContext"]
    assert [s["name"] for s in common["tlsCertificateSdsSecretConfigs"]] == [
        "kubernetes://rsa-cred",
        "kubernetes://ecdsa-cred",
    ]
    assert (
        common["combinedValidationContext"]["validationContextSdsSecretConfig"]["name"]
        == "kubernetes://client-roots"
    )


def test_istio_mutual_uses_the_gateways_own_mesh_certificate_and_the_mesh_roots() -> None:
    context = tls_context(
        listener("""
    - port: {number: 15443, name: https-mesh, protocol: HTTPS}
      hosts: ["*.mesh.example.com"]
      tls: {mode: ISTIO_MUTUAL}
    """)["filterChains"][0]
    )
    common = context["commonTlsContext"]
    assert context["requireClientCertificate"] is True
    assert [s["name"] for s in common["tlsCertificateSdsSecretConfigs"]] == ["default"]
    assert (
        common["combinedValidationContext"]["validationContextSdsSecretConfig"]["name"] == "ROOTCA"
    )


def test_file_certificates_are_read_by_envoy_from_their_paths() -> None:
    common = tls_context(
        listener("""
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: ["*"]
      tls:
        mode: MUTUAL
        serverCertificate: /etc/certs/cert.pem
        privateKey: /etc/certs/key.pem
        caCertificates: /etc/certs/ca.pem
    """)["filterChains"][0]
    )["commonTlsContext"]
    assert common["tlsCertificates"] == [
        {
            "certificateChain": {"filename": "/etc/certs/cert.pem"},
            "privateKey": {"filename": "/etc/certs/key.pem"},
        }
    ]
    assert common["validationContext"]["trustedCa"] == {"filename": "/etc/certs/ca.pem"}


PASSTHROUGH_SERVER = """
    - port: {number: 443, name: tls, protocol: TLS}
      hosts: ["*.example.com"]
      tls: {mode: PASSTHROUGH}
"""


def tls_route(name: str, sni: str, backend: str) -> str:
    return meshes.virtual_service(
        sni,
        f"""
        gateways: [default/gw]
        tls:
        - match: [{{sniHosts: [{sni}]}}]
          route: [{{destination: {{host: {backend}.default.svc.cluster.local, port: {{number: 8443}}}}}}]
        """,
        name=name,
        namespace="istio-system",
    )


def test_passthrough_gives_one_sni_chain_per_tls_route_and_skips_a_duplicate_sni() -> None:
    found = listener(
        PASSTHROUGH_SERVER,
        tls_route("a", "a.example.com", "alpha"),
        tls_route("b", "b.example.com", "beta"),
        tls_route("dup", "a.example.com", "gamma"),
    )
    chains = [
        (c["filterChainMatch"]["serverNames"], c["filters"][0]["typedConfig"]["cluster"])
        for c in found["filterChains"]
    ]
    assert sorted(chains) == [
        (["a.example.com"], "outbound|8443||alpha.default.svc.cluster.local"),
        (["b.example.com"], "outbound|8443||beta.default.svc.cluster.local"),
    ]
    assert all("transportSocket" not in c for c in found["filterChains"])


def test_auto_passthrough_is_reported_as_not_supported_and_gives_no_chain() -> None:
    doc = meshes._load(
        gateway("""
    - port: {number: 15443, name: tls, protocol: TLS}
      hosts: ["*.local"]
      tls: {mode: AUTO_PASSTHROUGH}
    """)
    )
    _, issues = load(doc)
    assert [(i.code.id, i.path) for i in issues] == [("CP0202", "spec.servers[0].tls.mode")]
    assert "AUTO_PASSTHROUGH is not supported yet" in issues[0].reason
    out = compiled(
        snapshot_of(
            gateway("""
    - port: {number: 15443, name: tls, protocol: TLS}
      hosts: ["*.local"]
      tls: {mode: AUTO_PASSTHROUGH}
    """)
        ),
        GATEWAY_PROXY,
    )
    assert out["lds"] == {}


def test_https_redirect_marks_every_server_host_require_tls() -> None:
    routes = compiled(
        snapshot_of(
            gateway("""
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: [bookinfo.example.com, shop.example.com]
      tls: {httpsRedirect: true}
    """)
        ),
        GATEWAY_PROXY,
    )["rds"]
    vhosts = routes["http.80"]["virtualHosts"]
    assert {(v["name"], v["requireTls"]) for v in vhosts} == {
        ("bookinfo.example.com:80", "ALL"),
        ("shop.example.com:80", "ALL"),
    }


def test_a_tls_server_that_terminates_forwards_the_plaintext_by_its_tcp_route() -> None:
    chain = listener(
        """
    - port: {number: 31400, name: tls-db, protocol: TLS}
      hosts: [db.example.com]
      tls: {mode: SIMPLE, credentialName: db-cred}
    """,
        meshes.virtual_service(
            "db.example.com",
            """
            gateways: [default/gw]
            tcp:
            - match: [{port: 31400}]
              route: [{destination: {host: db.default.svc.cluster.local, port: {number: 5432}}}]
            """,
        ),
    )["filterChains"][0]
    assert chain["filterChainMatch"] == {
        "serverNames": ["db.example.com"],
        "transportProtocol": "tls",
    }
    assert chain["filters"][0]["typedConfig"]["cluster"] == (
        "outbound|5432||db.default.svc.cluster.local"
    )
    sds = tls_context(chain)["commonTlsContext"]["tlsCertificateSdsSecretConfigs"]
    assert [s["name"] for s in sds] == ["kubernetes://db-cred"]


def test_authorization_policies_of_the_gateway_guard_its_tls_chains() -> None:
    """As on plain chains (istiod applies a gateway's policies to every chain): HTTP RBAC in
    the terminated HTTPS chain's connection manager, network RBAC before a passthrough's
    TCP proxy."""
    policy = meshes.resource(
        "AuthorizationPolicy",
        "deny-blocked",
        """
        selector: {matchLabels: {istio: ingressgateway}}
        action: DENY
        rules: [{from: [{source: {ipBlocks: [203.0.113.0/24]}}]}]
        """,
        namespace="istio-system",
    )
    https = listener(
        """
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: ["*"]
      tls: {mode: SIMPLE, credentialName: cred}
    """,
        policy,
    )["filterChains"][0]
    http_filters = https["filters"][0]["typedConfig"]["httpFilters"]
    assert http_filters[0]["name"] == "envoy.filters.http.rbac"
    passthrough = listener(PASSTHROUGH_SERVER, tls_route("a", "a.example.com", "alpha"), policy)[
        "filterChains"
    ][0]
    names = [f["name"] for f in passthrough["filters"]]
    assert names == ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
