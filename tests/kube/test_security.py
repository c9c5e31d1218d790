"""Cluster mode security against a real kube-apiserver: projected service-account tokens
checked with TokenReview (audience enforced), and the CA root kept in a Secret."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from kubernetes import client

from controlplane.ca import CertificateAuthority, InvalidToken
from controlplane.ca.root import create_root_bundle
from controlplane.ca.secret_keystore import SecretKeyStore
from controlplane.compile.proxy import Proxy
from controlplane.xds.identity import (
    IdentityRejected,
    StreamInfo,
    TokenAuthenticator,
    TokenReviewVerifier,
    kubernetes_token_review,
)
from tests.cluster.cluster import LocalCluster

AUDIENCE = "istio-ca"


def service_account_token(cluster: LocalCluster, namespace: str, name: str, audience: str) -> str:
    """A projected-style token, as the kubelet would mount it (TokenRequest API)."""
    cluster.ensure_service_account(namespace, name)
    out = cluster.kubectl(
        "create", "token", name, "-n", namespace, "--audience", audience, "--duration", "10m"
    )
    return out.stdout.strip()


@pytest.fixture
def verifier(kube_cluster: LocalCluster):
    with kube_cluster.api_client() as api:
        yield TokenReviewVerifier(
            kubernetes_token_review(api), audience=AUDIENCE, trust_domain="cluster.local"
        )


def test_token_review_proves_the_service_account_of_a_projected_token(
    kube_cluster: LocalCluster, kube_namespace: str, verifier: TokenReviewVerifier
) -> None:
    token = service_account_token(kube_cluster, kube_namespace, "payment", AUDIENCE)
    identity = verifier(token)
    assert identity.spiffe_id == f"spiffe://cluster.local/ns/{kube_namespace}/sa/payment"


def test_a_token_for_another_audience_is_refused(
    kube_cluster: LocalCluster, kube_namespace: str, verifier: TokenReviewVerifier
) -> None:
    token = service_account_token(kube_cluster, kube_namespace, "payment", "vault")
    with pytest.raises(InvalidToken, match="did not authenticate"):
        verifier(token)


def test_a_tampered_token_is_refused(
    kube_cluster: LocalCluster, kube_namespace: str, verifier: TokenReviewVerifier
) -> None:
    token = service_account_token(kube_cluster, kube_namespace, "payment", AUDIENCE)
    head, claims, signature = token.split(".")
    with pytest.raises(InvalidToken):
        verifier(f"{head}.{claims}.{signature[:-4]}AAAA")


def test_a_node_claiming_another_account_than_its_token_is_refused(
    kube_cluster: LocalCluster, kube_namespace: str, verifier: TokenReviewVerifier
) -> None:
    token = service_account_token(kube_cluster, kube_namespace, "web", AUDIENCE)
    authenticate = TokenAuthenticator(verifier, trust_domain="cluster.local")
    info = StreamInfo(peer="ipv4:127.0.0.1:1", metadata={"authorization": f"Bearer {token}"})
    claimed = Proxy(node_id="sidecar~10.0.0.1~x.ns~ns", namespace=kube_namespace)
    with pytest.raises(IdentityRejected, match="claims"):
        authenticate(replace(claimed, service_account="payment"), info)
    proved = authenticate(replace(claimed, service_account="web"), info)
    assert proved.identity == f"spiffe://cluster.local/ns/{kube_namespace}/sa/web"


def test_the_ca_root_is_created_once_in_a_secret_and_reused(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    with kube_cluster.api_client() as api:
        first = CertificateAuthority.load_or_create(SecretKeyStore(api, kube_namespace))
        second = CertificateAuthority.load_or_create(SecretKeyStore(api, kube_namespace))
        assert first.root_certs_pem == second.root_certs_pem
        secret = client.CoreV1Api(api).read_namespaced_secret("istio-ca-secret", kube_namespace)
        assert base64.b64decode(secret.data["root-cert.pem"]).decode() == first.root_certs_pem
        # An operator's cacerts Secret takes precedence and is never written to.
        operator = create_root_bundle(datetime.now(UTC), trust_domain="cluster.local")
        client.CoreV1Api(api).create_namespaced_secret(
            kube_namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="cacerts"),
                data={
                    "ca-cert.pem": _b64(operator.ca_cert_pem),
                    "ca-key.pem": _b64(operator.ca_key_pem),
                    "cert-chain.pem": _b64(operator.cert_chain_pem),
                    "root-cert.pem": _b64(operator.root_cert_pem),
                },
            ),
        )
        store = SecretKeyStore(api, kube_namespace)
        plugged = CertificateAuthority.load_or_create(store)
        assert store.source == "cacerts"
        assert plugged.root_certs_pem == operator.root_cert_pem != first.root_certs_pem


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_a_proxy_with_its_projected_token_gets_its_certificate_over_sds(
    kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    from controlplane.app import enable_cluster_security
    from controlplane.cache import CacheMux, CompiledCache
    from controlplane.cache.interface import SECRET
    from controlplane.store import Store
    from controlplane.xds.server import XdsServer
    from tests.support.pki import uri_sans
    from tests.unit.xds.test_sds import AdsClient, leaf, node, secrets

    token = service_account_token(kube_cluster, kube_namespace, "payment", AUDIENCE)
    other = service_account_token(kube_cluster, kube_namespace, "web", AUDIENCE)
    with kube_cluster.api_client() as api:
        hub = CompiledCache(Store(), debounce=0.01)
        security = enable_cluster_security(api, namespace=kube_namespace)
        xds = XdsServer(
            CacheMux(hub, {SECRET: security.provider}),
            authenticator=security.authenticator,
            services=[security.certificates],
        )
        hub.start()
        port = await xds.start("127.0.0.1", 0)
        security.start()
        try:
            proxy = AdsClient(port, token)
            await proxy.subscribe(node("payment", kube_namespace))
            response = await proxy.read()
            assert response is not None
            cert = leaf(secrets(response)["default"])
            assert uri_sans(cert) == [f"spiffe://cluster.local/ns/{kube_namespace}/sa/payment"]
            await proxy.close()
            impostor = AdsClient(port, other)
            await impostor.subscribe(node("payment", kube_namespace))
            assert await impostor.read() is None
            await impostor.close()
            anonymous = AdsClient(port, None)  # tokens are required in cluster mode
            await anonymous.subscribe(node("payment", kube_namespace))
            assert await anonymous.read() is None
            await anonymous.close()
        finally:
            await security.stop()
            await xds.stop(grace=0)
        stored = client.CoreV1Api(api).read_namespaced_secret("istio-ca-secret", kube_namespace)
        root = base64.b64decode(stored.data["root-cert.pem"]).decode()
        assert root == security.ca.root_certs_pem
