"""The checked-in code in controlplane/protos_gen must be what protos/ generates."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from controlplane.ca import protogen

REPO_ROOT = Path(__file__).resolve().parents[2]


def _copy_repo_protos(destination: Path) -> Path:
    shutil.copytree(REPO_ROOT / "protos", destination / "protos")
    shutil.copytree(
        REPO_ROOT / "controlplane" / "protos_gen",
        destination / "controlplane" / "protos_gen",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return destination


def test_checked_in_generated_code_matches_the_protos() -> None:
    assert protogen.drift(REPO_ROOT) == []


def test_check_command_succeeds_on_the_checked_in_code() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.ca.protogen", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_check_reports_a_hand_edited_generated_file(tmp_path: Path) -> None:
    repo = _copy_repo_protos(tmp_path)
    edited = repo / "controlplane" / "protos_gen" / "ca" / "v1" / "ca_pb2.py"
    edited.write_text(edited.read_text() + "# edited\n")

    assert protogen.drift(repo) == [f"out of date: {edited.relative_to(repo)}"]


def test_check_ignores_a_generator_patch_release(tmp_path: Path) -> None:
    repo = _copy_repo_protos(tmp_path)
    generated = repo / "controlplane" / "protos_gen" / "ca" / "v1"
    grpc_module = generated / "ca_pb2_grpc.py"
    text, stamped = re.subn(
        r"GRPC_GENERATED_VERSION = '[^']*'",
        "GRPC_GENERATED_VERSION = '1.85.99'",
        grpc_module.read_text(),
    )
    assert stamped == 1
    grpc_module.write_text(text)
    messages = generated / "ca_pb2.py"
    text, stamped = re.subn(
        r"(# Protobuf Python Version: ).*", r"\g<1>9.99.9", messages.read_text()
    )
    assert stamped == 1
    messages.write_text(text)

    assert protogen.drift(repo) == []


def test_check_reports_a_proto_change_not_regenerated(tmp_path: Path) -> None:
    repo = _copy_repo_protos(tmp_path)
    proto = repo / "protos" / "controlplane" / "ca" / "v1" / "ca.proto"
    proto.write_text(proto.read_text() + "\nmessage Added {}\n")

    assert "out of date: controlplane/protos_gen/ca/v1/ca_pb2.py" in protogen.drift(repo)


def test_check_reports_stray_and_missing_files(tmp_path: Path) -> None:
    repo = _copy_repo_protos(tmp_path)
    generated = repo / "controlplane" / "protos_gen" / "ca" / "v1"
    (generated / "old_pb2.py").write_text("")
    (generated / "ca_pb2_grpc.py").unlink()

    assert sorted(protogen.drift(repo)) == [
        "missing: controlplane/protos_gen/ca/v1/ca_pb2_grpc.py",
        "not generated: controlplane/protos_gen/ca/v1/old_pb2.py",
    ]


def test_write_repairs_what_check_reported(tmp_path: Path) -> None:
    repo = _copy_repo_protos(tmp_path)
    generated = repo / "controlplane" / "protos_gen" / "ca" / "v1"
    (generated / "old_pb2.py").write_text("")
    (generated / "ca_pb2.py").write_text("")

    protogen.write(repo)

    assert protogen.drift(repo) == []


def test_generated_modules_import_from_their_package_under_the_proto_names() -> None:
    from controlplane.protos_gen.ca.v1 import ca_pb2, ca_pb2_grpc

    service = ca_pb2.DESCRIPTOR.services_by_name["CertificateService"]
    assert service.full_name == "controlplane.ca.v1.CertificateService"
    # The service module's import was rewritten to the protos_gen package, not controlplane.ca.
    assert vars(ca_pb2_grpc)["controlplane_dot_ca_dot_v1_dot_ca__pb2"] is ca_pb2
    assert ca_pb2.DESCRIPTOR.name == "controlplane/ca/v1/ca.proto"
