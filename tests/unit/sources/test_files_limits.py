"""Limits of the file source: objects larger than Kubernetes stores are refused before they
are parsed; a file being written is never half applied; reading is linear in the size."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from controlplane.api import Issue, ResourceKey
from controlplane.api.issues import Codes
from controlplane.sources import files as files_module
from controlplane.sources.files import MAX_OBJECT_BYTES, FileSource, read_file
from controlplane.store import Store


def service(name: str, port: int = 80) -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        f"spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: {port}}}]\n"
    )


def key(name: str) -> ResourceKey:
    return ResourceKey("Service", "default", name)


def test_a_document_larger_than_kubernetes_stores_is_refused_unparsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real_load = files_module.yaml.load

    def counting_load(text, Loader):  # type: ignore[no-untyped-def]  # noqa: N803
        parsed.append(len(text))
        return real_load(text, Loader=Loader)

    monkeypatch.setattr(files_module.yaml, "load", counting_load)
    padding = "a" * (MAX_OBJECT_BYTES + 10)
    big = service("big") + f"  # {padding}\n"  # a comment: would parse, but is too large
    path = tmp_path / "mesh.yaml"
    path.write_text(service("small") + "---\n" + big)
    result = read_file(path, "mesh.yaml")
    assert [s.resource.metadata.name for s in result.submissions] == ["small"]
    assert result.unreadable  # the file's other resources are kept as they were
    (issue,) = [i for i in result.issues if i.code is Codes.TOO_LARGE]
    assert issue.origin == "mesh.yaml:8"
    text = str(issue)
    assert f"{len(big) - 1:,} bytes" in text and f"{MAX_OBJECT_BYTES:,} bytes" in text
    assert "etcd" in text
    assert max(parsed) < MAX_OBJECT_BYTES  # the large document never reached YAML


def test_a_file_larger_than_the_file_limit_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("---\n".join(service(f"s{i}") for i in range(20)))
    store = Store()
    reported: list[Issue] = []
    FileSource(tmp_path, store, report=reported.append).scan()
    assert store.snapshot.get(key("s0")) is None
    (issue,) = reported
    assert issue.code is Codes.TOO_LARGE and issue.origin == "big.yaml"
    assert f"{path.stat().st_size:,} bytes" in str(issue) and "1,000 bytes" in str(issue)


def test_reading_is_linear_in_the_number_of_objects(tmp_path: Path) -> None:
    """Bounded stand-in for the 120,000-Service directory: 1,000 and 4,000 Services."""
    timings = {}
    for count in (1000, 4000):
        directory = tmp_path / str(count)
        directory.mkdir()
        per_file = 100
        for f in range(count // per_file):
            names = range(f * per_file, (f + 1) * per_file)
            (directory / f"s{f}.yaml").write_text("---\n".join(service(f"s{i}") for i in names))
        store = Store()
        # CPU time of this process, not wall time: the ratio is about the work done, and other
        # processes on a loaded machine must not decide it.
        started = time.process_time()
        FileSource(directory, store).scan()
        timings[count] = time.process_time() - started
        assert store.snapshot.get(key(f"s{count - 1}")) is not None
    ratio = timings[4000] / timings[1000]
    assert ratio < 4 * 2, timings  # 4x the objects: about 4x the time, never quadratic


def test_a_slow_writer_is_never_half_applied(tmp_path: Path) -> None:
    """A writer rewrites a file in place, in pieces with pauses: the empty file after the
    truncation, a half that parses (one Service of two) and a half that does not parse are
    each what a reader would see; the store only ever holds the whole file."""
    path = tmp_path / "mesh.yaml"
    first, second = service("a", 80), service("b", 80)
    path.write_text(first + "---\n" + second)
    store = Store()
    reported: list[Issue] = []
    source = FileSource(tmp_path, store, report=reported.append)
    seen: list[tuple[bool, bool, int | None]] = []

    def record(snapshot, change) -> None:  # type: ignore[no-untyped-def]
        a, b = snapshot.get(key("a")), snapshot.get(key("b"))
        port = b.spec.ports[0].port if b is not None else None
        seen.append((a is not None, b is not None, port))

    store.subscribe(record)

    def write_slowly() -> None:
        new_second = service("b", 8080)
        text = first + "---\n" + new_second
        cut = text.index("ports: [{name: http, port: 8080") + len("ports: [{na")
        with path.open("w") as out:  # truncates: the file is empty now
            time.sleep(0.1)
            out.write(first + "---\n")  # parses: only Service a
            out.flush()
            time.sleep(0.1)
            out.write(text[len(first) + 4 : cut])  # does not parse
            out.flush()
            time.sleep(1.6)  # longer than the settle time: retried, not reported
            out.write(text[cut:])

    async def main() -> None:
        # Five times the default settle time: the writer's 0.1 s pauses stay well inside it
        # even when a loaded machine (2 cores, load 10) wakes its thread late.
        watcher = asyncio.create_task(source.run(settle=1.0))
        first_scan = time.monotonic() + 10
        while time.monotonic() < first_scan and store.snapshot.get(key("b")) is None:
            await asyncio.sleep(0.05)
        assert store.snapshot.get(key("b")) is not None
        writer = threading.Thread(target=write_slowly)
        writer.start()
        await asyncio.to_thread(writer.join)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and seen[-1:] != [(True, True, 8080)]:
            await asyncio.sleep(0.05)
        watcher.cancel()

    asyncio.run(main())
    assert seen[0] == (True, True, 80)  # the first scan
    assert seen[-1] == (True, True, 8080)  # the whole new file, once written
    assert all(a and b for a, b, _ in seen), seen  # never a half without Service b
    assert not [i for i in reported if i.code is Codes.YAML_ERROR], reported


def test_a_file_renamed_into_place_is_applied_without_the_settle_wait(tmp_path: Path) -> None:
    """A rename is atomic: the new version is whole, so it is read at once, while an in-place
    edit of the same file would wait for the settle time (here far longer than the test)."""
    path = tmp_path / "mesh.yaml"
    path.write_text(service("b", 80))
    store = Store()
    source = FileSource(tmp_path, store)
    source.scan()  # the start-up read, as the control plane does before watching

    async def main() -> float:
        watcher = asyncio.create_task(source.run(settle=30.0))
        await asyncio.sleep(0.3)
        assert store.snapshot.get(key("b")).spec.ports[0].port == 80
        staged = tmp_path / ".mesh.yaml.tmp"
        staged.write_text(service("b", 8080))
        started = time.monotonic()
        os.replace(staged, path)
        deadline = started + 10
        while time.monotonic() < deadline:
            if store.snapshot.get(key("b")).spec.ports[0].port == 8080:
                break
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        # An in-place edit of the same file is still held back by the settle time.
        path.write_text(service("b", 9090))
        await asyncio.sleep(1.0)
        assert store.snapshot.get(key("b")).spec.ports[0].port == 8080
        watcher.cancel()
        return elapsed

    assert asyncio.run(main()) < 5.0
