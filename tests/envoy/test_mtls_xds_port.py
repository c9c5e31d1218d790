"""The xDS port over TLS with the mesh root: a real Envoy bootstrapped by
`controlplane bootstrap --ca-dir --xds-tls` verifies the control plane's certificate, proves
its identity with its token, and gets its configuration and certificate."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.mesh import LocalMesh
from controlplane.testing.ports import free_port
from tests.support import meshes

NODE = "sidecar~127.0.7.40~reviews-1.default~default.svc.cluster.local"
RATINGS = meshes.join(
    meshes.service("ratings"),
    meshes.pod(
        "ratings-1",
        "127.0.7.41",
        app="ratings",
        labels={"security.istio.io/tlsMode": "istio"},
        service_account="ratings",
    ),
)


def test_envoy_reaches_a_tls_xds_port_with_its_token(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    mesh = LocalMesh(tmp_path, ["--ca-dir", str(ca_dir), "--xds-tls", "--require-token"])
    with mesh:
        mesh.write("ratings.yaml", RATINGS)  # a destination with a sidecar: auto mTLS needs SDS
        # What the xDS port serves, read from a TLS handshake verified with the mesh root.
        context = ssl.create_default_context(cafile=str(ca_dir / "root-cert.pem"))
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", mesh.xds_port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
            "spiffe://cluster.local/ns/istio-system/sa/controlplane"
        ]
        # A plaintext client gets no HTTP/2 answer from a TLS port.
        with socket.create_connection(("127.0.0.1", mesh.xds_port), timeout=5) as raw:
            raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            raw.settimeout(5)
            try:
                reply = raw.recv(1024)
            except (ConnectionResetError, TimeoutError):
                reply = b""
            assert not reply.startswith(b"\x00\x00")  # no HTTP/2 SETTINGS frame

        out = tmp_path / "envoy.yaml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "controlplane",
                "bootstrap",
                "--node-id",
                NODE,
                "--service-account",
                "reviews",
                "--labels",
                "app=reviews",
                "--xds-port",
                str(mesh.xds_port),
                "--outbound-port",
                str(free_port()),
                "--admin-port",
                str(free_port()),
                "--ca-dir",
                str(ca_dir),
                "--token-file",
                str(tmp_path / "reviews.token"),
                "--xds-tls",
                "-o",
                str(out),
            ],
            check=True,
            timeout=30,
        )
        # Both carry the bearer token: owner-only (the Envoy below reads them as we run it).
        assert out.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "reviews.token").stat().st_mode & 0o777 == 0o600
        bootstrap = yaml.safe_load(out.read_text())
        xds = bootstrap["static_resources"]["clusters"][0]
        assert xds["transport_socket"]["name"] == "envoy.transport_sockets.tls"
        with EnvoyProcess(bootstrap, tmp_path, name="reviews") as envoy:
            mesh.debug.wait_synced(NODE, types=("cds", "lds", "sds"), timeout=30)
            envoy.wait_live()
            certs = envoy.admin_json("/certs")["certificates"]
            uris = [
                san["uri"]
                for entry in certs
                for chain in entry.get("cert_chain", [])
                for san in chain.get("subject_alt_names", [])
                if "uri" in san
            ]
            assert "spiffe://cluster.local/ns/default/sa/reviews" in uris
            assert envoy.stat("cluster.xds-grpc.ssl.handshake") >= 1


@pytest.mark.parametrize("flag", ["--xds-tls", "--require-token"])
def test_tls_and_tokens_need_a_ca(tmp_path: Path, flag: str) -> None:
    config = tmp_path / "config"
    config.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "serve", "--config-dir", str(config), flag],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "need --ca-dir" in result.stderr
