"""File mode's state directory: the last good version survives a restart, a deleted file
stays deleted, and the time first seen (file mode's creation time) decides conflicts as
istiod's creation time does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from controlplane.api import Issue, ResourceKey
from controlplane.api.issues import Codes
from controlplane.sources.files import FileSource
from controlplane.sources.state import LastGoodState, entry_name
from controlplane.store import Store
from tests.support import meshes

VS_KEY = ResourceKey("VirtualService", "default", "reviews")


def canary(w1: int, w2: int) -> str:
    return meshes.split("reviews", {"v1": w1, "v2": w2})


BROKEN_WEIGHT = canary(100, 0).replace("weight: 0", "weight: -5")


class Run:
    """One run of file mode on ``config`` with its state in ``state``."""

    def __init__(self, config: Path, state: Path) -> None:
        self.store = Store()
        self.reported: list[Issue] = []
        self.state = LastGoodState(state)
        self.state.load()
        self.store.subscribe(self.state.on_change)
        self.files = FileSource(config, self.store, report=self.reported.append, state=self.state)
        self.files.scan()

    def stop(self) -> None:
        self.state.close()

    def weights(self) -> list[int | None]:
        vs = self.store.snapshot.get(VS_KEY)
        assert vs is not None
        return [d.weight for d in vs.spec.http[0].route]


def write(config: Path, name: str, text: str) -> None:
    (config / name).write_text(text)


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "config"
    config.mkdir()
    return config, tmp_path / "state"


def test_a_refused_document_at_start_is_served_from_the_last_good_version(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "vs.yaml", canary(100, 0))
    first = Run(config, state)
    assert first.weights() == [100, 0]
    first.stop()

    write(config, "vs.yaml", BROKEN_WEIGHT)
    second = Run(config, state)
    assert second.weights() == [100, 0]  # without the state: no VirtualService at all
    status = second.store.snapshot.status[VS_KEY]
    assert not status.accepted and not status.reconciled
    codes = [i.code for i in status.issues]
    assert Codes.LAST_GOOD_SERVED in codes and codes[0] is not Codes.LAST_GOOD_SERVED
    served = next(i for i in second.reported if i.code is Codes.LAST_GOOD_SERVED)
    assert served.resource == VS_KEY and served.origin and served.origin.startswith("vs.yaml")
    assert "the last good version from 20" in served.reason and "is served" in served.reason
    # The refusal itself is reported as it always was, before the line about what is served.
    assert any(i.resource == VS_KEY and "weight" in i.path for i in second.reported)
    second.stop()


def test_a_file_that_is_no_longer_yaml_at_start_is_served_from_the_last_good_version(
    tmp_path: Path,
) -> None:
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "vs.yaml", canary(100, 0))
    Run(config, state).stop()

    write(config, "vs.yaml", canary(100, 0).replace("hosts:", "hosts: [oops"))
    second = Run(config, state)
    assert second.weights() == [100, 0]
    status = second.store.snapshot.status[VS_KEY]
    assert [i.code for i in status.issues] == [Codes.YAML_ERROR, Codes.LAST_GOOD_SERVED]
    second.stop()
    # Then the file is deleted: the resource goes, and the state forgets it.
    (config / "vs.yaml").unlink()
    second = Run(config, state)
    assert second.store.snapshot.get(VS_KEY) is None
    second.state.flush()
    assert not (state / "resources" / entry_name(VS_KEY)).exists()
    second.stop()


def test_a_file_deleted_while_stopped_is_not_brought_back(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "vs.yaml", canary(100, 0))
    Run(config, state).stop()
    assert (state / "resources" / entry_name(VS_KEY)).exists()

    (config / "vs.yaml").unlink()
    second = Run(config, state)
    assert second.store.snapshot.get(VS_KEY) is None
    second.state.flush()
    assert not (state / "resources" / entry_name(VS_KEY)).exists()
    second.stop()
    # Nor on the restart after, when the file comes back broken.
    write(config, "vs.yaml", BROKEN_WEIGHT)
    third = Run(config, state)
    assert third.store.snapshot.get(VS_KEY) is None
    third.stop()


def test_a_resource_its_file_no_longer_defines_is_not_brought_back(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "vs.yaml", canary(100, 0))
    Run(config, state).stop()
    write(config, "vs.yaml", "# emptied\n")
    second = Run(config, state)
    assert second.store.snapshot.get(VS_KEY) is None
    second.stop()


def test_a_deletion_while_running_removes_the_entry(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "vs.yaml", canary(100, 0))
    run = Run(config, state)
    run.state.flush()
    entry = state / "resources" / entry_name(VS_KEY)
    saved = json.loads(entry.read_text())
    assert saved["kind"] == "VirtualService" and saved["file"] == "vs.yaml"
    assert entry.stat().st_mode & 0o777 == 0o600
    (config / "vs.yaml").unlink()
    run.files.scan()
    run.state.flush()
    assert not entry.exists()
    run.stop()


def test_only_what_changed_is_written_and_a_restart_writes_nothing(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "vs.yaml", canary(100, 0))
    run = Run(config, state)
    run.state.flush()
    assert run.state.writes == 2
    write(config, "vs.yaml", canary(90, 10))
    run.files.scan()
    run.state.flush()
    assert run.state.writes == 3
    run.stop()
    again = Run(config, state)
    again.state.flush()
    assert again.state.writes == 0 and again.weights() == [90, 10]
    again.stop()


# ---- conflicts: the oldest wins, by creation time (file mode: first seen) ----------------


def claim(name: str, subset: str) -> str:
    return meshes.resource(
        "VirtualService",
        name,
        f"""
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]
""",
    )


def winner(run: Run) -> str:
    [vs, *_] = run.store.snapshot.virtual_services_for(
        "reviews.default.svc.cluster.local", "default"
    )
    return vs.metadata.name


def test_a_newer_virtual_service_whose_name_sorts_first_does_not_take_the_host(
    tmp_path: Path,
) -> None:
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "zeta.yaml", claim("zeta", "v1"))
    run = Run(config, state)
    assert winner(run) == "zeta"
    time.sleep(0.01)
    write(config, "alpha.yaml", claim("alpha", "v2"))
    run.files.scan()
    assert winner(run) == "zeta"  # before: alpha, the name that sorts first
    loser = ResourceKey("VirtualService", "default", "alpha")
    [conflict] = [
        i
        for i in run.store.snapshot.status[loser].issues
        if i.code is Codes.CONFLICTING_VIRTUAL_SERVICES
    ]
    assert "older VirtualService default/zeta" in conflict.reason
    assert "default/alpha was created" in conflict.reason
    assert conflict.reason.endswith("else the oldest: default/zeta)")
    older = ResourceKey("VirtualService", "default", "zeta")
    assert not any(
        i.code is Codes.CONFLICTING_VIRTUAL_SERVICES
        for i in run.store.snapshot.status[older].issues
    )
    run.stop()
    # The times first seen are kept with the last good versions: a restart changes nothing.
    again = Run(config, state)
    assert winner(again) == "zeta"
    again.stop()


def test_equal_creation_times_go_to_the_name_then_the_namespace(tmp_path: Path) -> None:
    """istiod's sortConfigByCreationTime (pilot/pkg/model): time, then name, then namespace.
    Here the name and the namespace disagree: alpha in zz wins over zeta in aa."""
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    for name, namespace in (("zeta", "aa"), ("alpha", "zz")):
        doc = yaml.safe_load(claim(name, "v1"))
        doc["metadata"].update(namespace=namespace, creationTimestamp="2026-01-01T00:00:00Z")
        doc["spec"]["hosts"] = ["reviews.default.svc.cluster.local"]
        for route in doc["spec"]["http"][0]["route"]:
            route["destination"] = {"host": "reviews.default.svc.cluster.local"}
        write(config, f"{name}.yaml", yaml.safe_dump(doc))
    run = Run(config, state)
    assert winner(run) == "alpha"
    loser = ResourceKey("VirtualService", "aa", "zeta")
    assert any(
        "older VirtualService zz/alpha" in i.reason for i in run.store.snapshot.status[loser].issues
    )
    run.stop()


def test_resources_first_seen_in_one_scan_tie_and_the_name_decides(tmp_path: Path) -> None:
    """Everything found at start was seen at one time: the order of the files does not
    decide (a.yaml holds zeta, z.yaml holds alpha), the name does, as in istiod."""
    config, state = dirs(tmp_path)
    write(config, "dr.yaml", meshes.subsets("reviews"))
    write(config, "a.yaml", claim("zeta", "v1"))
    write(config, "z.yaml", claim("alpha", "v2"))
    run = Run(config, state)
    assert winner(run) == "alpha"
    run.stop()
