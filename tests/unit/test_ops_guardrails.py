"""Certificate guardrails and watch liveness, on a control plane started in this process:
a root close to expiry is logged, shown on /debug/ca and exported as istiod's
citadel_server_* gauges; ``analyze --ca-dir`` reports the same finding; a watch that goes
quiet fails /healthz."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from controlplane.app import ControlPlane, Options
from controlplane.ca import DirectoryKeyStore, Identity
from controlplane.ca.root import create_root_bundle
from controlplane.cli.main import main
from controlplane.sources.files import DirectorySource, FileSource
from controlplane.sources.kube.watch import probe_liveness
from controlplane.store.liveness import WatchLiveness
from tests.support.prometheus import parse, value


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _fetch(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path)


def _ca_dir(path: Path, days: float) -> x509.Certificate:
    bundle = create_root_bundle(datetime.now(UTC), lifetime=timedelta(days=days))
    DirectoryKeyStore(path).save(bundle)
    return x509.load_pem_x509_certificate(bundle.root_cert_pem.encode())


# ---- the root's expiry ------------------------------------------------------------------


async def test_a_root_near_expiry_is_logged_shown_and_exported_then_escalates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    root = _ca_dir(ca_dir, days=20)
    caplog.set_level(logging.INFO)
    control_plane = ControlPlane(Options(xds_port=0, debug_port=0), DirectorySource(config, ca_dir))
    async with control_plane:
        side = control_plane.xds
        assert side is not None and side.security is not None
        port = side.debug_port
        for _ in range(50):
            if "CP0730" in caplog.text:
                break
            await asyncio.sleep(0.05)
        warnings = [r for r in caplog.records if "CP0730" in r.getMessage()]
        assert [r.levelno for r in warnings] == [logging.WARNING]
        assert "RootCertificateExpiresSoon" in warnings[0].getMessage()
        assert "expires in 20.0 days" in warnings[0].getMessage()

        status, body = await _fetch(port, "/debug/ca")
        shown = json.loads(body)
        assert status == 200 and shown["findings"][0].startswith("Warning [CP0730")
        # a workload certificate issued now: its expiry is exported per identity
        cert = side.security.provider.certs.get(Identity("cluster.local", "default", "web"))
        side.security.provider.secrets(Identity("cluster.local", "default", "web"))
        status, text = await _fetch(port, "/metrics")
        samples, types = parse(text)
        assert value(samples, "citadel_server_root_cert_expiry_timestamp") == pytest.approx(
            root.not_valid_after_utc.timestamp()
        )
        assert types["citadel_server_root_cert_expiry_timestamp"] == "gauge"
        left = value(samples, "citadel_server_root_cert_expiry_seconds")
        assert 20 * 86400 - 60 < left <= 20 * 86400
        assert value(
            samples,
            "controlplane_ca_workload_cert_expiry_timestamp_seconds",
            identity="spiffe://cluster.local/ns/default/sa/web",
        ) == pytest.approx(cert.not_after.timestamp())
        assert value(samples, "citadel_server_success_cert_issuance_count") >= 1

        # The operator puts in a root with 5 days left: reloaded, and now an Error.
        short = _ca_dir(ca_dir, days=5)
        for _ in range(100):
            if "CP0731" in caplog.text:
                break
            await asyncio.sleep(0.05)
        errors = [r for r in caplog.records if "CP0731" in r.getMessage()]
        assert [r.levelno for r in errors] == [logging.ERROR]
        status, text = await _fetch(port, "/metrics")
        samples, _ = parse(text)
        assert value(samples, "citadel_server_root_cert_expiry_timestamp") == pytest.approx(
            short.not_valid_after_utc.timestamp()
        )
        shown = json.loads((await _fetch(port, "/debug/ca"))[1])
        assert shown["reloads"] == 1 and shown["findings"][0].startswith("Error [CP0731")


async def test_a_root_far_from_expiry_has_no_finding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    _ca_dir(ca_dir, days=31)
    control_plane = ControlPlane(Options(xds_port=0, debug_port=0), DirectorySource(config, ca_dir))
    async with control_plane:
        assert control_plane.xds is not None
        shown = json.loads((await _fetch(control_plane.xds.debug_port, "/debug/ca"))[1])
        assert shown["findings"] == []
    assert "CP073" not in caplog.text


def test_analyze_reports_the_root_expiry_of_a_ca_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "empty.yaml").write_text("")
    _ca_dir(tmp_path / "soon", days=25)
    _ca_dir(tmp_path / "very-soon", days=3)
    assert main(["analyze", str(config), "--ca-dir", str(tmp_path / "soon")]) == 0
    out = capsys.readouterr().out
    assert "Warning [CP0730 RootCertificateExpiresSoon]" in out
    assert "root-cert.pem" in out and "expires in 25.0 days" in out
    assert main(["analyze", str(config), "--ca-dir", str(tmp_path / "very-soon")]) == 1
    assert "Error [CP0731 RootCertificateExpiresVerySoon]" in capsys.readouterr().out


# ---- watch liveness ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_watch_in_step_with_its_listing_is_alive() -> None:
    clock = Clock()
    liveness = WatchLiveness(stall_after=300, clock=clock)
    liveness.watching(["virtualservices"])
    liveness.event("virtualservices", "41")
    for _ in range(10):  # an hour with no event, listed every 5 minutes, nothing newer
        clock.now += 290
        assert liveness.listed("virtualservices", 41)
        assert liveness.stalled() == {}


def test_a_watch_behind_its_listing_stalls_until_an_event_arrives() -> None:
    clock = Clock()
    liveness = WatchLiveness(stall_after=300, clock=clock)
    liveness.watching(["virtualservices"])
    liveness.event("virtualservices", "41")
    clock.now += 200
    assert not liveness.listed("virtualservices", "57")  # the apiserver has something newer
    clock.now += 101
    stalled = liveness.stalled()
    assert list(stalled) == ["virtualservices"]
    assert "no event and no in-step listing for 301s (limit 300s)" in stalled["virtualservices"]
    assert "resourceVersion 57" in stalled["virtualservices"]
    assert "delivered up to 41" in stalled["virtualservices"]
    liveness.event("virtualservices", "57")
    assert liveness.stalled() == {}


def test_a_watch_that_never_delivers_stalls() -> None:
    clock = Clock()
    liveness = WatchLiveness(stall_after=60, clock=clock)
    liveness.watching(["pods"])
    clock.now += 59
    assert liveness.stalled() == {}
    clock.now += 2
    assert list(liveness.stalled()) == ["pods"]


def test_the_kube_probe_lists_only_quiet_kinds_and_a_failed_listing_proves_nothing() -> None:
    clock = Clock()
    liveness = WatchLiveness(stall_after=100, clock=clock)
    kinds = (("", "v1", "pods"), ("", "v1", "services"), ("", "v1", "secrets"))
    liveness.watching(p for _, _, p in kinds)
    newest = {"pods": 10, "services": 99}
    listed: list[str] = []

    def lister(group: str, version: str, plural: str) -> int | None:
        listed.append(plural)
        if plural == "secrets":
            raise RuntimeError("GET /api/v1/secrets: 500")
        return newest[plural]

    liveness.event("pods", 10)
    liveness.event("services", 20)
    clock.now += 40
    liveness.event("pods", 10)  # busy: not listed
    clock.now += 20
    assert probe_liveness(liveness, lister, kinds) == ["services"]
    assert listed == ["services", "secrets"]
    clock.now += 50
    # services: behind for 110s; secrets: its listing failed; pods: last event 70s ago
    assert sorted(liveness.stalled()) == ["secrets", "services"]


async def test_healthz_fails_when_the_file_watcher_goes_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    opts = Options(xds_port=0, debug_port=0, watch_stall_after=1.0)
    alive = ControlPlane(opts, DirectorySource(config))
    async with alive:
        assert alive.xds is not None
        await asyncio.sleep(1.5)
        assert await _fetch(alive.xds.debug_port, "/healthz") == (200, "ok\n")

    async def hangs(self: FileSource, *args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()  # the watch stream that never says anything again

    monkeypatch.setattr(FileSource, "run", hangs)
    quiet = ControlPlane(opts, DirectorySource(config))
    async with quiet:
        assert quiet.xds is not None
        port = quiet.xds.debug_port
        assert (await _fetch(port, "/healthz"))[0] == 200
        await asyncio.sleep(1.3)
        status, body = await _fetch(port, "/healthz")
        assert status == 503
        assert body.startswith("watch of files stalled: no event and no in-step listing")
        samples, _ = parse((await _fetch(port, "/metrics"))[1])
        assert value(samples, "controlplane_watch_stalled", kind="files") == 1
        assert value(samples, "controlplane_watch_last_refresh_age_seconds", kind="files") > 1
        assert (await _fetch(port, "/ready"))[0] == 200  # readiness is another question


# ---- root rotation, in process -----------------------------------------------------------


async def test_each_rotation_step_is_served_and_tokens_of_both_keys_hold(tmp_path: Path) -> None:
    from controlplane.app import obtain_token
    from controlplane.ca.rotation import root_rotation_steps

    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    opts = Options(xds_port=0, debug_port=0, xds_tls=True)
    control_plane = ControlPlane(opts, DirectorySource(config, ca_dir))
    async with control_plane:
        side = control_plane.xds
        assert side is not None and side.security is not None and side.security.guard
        security, guard = side.security, side.security.guard
        xds_port = side.xds_port
        for task in security.tasks:  # steps are applied by hand here, not by the poll
            if task.get_name() == "ca-guard":
                task.cancel()
        web = Identity("cluster.local", "default", "web")
        old_token = obtain_token(ca_dir, "default", "web")
        old = DirectoryKeyStore(ca_dir).load()
        assert old is not None
        new = create_root_bundle(datetime.now(UTC))
        old_root = x509.load_pem_x509_certificate(old.root_cert_pem.encode())
        new_root = x509.load_pem_x509_certificate(new.root_cert_pem.encode())
        issuers = []
        trusted = []
        for step in root_rotation_steps(old, new):
            DirectoryKeyStore(ca_dir).save(step)
            assert guard.reload(step)
            leaf = x509.load_pem_x509_certificate(
                security.provider.certs.get(web).cert_chain_pem.encode()
            )
            issuers.append(
                "new" if leaf.issuer == new_root.subject and _signed(leaf, new_root) else "old"
            )
            roots = x509.load_pem_x509_certificates(security.provider.ca.root_certs_pem.encode())
            trusted.append(sorted(("old" if r == old_root else "new") for r in roots))
            # the xDS port's own certificate follows the CA in service
            served = await asyncio.to_thread(_xds_certificate, xds_port, step.root_cert_pem)
            issuers.append("xds:" + ("new" if _signed(served, new_root) else "old"))
        assert issuers == ["old", "xds:old", "new", "xds:new", "new", "xds:new"]
        assert trusted == [["new", "old"], ["new", "old"], ["new"]]
        # bootstrap tokens: the new key's (minted now) and the old key's both authenticate
        new_token = obtain_token(ca_dir, "default", "web")
        assert new_token != old_token
        assert security.verify(new_token) == web
        assert security.verify(old_token) == web
        # a bundle that cannot sign is refused, and the CA in service stays
        broken = create_root_bundle(datetime.now(UTC))
        assert not guard.reload(replace(broken, ca_key_pem=old.ca_key_pem))
        assert guard.refused is not None and "not the private key" in guard.refused
        assert guard.describe()["reloads"] == 3


def _xds_certificate(port: int, roots_pem: str) -> x509.Certificate:
    """The certificate the xDS port presents in a handshake verified against ``roots_pem``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=roots_pem)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _signed(leaf: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(root)
    except Exception:
        return False
    return True


async def test_csrs_are_counted_under_istiods_citadel_names(tmp_path: Path) -> None:
    import grpc
    from cryptography.hazmat.primitives.asymmetric import ec

    from controlplane.app import obtain_token
    from controlplane.protos_gen.ca.v1 import ca_pb2, ca_pb2_grpc
    from tests.support.pki import make_csr

    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    control_plane = ControlPlane(Options(xds_port=0, debug_port=0), DirectorySource(config, ca_dir))
    async with control_plane:
        side = control_plane.xds
        assert side is not None
        token = obtain_token(ca_dir, "default", "web")
        csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{side.xds_port}") as channel:
            stub = ca_pb2_grpc.CertificateServiceStub(channel)  # type: ignore[no-untyped-call]
            request = ca_pb2.CertificateRequest(csr_pem=csr)
            await stub.CreateCertificate(request, metadata=[("authorization", f"Bearer {token}")])
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.CreateCertificate(request, metadata=[("authorization", "Bearer x")])
        samples, types = parse((await _fetch(side.debug_port, "/metrics"))[1])
        assert value(samples, "citadel_server_csr_count") == 2
        assert value(samples, "citadel_server_success_cert_issuance_count") == 1
        assert value(samples, "citadel_server_authentication_failure_count") == 1
        assert types["citadel_server_csr_count"] == "counter"
