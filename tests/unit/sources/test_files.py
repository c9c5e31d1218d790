"""The file source: multi-document YAML, errors with file:line, nothing lost on a bad edit."""

from __future__ import annotations

from pathlib import Path

from controlplane.api import Issue, ResourceKey
from controlplane.sources.files import FileSource, split_documents
from controlplane.store import Store

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
"""
SVC_KEY = ResourceKey("Service", "default", "reviews")
VS_KEY = ResourceKey("VirtualService", "default", "reviews")


def source(tmp_path: Path) -> tuple[FileSource, Store, list[Issue]]:
    store = Store()
    reported: list[Issue] = []
    return FileSource(tmp_path, store, report=reported.append), store, reported


def test_documents_keep_their_starting_line() -> None:
    docs = split_documents("a: 1\n---\n# comment\nb: 2\n---\n\n")
    assert [(d.line, d.content) for d in docs] == [(1, {"a": 1}), (3, {"b": 2})]


def test_multi_document_files_in_subdirectories_are_read(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "all.yaml").write_text(SERVICE + "---\n" + VS)
    files, store, reported = source(tmp_path)
    assert files.scan()
    assert store.snapshot.get(SVC_KEY) is not None and store.snapshot.get(VS_KEY) is not None
    assert store.snapshot.origins[VS_KEY] == "nested/all.yaml:8"


def test_a_yaml_error_reports_file_and_line_and_keeps_what_the_file_had(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(SERVICE + "---\n" + VS)
    files, store, reported = source(tmp_path)
    files.scan()
    path.write_text(SERVICE + "---\n" + VS.replace("hosts: [reviews]", "hosts: [reviews"))
    assert not files.scan()
    [issue] = reported
    assert issue.code.title == "InvalidYAML" and issue.origin is not None
    assert issue.origin.startswith("all.yaml:")
    assert store.snapshot.get(VS_KEY) is not None


def test_an_invalid_resource_is_rejected_with_its_field_path_and_fixing_it_brings_it_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "vs.yaml"
    (tmp_path / "svc.yaml").write_text(SERVICE)
    path.write_text(VS)
    files, store, reported = source(tmp_path)
    files.scan()
    path.write_text(
        VS.replace(
            "- destination: {host: reviews}", "- destination: {host: reviews}\n      weight: -5"
        )
    )
    files.scan()
    errors = [str(i) for i in reported if i.severity == "Error"]
    assert errors == [
        "Error [CP0201 InvalidField] vs.yaml:1: VirtualService default/reviews: "
        "spec.http[0].route[0].weight: must not be negative"
    ]
    assert store.snapshot.get(VS_KEY).spec.http[0].route[0].weight is None
    assert not store.snapshot.status[VS_KEY].accepted
    path.write_text(
        VS.replace(
            "- destination: {host: reviews}", "- destination: {host: reviews}\n      weight: 5"
        )
    )
    assert files.scan()
    assert store.snapshot.get(VS_KEY).spec.http[0].route[0].weight == 5
    assert store.snapshot.status[VS_KEY].accepted


def test_deleting_a_file_deletes_its_resources(tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").write_text(SERVICE)
    (tmp_path / "vs.yaml").write_text(VS)
    files, store, _ = source(tmp_path)
    files.scan()
    (tmp_path / "vs.yaml").unlink()
    assert files.scan()
    assert store.snapshot.get(VS_KEY) is None and store.snapshot.get(SVC_KEY) is not None


def test_moving_a_resource_between_files_does_not_lose_it(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE)
    files, store, _ = source(tmp_path)
    files.scan()
    (tmp_path / "b.yaml").write_text(SERVICE)
    (tmp_path / "a.yaml").unlink()
    files.scan()
    assert store.snapshot.get(SVC_KEY) is not None


def test_unknown_fields_are_refused_and_unimplemented_istio_fields_reported(
    tmp_path: Path,
) -> None:
    # A field Istio does not define is an error, as `istioctl validate` says (issue 11): a
    # misspelt field must never be dropped silently and the rest applied.
    (tmp_path / "vs.yaml").write_text(VS + "    mirrorPercent: 5\n    fancyNewField: 1\n")
    files, store, reported = source(tmp_path)
    files.scan()
    messages = sorted(i.field_message for i in reported if i.code.id == "CP0104")
    assert messages == [
        "spec.http[0].fancyNewField: unknown field 'fancyNewField': 'http' does not define it"
    ]
    assert store.snapshot.get(VS_KEY) is None
    # A field Istio defines but the compiler does not implement yet: accepted, with a warning.
    (tmp_path / "vs.yaml").write_text(
        VS + "    retries: {attempts: 2, retryIgnorePreviousHosts: true}\n"
    )
    reported.clear()
    files.scan()
    warnings = [i.field_message for i in reported if i.code.id == "CP0202"]
    assert warnings == ["spec.http[0].retries.retryIgnorePreviousHosts: not supported yet; ignored"]
    assert store.snapshot.get(VS_KEY) is not None


def test_kinds_the_mesh_does_not_read_are_skipped_without_error(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    files, store, reported = source(tmp_path)
    files.scan()
    assert all(i.severity != "Error" for i in reported)


def test_a_scan_of_the_reported_paths_reads_only_those_files(tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").write_text(SERVICE)
    (tmp_path / "vs.yaml").write_text(VS)
    files, store, _ = source(tmp_path)
    files.scan()
    # vs.yaml changes but is not reported: a scan of svc.yaml alone leaves it as it was.
    (tmp_path / "vs.yaml").write_text(VS.replace("name: reviews}", "name: other}"))
    (tmp_path / "svc.yaml").write_text(SERVICE.replace("port: 9080", "port: 9090"))
    assert files.scan({tmp_path / "svc.yaml"})
    assert store.snapshot.get(SVC_KEY).spec.ports[0].port == 9090
    assert store.snapshot.get(VS_KEY) is not None
    assert files.scan({tmp_path / "vs.yaml"})
    assert store.snapshot.get(VS_KEY) is None
    assert store.snapshot.get(ResourceKey("VirtualService", "default", "other")) is not None


def test_a_reported_deletion_of_a_file_or_directory_removes_what_it_had(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "vs.yaml").write_text(VS)
    (tmp_path / "svc.yaml").write_text(SERVICE)
    files, store, _ = source(tmp_path)
    files.scan()
    (tmp_path / "svc.yaml").unlink()
    assert files.scan({tmp_path / "svc.yaml"})
    assert store.snapshot.get(SVC_KEY) is None
    (tmp_path / "team" / "vs.yaml").unlink()
    (tmp_path / "team").rmdir()
    assert files.scan({tmp_path / "team"})
    assert store.snapshot.get(VS_KEY) is None


def test_a_new_directory_or_a_path_spelled_otherwise_is_found_by_a_full_scan(
    tmp_path: Path,
) -> None:
    files, store, _ = source(tmp_path)
    files.scan()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "svc.yaml").write_text(SERVICE)
    assert files.scan({tmp_path / "new"})  # a directory event: everything is looked at
    assert store.snapshot.get(SVC_KEY) is not None
    (tmp_path / "vs.yaml").write_text(VS)
    assert files.scan({Path("/elsewhere/vs.yaml")})  # not under the root as spelled
    assert store.snapshot.get(VS_KEY) is not None
