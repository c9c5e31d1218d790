"""SDS over ADS with a Python ADS client against the real grpc.aio xDS server: secrets for the
identity the token proves, nothing for a claim the token does not back, renewal pushed at about
half-life, and the CertificateService served on the same port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from controlplane.app import MeshSecurity, enable_security, obtain_token
from controlplane.cache import CacheMux, CompiledCache
from controlplane.compile.resources import SECRET
from controlplane.protos_gen.ca.v1 import ca_pb2, ca_pb2_grpc
from controlplane.store import Store
from controlplane.xds.server import XdsServer
from tests.support.pki import uri_sans

pytestmark = pytest.mark.timeout(60)


@dataclass
class Served:
    port: int
    security: MeshSecurity
    ca_dir: Path
    hub: CompiledCache

    def token(self, service_account: str, namespace: str = "default") -> str:
        return obtain_token(self.ca_dir, namespace, service_account)


@asynccontextmanager
async def serving(
    tmp_path: Path, *, ttl: float = 3600.0, require_token: bool = False
) -> AsyncIterator[Served]:
    hub = CompiledCache(Store(), debounce=0.01)
    ca_dir = tmp_path / "ca"
    security = enable_security(ca_dir=ca_dir, workload_ttl=ttl, require_token=require_token)
    xds = XdsServer(
        CacheMux(hub, {SECRET: security.provider}),
        authenticator=security.authenticator,
        services=[security.certificates],
    )
    hub.start()
    port = await xds.start("127.0.0.1", 0)
    security.start()
    try:
        yield Served(port, security, ca_dir, hub)
    finally:
        await security.stop()
        await xds.stop(grace=0)
        await hub.stop()


def node(service_account: str, namespace: str = "default") -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update(
        {"NAMESPACE": namespace, "SERVICE_ACCOUNT": service_account, "LOCAL_OUTBOUND_PORT": "15001"}
    )
    return base_pb2.Node(
        id=f"sidecar~127.0.7.30~{service_account}-1.{namespace}~{namespace}.svc.cluster.local",
        metadata=metadata,
    )


class AdsClient:
    """A minimal SotW ADS client subscribed to the two mesh secrets."""

    def __init__(self, port: int, token: str | None) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        metadata = [("authorization", f"Bearer {token}")] if token else None
        self.call = stub.StreamAggregatedResources(metadata=metadata)

    async def subscribe(self, who: base_pb2.Node) -> None:
        await self.call.write(
            discovery_pb2.DiscoveryRequest(
                node=who, type_url=SECRET, resource_names=["default", "ROOTCA"]
            )
        )

    async def read(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse | None:
        response = await asyncio.wait_for(self.call.read(), timeout)
        if response is grpc.aio.EOF:
            return None
        return response

    async def ack(self, response: discovery_pb2.DiscoveryResponse) -> None:
        await self.call.write(
            discovery_pb2.DiscoveryRequest(
                type_url=SECRET,
                resource_names=["default", "ROOTCA"],
                version_info=response.version_info,
                response_nonce=response.nonce,
            )
        )

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def secrets(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for resource in response.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        out[secret.name] = secret
    return out


def leaf(secret: secret_pb2.Secret) -> x509.Certificate:
    return x509.load_pem_x509_certificates(secret.tls_certificate.certificate_chain.inline_bytes)[0]


async def test_a_proxy_gets_default_and_rootca_for_the_identity_its_token_proves(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as served:
        client = AdsClient(served.port, served.token("payment"))
        try:
            await client.subscribe(node("payment"))
            response = await client.read()
            assert response is not None
            found = secrets(response)
            assert set(found) == {"default", "ROOTCA"}
            cert = leaf(found["default"])
            assert uri_sans(cert) == ["spiffe://cluster.local/ns/default/sa/payment"]
            key = serialization.load_pem_private_key(
                found["default"].tls_certificate.private_key.inline_bytes, None
            )
            assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
            root = x509.load_pem_x509_certificate(
                found["ROOTCA"].validation_context.trusted_ca.inline_bytes
            )
            assert cert.verify_directly_issued_by(root) is None
            assert (root.public_bytes(serialization.Encoding.PEM)).decode() == (
                served.ca_dir / "root-cert.pem"
            ).read_text()
        finally:
            await client.close()


async def test_a_claim_the_token_does_not_back_gets_nothing_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path) as served:
        client = AdsClient(served.port, served.token("web"))
        try:
            await client.subscribe(node("payment"))
            assert await client.read() is None  # the stream is closed without a response
        finally:
            await client.close()
        assert served.security.provider.issued == 0
    assert (
        "claims service account default/payment but its token proves "
        "spiffe://cluster.local/ns/default/sa/web; refused, no certificate issued"
    ) in caplog.text


async def test_a_forged_token_is_refused(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        good = served.token("payment")
        head, claims, _ = good.split(".")
        client = AdsClient(served.port, f"{head}.{claims}.AAAA")
        try:
            await client.subscribe(node("payment"))
            assert await client.read() is None
        finally:
            await client.close()


async def test_a_proxy_without_a_token_gets_no_secret(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        client = AdsClient(served.port, None)
        try:
            await client.subscribe(node("payment"))
            response = await client.read()
            assert response is not None and list(response.resources) == []
        finally:
            await client.close()
        assert served.security.provider.issued == 0


async def test_require_token_refuses_a_proxy_without_one(tmp_path: Path) -> None:
    async with serving(tmp_path, require_token=True) as served:
        client = AdsClient(served.port, None)
        try:
            await client.subscribe(node("payment"))
            assert await client.read() is None
        finally:
            await client.close()


async def test_the_renewed_certificate_is_pushed_at_about_half_life(tmp_path: Path) -> None:
    ttl = 2.0
    async with serving(tmp_path, ttl=ttl) as served:
        client = AdsClient(served.port, served.token("payment"))
        try:
            await client.subscribe(node("payment"))
            first = await client.read()
            assert first is not None
            await client.ack(first)
            loop = asyncio.get_running_loop()
            started = loop.time()
            second = await client.read(timeout=ttl * 2)
            waited = loop.time() - started
            assert second is not None
            old, new = leaf(secrets(first)["default"]), leaf(secrets(second)["default"])
            assert new.serial_number != old.serial_number
            assert uri_sans(new) == uri_sans(old)
            # Half of (2 s + 0.2 s back-dating), less up to 10 % jitter, before expiry.
            assert waited < ttl * 0.9
            assert new.not_valid_after_utc >= old.not_valid_after_utc  # X.509 has 1 s resolution
            # SotW may send only what changed for SDS (as for EDS/RDS): the root did not.
            assert set(secrets(second)) == {"default"}
        finally:
            await client.close()


async def test_the_certificate_service_signs_a_csr_for_the_callers_identity(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as served:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = ca_pb2_grpc.CertificateServiceStub(channel)  # type: ignore[no-untyped-call]
            metadata = [("authorization", f"Bearer {served.token('grpc-client')}")]
            response = await stub.CreateCertificate(
                ca_pb2.CertificateRequest(csr_pem=csr), metadata=metadata
            )
            assert response.spiffe_id == "spiffe://cluster.local/ns/default/sa/grpc-client"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.CreateCertificate(ca_pb2.CertificateRequest(csr_pem=csr))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_debug_output_of_a_secret_never_shows_the_private_key() -> None:
    from controlplane.compile.sds import certificate_secret, redacted

    shown = redacted(certificate_secret("CHAIN", "-----BEGIN PRIVATE KEY-----secret"))
    assert shown["tlsCertificate"]["privateKey"] == {"inlineBytes": "[redacted]"}
    assert "secret" not in str(shown)
    assert shown["name"] == "default"
