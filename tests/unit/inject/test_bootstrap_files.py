"""`controlplane bootstrap -o` and `--token-file` write bearer credentials: owner-only files,
whatever the umask, and tokens that expire within the hour."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from controlplane.app import load_ca
from controlplane.cli.main import main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def claims(token: str) -> dict[str, int]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.fixture
def open_umask():  # type: ignore[no-untyped-def]
    before = os.umask(0o000)  # the worst case: files would be world-writable
    try:
        yield
    finally:
        os.umask(before)


def test_bootstrap_and_token_files_are_owner_only_and_short_lived(
    tmp_path: Path, open_umask: None
) -> None:
    ca_dir = tmp_path / "ca"
    load_ca(ca_dir, "cluster.local", 3600.0)
    out, token_file = tmp_path / "envoy.yaml", tmp_path / "reviews.token"
    out.write_text("old\n")
    out.chmod(0o644)  # an older bootstrap, written before: replaced, mode included
    code = main(
        [
            "bootstrap",
            "--node-id",
            "sidecar~127.0.0.1~reviews-1.default~default.svc.cluster.local",
            "--service-account",
            "reviews",
            "--ca-dir",
            str(ca_dir),
            "--token-file",
            str(token_file),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert mode(out) == 0o600
    assert mode(token_file) == 0o600
    token = token_file.read_text().strip()
    bootstrap = yaml.safe_load(out.read_text())
    header = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"]
    assert header == [{"key": "authorization", "value": f"Bearer {token}"}]
    lifetime = claims(token)["exp"] - claims(token)["iat"]
    assert 0 < lifetime <= 3600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_long_lived_token_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "ca"
    load_ca(ca_dir, "cluster.local", 3600.0)
    with pytest.raises(SystemExit) as exit_:
        main(["bootstrap", "--node-id", "n", "--ca-dir", str(ca_dir), "--token-ttl", "86400"])
    assert "--token-ttl 86400" in str(exit_.value) and "at most 3600" in str(exit_.value)


def test_the_injected_sidecar_writes_its_bootstrap_owner_only(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.cli.sidecar import write_bootstrap

    for name, value in {"POD_NAME": "reviews-1", "POD_NAMESPACE": "default"}.items():
        monkeypatch.setenv(name, value)
    token_path = tmp_path / "istio-token"
    token_path.write_text("projected.service.account-token")
    path = tmp_path / "etc" / "envoy.yaml"
    write_bootstrap(
        xds_address="127.0.0.1",
        xds_port=15010,
        token_path=token_path,
        labels_path=tmp_path / "labels",
        bootstrap_path=path,
        admin_port=15000,
    )
    assert mode(path) == 0o600
    assert "projected.service.account-token" in path.read_text()


@pytest.mark.parametrize("annotation", [None, "false", "true"])
def test_the_on_demand_annotation_selects_delta_xds_and_on_demand_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, annotation: str | None
) -> None:
    import yaml

    from controlplane.cli.sidecar import ON_DEMAND_ANNOTATION, write_bootstrap
    from controlplane.compile.proxy import proxy_from_node

    monkeypatch.setenv("POD_NAME", "productpage-1")
    monkeypatch.setenv("POD_NAMESPACE", "default")
    (tmp_path / "labels").write_text('app="productpage"\n')
    if annotation is not None:
        (tmp_path / "annotations").write_text(f'{ON_DEMAND_ANNOTATION}="{annotation}"\n')
    path = tmp_path / "envoy.yaml"
    write_bootstrap(
        xds_address="127.0.0.1",
        xds_port=15010,
        token_path=tmp_path / "no-token",
        labels_path=tmp_path / "labels",
        bootstrap_path=path,
        admin_port=15000,
    )
    bootstrap = yaml.safe_load(path.read_text())
    node = bootstrap["node"]
    proxy = proxy_from_node(node["id"], node["metadata"])
    api_type = bootstrap["dynamic_resources"]["ads_config"]["api_type"]
    assert proxy.on_demand is (annotation == "true")
    assert api_type == ("DELTA_GRPC" if annotation == "true" else "GRPC")
