"""What file mode's state directory (the last good versions kept across restarts) costs at
1,000 Services with a VirtualService each: the first scan without and with it, the writer's
time to put every entry on disk (atomic: temporary file, fsync, rename), one edit, and a
restart (read the entries, compare, write nothing). Prints JSON; times in seconds.

    .venv/bin/python bench/last_good.py [--services 1000] [--dir /work]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.sources.files import FileSource  # noqa: E402
from controlplane.sources.state import LastGoodState  # noqa: E402
from controlplane.store import Store  # noqa: E402

SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: default}}
spec:
  selector: {{app: svc-{i}}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{i}, namespace: default}}
spec:
  hosts: [svc-{i}]
  http:
  - route: [{{destination: {{host: svc-{i}}}}}]
"""


def start(config: Path, state_dir: Path | None) -> tuple[FileSource, LastGoodState, dict[str, Any]]:
    store = Store()
    state = LastGoodState(state_dir)
    began = time.perf_counter()
    state.load()
    loaded = time.perf_counter() - began
    if state_dir is not None:
        store.subscribe(state.on_change)
    files = FileSource(config, store, report=lambda issue: None, state=state)
    began = time.perf_counter()
    files.scan()
    scanned = time.perf_counter() - began
    began = time.perf_counter()
    state.flush(300)
    flushed = time.perf_counter() - began
    return files, state, {"load": loaded, "first_scan": scanned, "writer_after_scan": flushed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the directories")
    args = parser.parse_args()
    out: dict[str, Any] = {"services": args.services}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        config = Path(tmp) / "config"
        config.mkdir()
        for i in range(args.services):
            (config / f"svc-{i}.yaml").write_text(SERVICE.format(i=i))
        _, _, out["no_state"] = start(config, None)
        state_dir = Path(tmp) / "state"
        files, state, out["cold"] = start(config, state_dir)
        out["cold"]["files_written"] = state.writes
        edited = SERVICE.format(i=7).replace("host: svc-7}", "host: svc-7}, timeout: 5s")
        began = time.perf_counter()
        (config / "svc-7.yaml").write_text(edited)
        files.scan()
        scanned = time.perf_counter() - began
        began = time.perf_counter()
        state.flush()
        out["one_edit"] = {
            "scan": scanned,
            "write": time.perf_counter() - began,
            "files_written": state.writes - out["cold"]["files_written"],
        }
        state.close()
        _, state, out["restart"] = start(config, state_dir)
        out["restart"]["files_written"] = state.writes
        state.close()
        du = subprocess.run(["du", "-sk", str(state_dir)], capture_output=True, text=True)
        out["state_dir_kib"] = int(du.stdout.split()[0]) if du.returncode == 0 else None
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
