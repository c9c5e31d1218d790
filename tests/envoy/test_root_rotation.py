"""The root-rotation drill: the mesh's root CA is replaced under steady traffic between real
sidecars (STRICT mTLS, every request on a new upstream connection, so every request is a new
handshake), in the three steps of ``controlplane.ca.rotation.root_rotation_steps``, each
written to the CA directory as an operator would and reloaded by the running control plane.
Not one request fails; at the end the sidecars serve certificates of the new root only, and a
certificate of the old root is refused."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.ca import CertificateAuthority, DirectoryKeyStore, Identity
from controlplane.ca.root import create_root_bundle
from controlplane.ca.rotation import root_rotation_steps
from tests.envoy.zero_trust import (
    PAYMENT_POLICY,
    WORKLOADS,
    ZeroTrustMesh,
    peer_authentication,
    served_certificate,
    start_zero_trust_mesh,
)
from tests.support import meshes

CLUSTER = "cluster.outbound|9080||payment.default.svc.cluster.local"
ONE_REQUEST_PER_CONNECTION = meshes.resource(
    "DestinationRule",
    "payment",
    """
  host: payment
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
""",
)


class Traffic(threading.Thread):
    """POSTs through the order-service sidecar until stopped; counts every outcome."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.is_set():
            try:
                conn.request("POST", "/api/v1/charge", headers={"Host": "payment:9080"})
                response = conn.getresponse()
                response.read()
                self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            time.sleep(0.005)
        conn.close()


def _sds_versions(zt: ZeroTrustMesh) -> dict[str, str]:
    return {
        s.node_id: zt.mesh.debug.type_state(s.node_id, "sds").get("acked_version") or ""
        for s in zt.sidecars.values()
    }


def _apply_step(zt: ZeroTrustMesh, bundle_step: object) -> None:
    """Write one step's bundle, then wait until every sidecar ACKed the new secrets."""
    before = _sds_versions(zt)
    DirectoryKeyStore(zt.ca_dir).save(bundle_step)  # type: ignore[arg-type]
    for node_id, version in before.items():
        zt.mesh.debug.wait_synced(node_id, types=("sds",), timeout=20, newer_than={"sds": version})
    time.sleep(1.0)  # traffic on the new step


def _issuer(cert: x509.Certificate, roots: dict[str, x509.Certificate]) -> str:
    for name, root in roots.items():
        try:
            cert.verify_directly_issued_by(root)
            return name
        except Exception:
            continue
    return "unknown"


@pytest.mark.slow
def test_root_rotation_under_traffic_fails_no_request(tmp_path: Path) -> None:
    zt = start_zero_trust_mesh(tmp_path)
    try:
        zt.write("peer-authentication.yaml", peer_authentication("STRICT"))
        zt.write("payment-policy.yaml", PAYMENT_POLICY)
        order = zt.sidecars["order-service"]
        cds = zt.mesh.debug.type_state(order.node_id, "cds").get("acked_version") or ""
        zt.mesh.write("payment-dr.yaml", ONE_REQUEST_PER_CONNECTION)
        zt.mesh.debug.wait_synced(order.node_id, timeout=15, newer_than={"cds": cds})
        old = DirectoryKeyStore(zt.ca_dir).load()
        assert old is not None
        new = create_root_bundle(datetime.now(UTC))
        roots = {
            "old": x509.load_pem_x509_certificate(old.root_cert_pem.encode()),
            "new": x509.load_pem_x509_certificate(new.root_cert_pem.encode()),
        }
        old_client = _client_cert(tmp_path / "old", CertificateAuthority(old))
        new_client = _client_cert(tmp_path / "new", CertificateAuthority(new))
        (tmp_path / "old-root.pem").write_text(old.root_cert_pem)
        (tmp_path / "new-root.pem").write_text(new.root_cert_pem)
        pod = WORKLOADS["payment"][0]
        handshakes = order.envoy.stat(f"{CLUSTER}.ssl.handshake")

        traffic = Traffic(order.outbound_port)
        traffic.start()
        time.sleep(1.0)
        both = tmp_path / "both-roots.pem"
        both.write_text(old.root_cert_pem + new.root_cert_pem)
        served = [_issuer(served_certificate(pod, zt.app_port, both, old_client), roots)]
        steps = root_rotation_steps(old, new)
        for step in steps:
            _apply_step(zt, step)
            # what payment's sidecar presents now, read from a real handshake
            client = new_client if step is steps[2] else old_client
            served.append(_issuer(served_certificate(pod, zt.app_port, both, client), roots))
        traffic.stop.set()
        traffic.join(10)

        new_handshakes = order.envoy.stat(f"{CLUSTER}.ssl.handshake") - handshakes
        print(  # the figures of the drill, shown with `pytest -s`
            f"root rotation drill: {traffic.total} requests, {len(traffic.errors)} failed, "
            f"statuses {traffic.statuses}, {new_handshakes} new mTLS handshakes, "
            f"served certificates by root per step {served}"
        )
        assert not traffic.errors, traffic.errors[:5]
        assert set(traffic.statuses) == {200}, traffic.statuses
        assert traffic.total > 200
        assert new_handshakes >= traffic.total * 0.9  # each request a new handshake
        # before, step 1 (old signer, both roots), step 2 (new signer), step 3 (new only)
        assert served == ["old", "old", "new", "new"]
        # the old root is gone from the sidecars' trust: payment's sidecar answers a peer with
        # a new-root certificate (its policy's 403: the handshake passed) and refuses one with
        # an old-root certificate (TLS 1.3: the alert arrives after the client's handshake)
        new_root = tmp_path / "new-root.pem"
        assert _exchange(pod, zt.app_port, new_root, new_client).startswith(b"HTTP/1.1 403")
        assert _exchange(pod, zt.app_port, new_root, old_client) == b"refused"
        status = zt.mesh.debug.get("/debug/ca")
        assert [r["serial"] for r in status["roots"]] == [format(roots["new"].serial_number, "x")]
        assert status["reloads"] == 3
    finally:
        zt.mesh.stop()


def _exchange(host: str, port: int, root: Path, client: tuple[Path, Path]) -> bytes:
    """One POST over mTLS as ``client``; the response's first bytes, or b"refused"."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(root))
    context.load_cert_chain(str(client[0]), str(client[1]))
    context.set_alpn_protocols(["istio-peer-exchange", "istio"])
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                tls.sendall(
                    b"POST /api/v1/charge HTTP/1.1\r\nHost: payment\r\nContent-Length: 0\r\n\r\n"
                )
                data = tls.recv(64)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b"refused"
    return data or b"refused"


def _client_cert(base: Path, ca: CertificateAuthority) -> tuple[Path, Path]:
    cert = ca.issue(Identity("cluster.local", "default", "tester"))
    chain, key = base.with_suffix(".pem"), base.with_suffix(".key")
    chain.write_text(cert.cert_chain_pem)
    key.write_text(cert.private_key_pem)
    return chain, key
