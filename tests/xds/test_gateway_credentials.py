"""Gateway credentials over SDS (real grpc streams, in process): a proxy proved in a
Secret's namespace gets ``kubernetes://<credentialName>`` and ``-cacert``; a proxy of
another namespace does not, whatever name it asks for; a rotated Secret is pushed to the
streams that hold it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from controlplane.app import load_ca
from controlplane.cache import GatewayCredentials, SecretCache
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import SECRET
from controlplane.testing.ads_client import AdsConnection, delta_request, node
from controlplane.xds.identity import StreamInfo
from tests.support import pki
from tests.xds.conftest import ControlPlane, serving
from tests.xds.test_delta import ack, names

CA = pki.current_ca("example.com root")
CERT = pki.make_leaf(CA, dns_names=["bookinfo.example.com"], common_name="first")
ROTATED = pki.make_leaf(CA, dns_names=["bookinfo.example.com"], common_name="second")
CREDENTIAL = pki.tls_secret_yaml("bookinfo-cred", "ingress", *CERT, CA[0])


def proven(proxy: Proxy, info: StreamInfo) -> Proxy:
    """Authenticates every proxy as the service account it claims (as a valid token would)."""
    spiffe = f"spiffe://{proxy.trust_domain}/ns/{proxy.namespace}/sa/{proxy.service_account}"
    return replace(proxy, identity=spiffe)


def gateway_node(namespace: str, name: str = "ingressgateway"):  # type: ignore[no-untyped-def]
    return node(
        f"router~127.0.6.120~{name}-1.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "SERVICE_ACCOUNT": name},
    )


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    secrets = SecretCache(load_ca(tmp_path / "ca", "cluster.local", 3600.0))
    async with serving({SECRET: secrets}, authenticator=proven) as control_plane:
        secrets.serve_credentials(GatewayCredentials(control_plane.store))
        control_plane.apply(CREDENTIAL)
        yield control_plane


def leaf_cn(secret: secret_pb2.Secret) -> str:
    chain = secret.tls_certificate.certificate_chain.inline_bytes.decode()
    return pki.leaf_of(chain).subject.rfc4514_string()


async def ask(conn: AdsConnection, namespace: str, wanted: list[str]):  # type: ignore[no-untyped-def]
    await conn.send(delta_request(SECRET, wanted, node_message=gateway_node(namespace)))
    return await conn.recv()


def unpacked(response) -> dict[str, secret_pb2.Secret]:  # type: ignore[no-untyped-def]
    out = {}
    for r in response.resources:
        secret = secret_pb2.Secret()
        r.resource.Unpack(secret)
        out[r.name] = secret
    return out


async def test_a_gateway_in_the_secrets_namespace_gets_its_certificate_and_ca(
    secured: ControlPlane,
) -> None:
    async with AdsConnection(secured.target, delta=True) as conn:
        wanted = ["kubernetes://bookinfo-cred", "kubernetes://bookinfo-cred-cacert"]
        response = await ask(conn, "ingress", wanted)
        assert names(response) == sorted(wanted)
        got = unpacked(response)
        assert leaf_cn(got["kubernetes://bookinfo-cred"]) == "CN=first"
        assert got["kubernetes://bookinfo-cred"].tls_certificate.private_key.inline_bytes
        ca = got["kubernetes://bookinfo-cred-cacert"].validation_context.trusted_ca
        assert pki.load_chain(ca.inline_bytes.decode())[0] == CA[0]


async def test_a_gateway_of_another_namespace_does_not_get_the_secret(
    secured: ControlPlane,
) -> None:
    async with AdsConnection(secured.target, delta=True) as conn:
        wanted = [
            "kubernetes://bookinfo-cred",
            "kubernetes://ingress/bookinfo-cred",
            "kubernetes://bookinfo-cred-cacert",
            "default",
        ]
        response = await ask(conn, "other", wanted)
        # Its own workload certificate only: no credential of namespace "ingress".
        assert names(response) == ["default"]


async def test_a_rotated_secret_is_pushed_to_the_gateway_holding_it(
    secured: ControlPlane,
) -> None:
    async with AdsConnection(secured.target, delta=True) as conn:
        response = await ask(conn, "ingress", ["kubernetes://bookinfo-cred"])
        assert leaf_cn(unpacked(response)["kubernetes://bookinfo-cred"]) == "CN=first"
        await ack(conn, response)
        secured.apply(pki.tls_secret_yaml("bookinfo-cred", "ingress", *ROTATED, CA[0]))
        pushed = await conn.recv()
        assert names(pushed) == ["kubernetes://bookinfo-cred"]
        assert leaf_cn(unpacked(pushed)["kubernetes://bookinfo-cred"]) == "CN=second"


async def test_the_cacert_secret_form_serves_the_ca_of_the_separate_secret(
    secured: ControlPlane,
) -> None:
    other_ca = pki.current_ca("clients root")
    secured.apply(
        pki.tls_secret_yaml("plain-cred", "ingress", *CERT)
        + "---\n"
        + pki.tls_secret_yaml("plain-cred-cacert", "ingress", ca=other_ca[0], generic=True)
    )
    async with AdsConnection(secured.target, delta=True) as conn:
        response = await ask(conn, "ingress", ["kubernetes://plain-cred-cacert"])
        ca = unpacked(response)["kubernetes://plain-cred-cacert"].validation_context.trusted_ca
        assert pki.load_chain(ca.inline_bytes.decode())[0] == other_ca[0]


async def test_a_proxy_without_a_proved_identity_gets_no_credential(tmp_path: Path) -> None:
    secrets = SecretCache(load_ca(tmp_path / "ca", "cluster.local", 3600.0))
    async with serving({SECRET: secrets}) as control_plane:  # claims are not proofs
        secrets.serve_credentials(GatewayCredentials(control_plane.store))
        control_plane.apply(CREDENTIAL)
        async with AdsConnection(control_plane.target, delta=True) as conn:
            await conn.send(
                delta_request(
                    SECRET, ["kubernetes://bookinfo-cred"], node_message=gateway_node("ingress")
                )
            )
            try:
                response = await conn.recv(0.5)
            except TimeoutError:
                return
            assert names(response) == []


async def test_a_sidecar_in_the_secrets_namespace_gets_no_credential(
    secured: ControlPlane,
) -> None:
    sidecar = node(
        "sidecar~127.0.6.121~app-1.ingress~ingress.svc.cluster.local",
        {"NAMESPACE": "ingress", "SERVICE_ACCOUNT": "app"},
    )
    async with AdsConnection(secured.target, delta=True) as conn:
        await conn.send(
            delta_request(SECRET, ["kubernetes://bookinfo-cred", "default"], node_message=sidecar)
        )
        assert names(await conn.recv()) == ["default"]


# ---- Gateway API: a certificateRef to another namespace's Secret, granted ------------------

SHARED = pki.tls_secret_yaml("shared-cert", "certs", *CERT)
EDGE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: ingress}
spec:
  gatewayClassName: istio
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls: {mode: Terminate, certificateRefs: [{name: shared-cert, namespace: certs}]}
"""
GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: ingress-gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: ingress}]
  to: [{group: "", kind: Secret, name: shared-cert}]
