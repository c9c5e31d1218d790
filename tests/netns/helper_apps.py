"""Processes the injection-helper tests run inside pods (``python -m tests.netns.helper_apps``).

* ``ingest PORT OUT``: an HTTP receiver; each POST body (JSON lines) is appended to OUT.
* ``config-server PORT``: answers ``{"files": {...}}``, a new version on every request:
  ``app.conf`` of about 2 MB that begins ``BEGIN v<n>`` and ends ``END v<n>`` (half a file is
  easy to see), and ``old.conf`` only in versions 1 and 2 (the sync must remove it).
* ``write-logs DIR``: an application writing its log: 40 lines to DIR/app.log, a rotation
  (rename to app.log.1, a new app.log), 40 more, then a line written in two pieces.
* ``read-config FILE SECONDS``: reads FILE in a loop; prints a JSON summary of the versions
  seen and every read that was not one whole version.

Each prints ``ready`` once it serves or starts.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import time
from pathlib import Path

BODY_LINES = 20000


def config_text(version: int) -> str:
    return f"BEGIN v{version}\n" + ("x" * 99 + "\n") * BODY_LINES + f"END v{version}\n"


def whole_version(text: str) -> int | None:
    """The version of a whole file, None for anything else (empty, half written...)."""
    first, _, rest = text.partition("\n")
    if not first.startswith("BEGIN v"):
        return None
    version = int(first[len("BEGIN v") :])
    return version if text == config_text(version) else None


def ingest(port: int, out: Path) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with open(out, "ab") as f:
                f.write(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def config_server(port: int) -> None:
    state = {"version": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["version"] += 1
            version = state["version"]
            files = {"app.conf": config_text(version), "version": str(version)}
            if version <= 2:
                files["old.conf"] = "gone soon\n"
            body = json.dumps({"files": files}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def write_logs(directory: Path) -> None:
    print("ready", flush=True)
    log = directory / "app.log"
    with open(log, "a") as f:
        for i in range(40):
            f.write(f"request {i} served\n")
            f.flush()
            time.sleep(0.01)
    time.sleep(0.3)
    with open(log, "a") as f:  # written after the last poll may have seen the file
        f.write("request 40 served\n")
    log.rename(directory / "app.log.1")  # rotation, as logrotate does
    with open(log, "a") as f:
        for i in range(41, 80):
            f.write(f"request {i} served\n")
            f.flush()
            time.sleep(0.01)
        f.write("request 80 ")
        f.flush()
        time.sleep(0.5)  # a poll happens here: half a line must not be shipped
        f.write("served\n")
    print("done", flush=True)
    time.sleep(3600)


def read_config(path: Path, seconds: float) -> None:
    print("ready", flush=True)
    seen: list[int] = []
    partial: list[int] = []
    reads = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        reads += 1
        version = whole_version(text)
        if version is None:
            partial.append(len(text))
        elif not seen or seen[-1] != version:
            seen.append(version)
    print(
        json.dumps(
            {
                "reads": reads,
                "versions": seen,
                "partial": partial[:20],
                "partial_count": len(partial),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    os.umask(0o022)
    if command == "ingest":
        ingest(int(args[0]), Path(args[1]))
    elif command == "config-server":
        config_server(int(args[0]))
    elif command == "write-logs":
        write_logs(Path(args[0]))
    elif command == "read-config":
        read_config(Path(args[0]), float(args[1]))
    else:
        raise SystemExit(f"unknown command {command}")
