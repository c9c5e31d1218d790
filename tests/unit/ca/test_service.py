"""CertificateService over a real grpc.aio server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.ca import (
    CABundle,
    CertificateAuthority,
    Identity,
    InvalidToken,
    issue_token,
    verify_token,
)
from controlplane.ca.root import create_root_bundle
from controlplane.ca.service import CertificateServicer
from controlplane.protos_gen.ca.v1 import ca_pb2, ca_pb2_grpc
from tests.support.pki import key_pem, load_chain, make_ca, make_csr, pem, uri_sans

AUDIENCE = "controlplane-ca"
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _bearer_authenticator(ca: CertificateAuthority) -> Callable[[Context], Identity]:
    def authenticate(context: Context) -> Identity:
        metadata = dict(context.invocation_metadata() or ())
        header = str(metadata.get("authorization", ""))
        if not header.startswith("Bearer "):
            raise InvalidToken("no bearer token in the authorization header")
        return verify_token(ca.token_key, header.removeprefix("Bearer "), AUDIENCE)

    return authenticate


@asynccontextmanager
async def _serving(
    servicer: CertificateServicer,
) -> AsyncIterator[ca_pb2_grpc.CertificateServiceStub]:
    server = grpc.aio.server()
    servicer.add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield ca_pb2_grpc.CertificateServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await server.stop(grace=None)


def _metadata(
    ca: CertificateAuthority, namespace: str, service_account: str
) -> list[tuple[str, str]]:
    token = issue_token(ca.token_key, namespace, service_account, AUDIENCE, timedelta(minutes=5))
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
def live_ca() -> CertificateAuthority:
    return CertificateAuthority(create_root_bundle(datetime.now(UTC)))


@pytest.fixture
async def stub(live_ca: CertificateAuthority) -> AsyncIterator[ca_pb2_grpc.CertificateServiceStub]:
    async with _serving(CertificateServicer(live_ca, _bearer_authenticator(live_ca))) as stub:
        yield stub


@pytest.fixture(scope="module")
def client_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def test_csr_is_signed_for_the_authenticated_identity_and_chains_to_the_root(
    live_ca: CertificateAuthority,
    stub: ca_pb2_grpc.CertificateServiceStub,
    client_key: ec.EllipticCurvePrivateKey,
) -> None:
    spiffe_id = "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    csr = make_csr(client_key, sans=[x509.UniformResourceIdentifier(spiffe_id)])

    response = await stub.CreateCertificate(
        ca_pb2.CertificateRequest(csr_pem=csr), metadata=_metadata(live_ca, "bookinfo", "reviews")
    )

    (leaf_pem,) = response.cert_chain_pem
    (leaf,) = load_chain(leaf_pem)
    (root,) = load_chain("".join(response.root_certs_pem))
    assert uri_sans(leaf) == [spiffe_id]
    assert response.spiffe_id == spiffe_id
    assert leaf.public_key() == client_key.public_key()
    leaf.verify_directly_issued_by(root)
    assert root == live_ca.certificate
    assert response.not_after.ToDatetime(tzinfo=UTC) == leaf.not_valid_after_utc
    assert response.not_before.ToDatetime(tzinfo=UTC) == leaf.not_valid_before_utc


async def test_csr_for_another_identity_is_refused_with_permission_denied(
    live_ca: CertificateAuthority,
    stub: ca_pb2_grpc.CertificateServiceStub,
    client_key: ec.EllipticCurvePrivateKey,
) -> None:
    other = "spiffe://cluster.local/ns/kube-system/sa/admin"
    csr = make_csr(client_key, sans=[x509.UniformResourceIdentifier(other)])

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateCertificate(
            ca_pb2.CertificateRequest(csr_pem=csr),
            metadata=_metadata(live_ca, "bookinfo", "reviews"),
        )

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert other in (refused.value.details() or "")


async def test_caller_with_a_token_from_another_ca_is_unauthenticated(
    stub: ca_pb2_grpc.CertificateServiceStub, client_key: ec.EllipticCurvePrivateKey
) -> None:
    stranger = CertificateAuthority(create_root_bundle(datetime.now(UTC)))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateCertificate(
            ca_pb2.CertificateRequest(csr_pem=make_csr(client_key)),
            metadata=_metadata(stranger, "bookinfo", "reviews"),
        )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature does not verify" in (refused.value.details() or "")


async def test_caller_without_a_token_is_unauthenticated(
    stub: ca_pb2_grpc.CertificateServiceStub, client_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateCertificate(ca_pb2.CertificateRequest(csr_pem=make_csr(client_key)))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("request_", "complaint"),
    [
        (ca_pb2.CertificateRequest(csr_pem="not a csr"), "not a PEM certificate signing request"),
        (ca_pb2.CertificateRequest(validity_seconds=-1), "must not be negative"),
    ],
)
async def test_malformed_request_is_an_invalid_argument(
    live_ca: CertificateAuthority,
    stub: ca_pb2_grpc.CertificateServiceStub,
    request_: ca_pb2.CertificateRequest,
    complaint: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateCertificate(request_, metadata=_metadata(live_ca, "bookinfo", "reviews"))

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("validity_seconds", "lifetime"),
    [
        (0, timedelta(hours=24)),
        (3600, timedelta(hours=1)),
        (2**62, timedelta(days=90)),
    ],
)
async def test_requested_validity_is_honoured_up_to_the_maximum(
    live_ca: CertificateAuthority,
    stub: ca_pb2_grpc.CertificateServiceStub,
    client_key: ec.EllipticCurvePrivateKey,
    validity_seconds: int,
    lifetime: timedelta,
) -> None:
    response = await stub.CreateCertificate(
        ca_pb2.CertificateRequest(csr_pem=make_csr(client_key), validity_seconds=validity_seconds),
        metadata=_metadata(live_ca, "bookinfo", "reviews"),
    )

    leaf = load_chain(response.cert_chain_pem[0])[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == lifetime + timedelta(minutes=1)


async def test_intermediate_ca_chain_is_returned_leaf_first_without_the_root(
    client_key: ec.EllipticCurvePrivateKey,
) -> None:
    now = datetime.now(UTC)
    root = make_ca("root", not_before=now - timedelta(days=1), not_after=now + timedelta(days=30))
    intermediate = make_ca(
        "intermediate",
        issuer=root,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=30),
    )
    ca = CertificateAuthority(
        CABundle(
            ca_cert_pem=pem(intermediate[0]),
            ca_key_pem=key_pem(intermediate[1]),
            cert_chain_pem=pem(intermediate[0]) + pem(root[0]),
            root_cert_pem=pem(root[0]),
        )
    )

    async with _serving(CertificateServicer(ca, _bearer_authenticator(ca))) as stub:
        response = await stub.CreateCertificate(
            ca_pb2.CertificateRequest(csr_pem=make_csr(client_key)),
            metadata=_metadata(ca, "bookinfo", "reviews"),
        )

    leaf_pem, intermediate_pem = response.cert_chain_pem
    load_chain(leaf_pem)[0].verify_directly_issued_by(intermediate[0])
    assert load_chain(intermediate_pem) == [intermediate[0]]
    assert [load_chain(p)[0] for p in response.root_certs_pem] == [root[0]]


async def test_async_authenticator_is_awaited(
    live_ca: CertificateAuthority, client_key: ec.EllipticCurvePrivateKey
) -> None:
    async def authenticate(context: Context) -> Identity:
        return Identity("cluster.local", "payments", "ledger")

    authenticator: Callable[[Context], Awaitable[Identity]] = authenticate
    async with _serving(CertificateServicer(live_ca, authenticator)) as stub:
        response = await stub.CreateCertificate(
            ca_pb2.CertificateRequest(csr_pem=make_csr(client_key))
        )

    assert response.spiffe_id == "spiffe://cluster.local/ns/payments/sa/ledger"
