"""`controlplane analyze`: every broken corpus file gets exactly its expected codes; the valid
corpus gets none; messages match what the running control plane logs."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.analyze import analyze, render_text
from controlplane.api.issues import Issue, Level
from controlplane.sources.files import FileSource
from controlplane.store import Store

CORPUS = Path(__file__).parents[2] / "corpus"
BROKEN = sorted((CORPUS / "broken").glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (CP\d{4}) (\S+)$", re.MULTILINE)


def expected(path: Path) -> set[tuple[str, str]]:
    found = {
        (code, "" if where == "-" else where) for code, where in _EXPECT.findall(path.read_text())
    }
    assert found, f"{path.name} declares no '# expect:' line"
    return found


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_reports_exactly_its_expected_codes(path: Path) -> None:
    report = analyze([path])
    assert {(i.code.id, i.path) for i in report.issues} == expected(path), render_text(report)
    for issue in report.issues:
        assert issue.origin and issue.origin.startswith(str(path) + ":"), issue
        if issue.code.id != "CP0101":
            assert issue.resource is not None, issue


def test_the_broken_corpus_covers_every_validation_and_context_code() -> None:
    codes = {code for path in BROKEN for code, _ in expected(path)}
    assert {"CP0101", "CP0102", "CP0201", "CP0202"} <= codes
    assert {"CP0301", "CP0302", "CP0303", "CP0304", "CP0305", "CP0306"} <= codes
    assert {"CP0501", "CP0502", "CP0503", "CP0504", "CP0505"} <= codes  # Gateways (issue 13)
    assert {"CP0540", "CP0541", "CP0542"} <= codes  # ServiceEntry


def test_the_valid_corpus_has_no_errors_unsupported_fields_or_context_findings() -> None:
    # Deprecated spellings in the corpus may warn (CP0201 at Warning level); nothing else may.
    report = analyze([CORPUS / "valid"])
    unexpected = [
        i
        for i in report.issues
        if i.severity is Level.ERROR or i.code.id == "CP0202" or i.code.id.startswith("CP03")
    ]
    assert unexpected == [], render_text(report)
    assert report.resources >= 8
    assert report.exit_status() == 0


def test_exit_status_is_nonzero_on_errors_only(tmp_path: Path) -> None:
    assert analyze([CORPUS / "broken" / "vs-unknown-host.yaml"]).exit_status() == 0  # warning
    assert analyze([CORPUS / "broken" / "vs-negative-weight.yaml"]).exit_status() == 1


def test_findings_point_at_the_line_where_the_resource_starts() -> None:
    report = analyze([CORPUS / "broken" / "vs-missing-subset.yaml"])
    [issue] = report.issues
    lines = (CORPUS / "broken" / "vs-missing-subset.yaml").read_text().splitlines()
    line = int(issue.origin.rsplit(":", 1)[1])  # type: ignore[union-attr]
    assert lines[line - 1] == "apiVersion: networking.istio.io/v1"
    assert lines[line + 1].startswith("metadata: {name: reviews")


def test_a_directory_is_read_recursively_and_other_kubernetes_kinds_are_ignored(
    tmp_path: Path,
) -> None:
    nested = tmp_path / "apps" / "reviews"
    nested.mkdir(parents=True)
    (nested / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews}\nspec: {}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: Frobnicator\nmetadata: {name: gw}\n"
        "spec: {}\n"
        # Gateway is read since issue 13: one without servers is refused, as istiod does.
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n"
    )
    (nested / "vs.yaml").write_text((CORPUS / "broken" / "vs-negative-weight.yaml").read_text())
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    report = analyze([tmp_path])
    assert sorted(Path(f).name for f in report.files) == ["deploy.yaml", "vs.yaml"]
    assert [(i.code.id, i.severity) for i in report.issues] == [
        ("CP0103", Level.INFO),  # an Istio kind the mesh does not read: said, not an error
        ("CP0201", Level.ERROR),  # the Gateway: "gateway must have at least one server"
        ("CP0201", Level.ERROR),
    ]
    assert "gateway must have at least one server" in str(report.issues[1])


def test_messages_read_the_same_as_the_control_planes_log(tmp_path: Path) -> None:
    source_dir = tmp_path / "config"
    source_dir.mkdir()
    for name in ("vs-missing-subset.yaml", "vs-fault-and-retries.yaml", "vs-unknown-field.yaml"):
        (source_dir / name).write_text((CORPUS / "broken" / name).read_text())
    logged: list[Issue] = []
    store = Store()
    FileSource(source_dir, store, report=logged.append).scan()
    context = [
        i.with_context(k, s.origin)
        for k, s in store.snapshot.status.items()
        for i in s.issues
        if i.code.id.startswith("CP03")
    ]
    report = analyze([source_dir])
    shown = {str(i).replace(str(source_dir) + "/", "") for i in report.issues}
    assert shown == {str(i) for i in logged + context}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controlplane", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_one_line_per_finding_and_fails_on_errors() -> None:
    result = run_cli(str(CORPUS / "broken" / "vs-missing-subset.yaml"))
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith("Error [CP0301 ReferencedSubsetNotFound] ")
    assert "VirtualService default/reviews: spec.http[0].route[1].destination.subset:" in line


def test_cli_json_output_carries_code_level_resource_origin_and_path() -> None:
    result = run_cli("-o", "json", str(CORPUS / "broken" / "dr-subset-without-pods.yaml"))
    assert result.returncode == 0
    [item] = json.loads(result.stdout)
    assert item["code"] == "CP0304" and item["level"] == "Warning"
    assert item["resource"] == "DestinationRule default/reviews"
    assert item["path"] == "spec.subsets[1].labels"
    assert item["origin"].endswith("dr-subset-without-pods.yaml:15")


def test_cli_says_so_when_nothing_is_wrong() -> None:
    clean = [CORPUS / "valid" / "tcp-tls-routes.yaml", CORPUS / "valid" / "inbound-workload.yaml"]
    result = run_cli(*map(str, clean))
    assert result.returncode == 0
    assert result.stdout == "No validation issues found when analyzing 2 file(s).\n"


def test_a_missing_path_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    report = analyze([Path("/nonexistent/dir.yaml")])
    assert report.exit_status() == 1
    assert "no such file or directory" in render_text(report)


def test_failure_threshold_can_make_warnings_fail_the_run() -> None:
    path = str(CORPUS / "broken" / "vs-unknown-host.yaml")  # one warning
    assert run_cli(path).returncode == 0
    assert run_cli("--failure-threshold", "Warning", path).returncode == 1
    assert run_cli("--failure-threshold", "Info", path).returncode == 1
