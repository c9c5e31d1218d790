from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.ca import CABundle, DirectoryKeyStore, InvalidCABundle, KeyStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_directory_store_satisfies_the_key_store_protocol(tmp_path: Path) -> None:
    store: KeyStore = DirectoryKeyStore(tmp_path)

    assert store.load() is None


def test_empty_directory_loads_as_nothing_stored(tmp_path: Path) -> None:
    assert DirectoryKeyStore(tmp_path / "absent").load() is None
    assert DirectoryKeyStore(tmp_path).load() is None


def test_saved_bundle_loads_back_unchanged(tmp_path: Path, root_bundle: CABundle) -> None:
    DirectoryKeyStore(tmp_path / "cacerts").save(root_bundle)

    assert DirectoryKeyStore(tmp_path / "cacerts").load() == root_bundle


def test_save_writes_istio_cacerts_file_names(tmp_path: Path, root_bundle: CABundle) -> None:
    DirectoryKeyStore(tmp_path).save(root_bundle)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ]
    assert (tmp_path / "ca-key.pem").read_text() == root_bundle.ca_key_pem


def test_key_file_is_readable_by_its_owner_only_even_under_a_permissive_umask(
    tmp_path: Path, root_bundle: CABundle, permissive_umask: None
) -> None:
    DirectoryKeyStore(tmp_path / "cacerts").save(root_bundle)

    assert _mode(tmp_path / "cacerts" / "ca-key.pem") == 0o600
    assert _mode(tmp_path / "cacerts" / "ca-cert.pem") == 0o644
    assert _mode(tmp_path / "cacerts") == 0o700


def test_saving_over_a_world_readable_key_makes_it_private(
    tmp_path: Path, root_bundle: CABundle
) -> None:
    key = tmp_path / "ca-key.pem"
    key.write_text("old")
    key.chmod(0o644)

    DirectoryKeyStore(tmp_path).save(root_bundle)

    assert _mode(key) == 0o600
    assert key.read_text() == root_bundle.ca_key_pem


def test_save_leaves_no_temporary_files_behind(tmp_path: Path, root_bundle: CABundle) -> None:
    DirectoryKeyStore(tmp_path).save(root_bundle)
    DirectoryKeyStore(tmp_path).save(root_bundle)

    assert len(list(tmp_path.iterdir())) == 4


def test_incomplete_directory_names_the_missing_files(
    tmp_path: Path, root_bundle: CABundle
) -> None:
    DirectoryKeyStore(tmp_path).save(root_bundle)
    (tmp_path / "ca-key.pem").unlink()
    (tmp_path / "root-cert.pem").unlink()

    with pytest.raises(InvalidCABundle, match="missing ca-key.pem, root-cert.pem"):
        DirectoryKeyStore(tmp_path).load()
