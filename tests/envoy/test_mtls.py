"""Mutual TLS between real Envoy sidecars: SPIFFE certificates from the mesh CA over SDS,
PeerAuthentication STRICT/PERMISSIVE seen on the wire, automatic mTLS between sidecars."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.app import obtain_token
from controlplane.testing.traffic import send
from tests.envoy.zero_trust import (
    WORKLOADS,
    ZeroTrustMesh,
    peer_authentication,
    plaintext_exchange,
    served_certificate,
    spiffe_ids,
    start_zero_trust_mesh,
)
from tests.support import meshes

REQUEST = b"POST /api/v1/charge HTTP/1.1\r\nHost: payment\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture(scope="module")
def zt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZeroTrustMesh]:
    mesh = start_zero_trust_mesh(tmp_path_factory.mktemp("mtls"))
    try:
        yield mesh
    finally:
        mesh.mesh.stop()


def test_every_sidecar_serves_a_certificate_naming_its_own_service_account(
    zt: ZeroTrustMesh, tmp_path: Path
) -> None:
    client = zt.client_certificate(tmp_path)
    for name, (pod, _) in WORKLOADS.items():
        cert = served_certificate(pod, zt.app_port, zt.root_cert, client)
        assert spiffe_ids(cert) == [f"spiffe://cluster.local/ns/default/sa/{name}"]


def test_sidecars_talk_mtls_to_each_other_automatically(zt: ZeroTrustMesh) -> None:
    before = zt.sidecars["order-service"].envoy.stat(
        "cluster.outbound|9080||payment.default.svc.cluster.local.ssl.handshake"
    )
    status, _ = zt.call("order-service", "GET", "/")
    assert status == 200
    assert (
        zt.apps["payment"]
        .requests[-1]
        .headers.get("x-forwarded-client-cert", "")
        .find("URI=spiffe://cluster.local/ns/default/sa/order-service")
        >= 0
    )
    after = zt.sidecars["order-service"].envoy.stat(
        "cluster.outbound|9080||payment.default.svc.cluster.local.ssl.handshake"
    )
    assert after >= before  # a pooled connection may be reused; one handshake at least once
    assert after >= 1


def test_permissive_lets_a_plaintext_client_through_and_strict_refuses_it(
    zt: ZeroTrustMesh, tmp_path: Path
) -> None:
    pod = WORKLOADS["payment"][0]
    # PERMISSIVE (no policy): plaintext HTTP straight to the pod address is answered.
    answer = plaintext_exchange(pod, zt.app_port, REQUEST)
    assert answer.startswith(b"HTTP/1.1 200")
    served = zt.apps["payment"].count()

    zt.write("peer-authentication.yaml", peer_authentication("STRICT"))
    try:
        refused_before = zt.sidecars["payment"].envoy.stat(
            f"listener.{pod}_{zt.app_port}.no_filter_chain_match"
        )
        answer = plaintext_exchange(pod, zt.app_port, REQUEST)
        assert answer == b""  # closed without a byte of HTTP: no chain for plaintext
        assert zt.apps["payment"].count() == served
        refused_after = zt.sidecars["payment"].envoy.stat(
            f"listener.{pod}_{zt.app_port}.no_filter_chain_match"
        )
        assert refused_after == refused_before + 1
        # A TLS client without a mesh certificate fails the handshake.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cafile=str(zt.root_cert))
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with socket.create_connection((pod, zt.app_port), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(REQUEST)
                    if not tls.recv(1024):
                        raise ConnectionResetError("closed")
        # Sidecars with certificates still get through.
        assert zt.call("order-service", "GET", "/")[0] == 200
        client = zt.client_certificate(tmp_path)
        cert = served_certificate(pod, zt.app_port, zt.root_cert, client)
        assert spiffe_ids(cert) == ["spiffe://cluster.local/ns/default/sa/payment"]
    finally:
        zt.remove("peer-authentication.yaml")
    assert plaintext_exchange(pod, zt.app_port, REQUEST).startswith(b"HTTP/1.1 200")


def test_disable_at_the_destination_turns_client_mtls_off(zt: ZeroTrustMesh) -> None:
    stat = "cluster.outbound|9080||payment.default.svc.cluster.local.ssl.handshake"
    zt.write("peer-authentication.yaml", peer_authentication("DISABLE"))
    try:
        before = zt.sidecars["web"].envoy.stat(stat)
        status, _ = zt.call("web", "GET", "/")
        assert status == 200
        assert zt.sidecars["web"].envoy.stat(stat) == before
        assert "x-forwarded-client-cert" not in zt.apps["payment"].requests[-1].headers
    finally:
        zt.remove("peer-authentication.yaml")


def _wait_for_log(zt: ZeroTrustMesh, text: str, timeout: float = 15.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = zt.mesh.control_plane.log_text()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(
        f"{text!r} not in the control plane log:\n{zt.mesh.control_plane.log_tail()}"
    )


def test_a_proxy_claiming_another_identity_receives_no_secret(zt: ZeroTrustMesh) -> None:
    web_token = obtain_token(zt.ca_dir, "default", "web")
    impostor = zt.mesh.sidecar(
        "sidecar~127.0.7.20~impostor-1.default~default.svc.cluster.local",
        labels={"app": "order-service"},
        service_account="order-service",
        xds_token=web_token,
        wait=False,
    )
    _wait_for_log(
        zt,
        "claims service account default/order-service but its token proves "
        "spiffe://cluster.local/ns/default/sa/web; refused, no certificate issued",
    )
    time.sleep(1.0)  # Envoy retries; it must still have nothing
    assert impostor.envoy.admin_json("/certs") == {"certificates": []}
    dump = impostor.envoy.admin_json("/config_dump?resource=dynamic_active_secrets")
    assert dump.get("configs", []) == []
    assert zt.mesh.debug.proxy(impostor.node_id) is None
    impostor.envoy.stop()


def test_a_proxy_without_a_token_is_served_plaintext_only(zt: ZeroTrustMesh) -> None:
    anonymous = zt.mesh.sidecar(
        "sidecar~127.0.7.21~anonymous-1.default~default.svc.cluster.local",
        labels={"app": "anonymous"},
        service_account="anonymous",
    )
    try:
        assert anonymous.envoy.admin_json("/certs") == {"certificates": []}
        state = zt.mesh.debug.proxy(anonymous.node_id)
        assert state is not None and "sds" not in state["types"]
        # PERMISSIVE: its plaintext request gets through, without a client certificate.
        status, _, _ = send(anonymous.outbound_port, "payment:9080", "/")
        assert status == 200
        assert "x-forwarded-client-cert" not in zt.apps["payment"].requests[-1].headers
        zt.write("peer-authentication.yaml", peer_authentication("STRICT"))
        try:
            status, _, _ = send(anonymous.outbound_port, "payment:9080", "/")
            assert status == 503  # payment refuses its plaintext connection
        finally:
            zt.remove("peer-authentication.yaml")
    finally:
        anonymous.envoy.stop()


def client_hello(alpn: list[str] | None = None) -> bytes:
    """The first bytes a TLS client sends (a ClientHello), without a certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="payment")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_permissive_passes_tls_that_is_not_the_meshs_through_to_the_app(
    zt: ZeroTrustMesh,
) -> None:
    pod = WORKLOADS["payment"][0]
    # The app speaks plain HTTP, so the ClientHello it receives untouched is a bad request
    # (Python's server answers an unparsable request line in HTTP/0.9 style: a bare page).
    answer = plaintext_exchange(pod, zt.app_port, client_hello())
    assert b"Error code explanation: 400" in answer
    # With the mesh's ALPN the sidecar terminates it instead: a TLS alert (no client
    # certificate follows), not HTTP.
    with socket.create_connection((pod, zt.app_port), timeout=5) as raw:
        raw.sendall(client_hello(["istio"]))
        first = raw.recv(5)
    assert first[:1] == b"\x16"  # a TLS handshake record: the sidecar's ServerHello


def test_port_level_mtls_opens_one_port_of_a_strict_workload(zt: ZeroTrustMesh) -> None:
    pod = WORKLOADS["payment"][0]
    zt.write(
        "peer-authentication.yaml",
        meshes.resource(
            "PeerAuthentication",
            "payment",
            f"""
          selector: {{matchLabels: {{app: payment}}}}
          mtls: {{mode: STRICT}}
          portLevelMtls:
            {zt.tcp_port}: {{mode: DISABLE}}
        """,
        ),
    )
    try:
        assert plaintext_exchange(pod, zt.app_port, REQUEST) == b""  # STRICT port
        with socket.create_connection((pod, zt.tcp_port), timeout=5) as raw:
            raw.sendall(b"hello\n")
            assert raw.recv(64) == b"ledger hello\n"  # the DISABLE port, plaintext
        # Clients follow: plaintext to the ledger port, mTLS to the HTTP one.
        assert zt.ledger("order-service") == "ledger hello"
        assert zt.call("order-service", "GET", "/")[0] == 200
    finally:
        zt.remove("peer-authentication.yaml")
