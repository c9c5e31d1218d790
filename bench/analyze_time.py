"""How long `controlplane analyze` takes over a directory of 1,000 resources.

Generates a bookinfo-like mesh (Services, Pods, DestinationRules with subsets, VirtualServices
with weighted and header-matched routes, a few deliberately broken ones) as 100 files of 10
resources, then times ``analyze`` on it the way the CLI runs it (reading and parsing included).
Prints one JSON object.

    .venv/bin/python bench/analyze_time.py [--resources 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from controlplane.analyze import analyze


def mesh_documents(resources: int) -> list[str]:
    """``resources`` documents: per service 1 Service, 2 Pods, 1 DR, 1 VS (5 each)."""
    docs: list[str] = []
    services = resources // 5
    for i in range(services):
        ns = f"ns{i % 10}"
        name = f"svc{i}"
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  clusterIP: 10.96.{i // 250}.{i % 250 + 1}\n  selector: {{app: {name}}}\n"
            "  ports: [{name: http, port: 9080}, {name: tcp-db, port: 5432}]\n"
        )
        for version in ("v1", "v2"):
            docs.append(
                f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-{version}\n"
                f"  namespace: {ns}\n  labels: {{app: {name}, version: {version}}}\n"
                f"status: {{podIP: 10.{100 + i // 250}.{i % 250}.{1 if version == 'v1' else 2}}}\n"
            )
        # Every 50th rule names a subset that selects no pod; every 50th VS a missing subset.
        v2_labels = "v9" if i % 50 == 7 else "v2"
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  host: {name}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n"
            f"  - {{name: v2, labels: {{version: {v2_labels}}}}}\n"
        )
        subset = "v3" if i % 50 == 13 else "v2"
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  hosts: [{name}]\n  http:\n"
            "  - match: [{headers: {end-user: {exact: jason}}}]\n"
            f"    route: [{{destination: {{host: {name}, subset: {subset}}}}}]\n"
            f"  - route:\n    - {{destination: {{host: {name}, subset: v1}}, weight: 90}}\n"
            f"    - {{destination: {{host: {name}, subset: v2}}, weight: 10}}\n"
        )
    return docs


def write_directory(root: Path, docs: list[str], per_file: int = 10) -> int:
    files = 0
    for start in range(0, len(docs), per_file):
        (root / f"mesh-{files:03d}.yaml").write_text("---\n".join(docs[start : start + per_file]))
        files += 1
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs = mesh_documents(args.resources)
    with tempfile.TemporaryDirectory(prefix="analyze-bench-") as tmp:
        root = Path(tmp)
        files = write_directory(root, docs)
        times = []
        report = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = analyze([root])
            times.append(time.perf_counter() - started)
        assert report is not None
        by_code: dict[str, int] = {}
        for issue in report.issues:
            by_code[issue.code.id] = by_code.get(issue.code.id, 0) + 1
        print(
            json.dumps(
                {
                    "benchmark": "analyze",
                    "resources": report.resources,
                    "files": files,
                    "seconds_best": round(min(times), 3),
                    "seconds_median": round(sorted(times)[len(times) // 2], 3),
                    "repeat": args.repeat,
                    "findings_by_code": by_code,
                    "exit_status": report.exit_status(),
                }
            )
        )


if __name__ == "__main__":
    main()
