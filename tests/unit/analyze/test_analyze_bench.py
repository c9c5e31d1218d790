"""The analyze benchmark's generated mesh is what it claims to be (so its figure means something)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from controlplane.analyze import analyze

_SPEC = importlib.util.spec_from_file_location(
    "analyze_time", Path(__file__).parents[3] / "bench" / "analyze_time.py"
)
assert _SPEC and _SPEC.loader
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_generated_mesh_has_the_requested_resources_and_only_the_planted_findings(
    tmp_path: Path,
) -> None:
    docs = bench.mesh_documents(500)
    assert len(docs) == 500
    bench.write_directory(tmp_path, docs)
    started = time.perf_counter()
    report = analyze([tmp_path])
    elapsed = time.perf_counter() - started
    assert report.resources == 500
    # Service 7 (subset selecting no pod) and 13 (route to a missing subset) of each 50.
    assert sorted((i.code.id, str(i.resource)) for i in report.issues) == [
        ("CP0301", "VirtualService ns3/svc13"),
        ("CP0301", "VirtualService ns3/svc63"),
        ("CP0304", "DestinationRule ns7/svc57"),
        ("CP0304", "DestinationRule ns7/svc7"),
    ]
    assert elapsed < 30  # generous: a CI gate must stay usable on a loaded 2-core machine