"""
SHARED_SDS = "kubernetes-gateway://certs/shared-cert"


async def test_a_granted_secret_of_another_namespace_is_served_while_the_grant_holds(
    secured: ControlPlane,
) -> None:
    secured.apply(SHARED + "---\n" + EDGE)
    async with AdsConnection(secured.target, delta=True) as conn:
        # No ReferenceGrant yet: the Gateway's namespace may not have it.
        response = await ask(conn, "ingress", [SHARED_SDS, "default"])
        assert names(response) == ["default"]
        await ack(conn, response)
        secured.apply(GRANT)
        pushed = await conn.recv()
        assert names(pushed) == [SHARED_SDS]
        assert leaf_cn(unpacked(pushed)[SHARED_SDS]) == "CN=first"
        await ack(conn, pushed)
        secured.delete(GRANT)
        revoked = await conn.recv()
        assert list(revoked.removed_resources) == [SHARED_SDS]


async def test_a_grant_serves_only_the_gateways_namespace_it_names(
    secured: ControlPlane,
) -> None:
    secured.apply(SHARED + "---\n" + EDGE + "---\n" + GRANT)
    async with AdsConnection(secured.target, delta=True) as conn:
        # A gateway of another namespace asking for the same name gets nothing of it.
        assert names(await ask(conn, "other", [SHARED_SDS, "default"])) == ["default"]
    async with AdsConnection(secured.target, delta=True) as conn:
        assert names(await ask(conn, "ingress", [SHARED_SDS])) == [SHARED_SDS]
