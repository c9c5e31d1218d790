"""``controlplane helper log-collect``: follow an application's log files, ship the lines.

The example template ``log-collector`` mounts the application's log directory (an
``emptyDir``) read-only and this program's configuration from a ConfigMap::

    paths: [/var/log/app/*.log]        # globs; files appearing later are picked up
    output:                            # one of:
      http: http://collector:8080/ingest   # POST, a batch of JSON lines (application/x-ndjson)
      file: /var/log/collected.jsonl       # append JSON lines
      stdout: true
    fields: {cluster: east}            # added to every record
    fieldsFromEnv: {pod: POD_NAME}     # the same, from environment variables (downward API)
    pollSeconds: 0.2
    startAt: beginning                 # or end: only lines written after the start

Each record is ``{"file", "line", "time", **fields}``. Files are followed across rotation
(a new file at the path: the rest of the old one is read first) and truncation (read again
from the start). A line is shipped only once it is complete (ends in a newline). When the
HTTP output fails, the batch is kept and sent again next round, so lines are not lost while
the receiver is down.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

log = logging.getLogger("controlplane.helper.log-collect")


@dataclass
class _Followed:
    handle: BinaryIO
    inode: tuple[int, int]
    partial: bytes = b""


@dataclass
class LogCollector:
    paths: list[str]
    ship: Callable[[list[dict[str, Any]]], None]
    fields: Mapping[str, str] = field(default_factory=dict)
    start_at_end: bool = False
    _files: dict[str, _Followed] = field(default_factory=dict)
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _first_scan: bool = True

    def poll(self) -> int:
        """Read what is new in every file and ship it; returns how many lines were read."""
        read = 0
        for path in sorted({p for pattern in self.paths for p in glob.glob(pattern)}):
            read += self._follow(path)
        self._first_scan = False
        if self._pending:
            try:
                self.ship(self._pending)
            except OSError as exc:
                log.warning(
                    "shipping %d lines failed (kept for the next round): %s",
                    len(self._pending),
                    exc,
                )
            else:
                self._pending = []
        return read

    def _follow(self, path: str) -> int:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return 0
        inode = (stat.st_dev, stat.st_ino)
        followed = self._files.get(path)
        read = 0
        if followed is not None and followed.inode != inode:
            read += self._read(path, followed)  # rotated: finish the old file first
            followed.handle.close()
            followed = None
        if followed is None:
            handle = open(path, "rb")  # noqa: SIM115 (kept open while followed)
            if self._first_scan and self.start_at_end:
                handle.seek(0, os.SEEK_END)
            followed = self._files[path] = _Followed(handle, inode)
        elif stat.st_size < followed.handle.tell():
            followed.handle.seek(0)  # truncated (copytruncate): from the start again
            followed.partial = b""
        return read + self._read(path, followed)

    def _read(self, path: str, followed: _Followed) -> int:
        data = followed.partial + followed.handle.read()
        *lines, followed.partial = data.split(b"\n")
        now = time.time()
        for line in lines:
            record = {"file": path, "line": line.decode("utf-8", "replace"), "time": now}
            self._pending.append({**record, **self.fields})
        return len(lines)


def http_shipper(url: str, timeout: float = 5.0) -> Callable[[list[dict[str, Any]]], None]:
    def ship(records: list[dict[str, Any]]) -> None:
        body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/x-ndjson"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    return ship


def file_shipper(path: Path | None) -> Callable[[list[dict[str, Any]]], None]:
    def ship(records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        if path is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)

    return ship


def collector_from_config(config: Mapping[str, Any]) -> tuple[LogCollector, float]:
    """(collector, poll seconds) for the configuration file's contents; ValueError if bad."""
    paths = config.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError("paths: a non-empty list of file globs is required")
    output = config.get("output") or {"stdout": True}
    if not isinstance(output, Mapping) or len(output) != 1:
        raise ValueError("output: exactly one of http, file, stdout")
    if "http" in output:
        ship = http_shipper(str(output["http"]))
    elif "file" in output:
        ship = file_shipper(Path(str(output["file"])))
    elif "stdout" in output:
        ship = file_shipper(None)
    else:
        raise ValueError(f"output: unknown kind {next(iter(output))!r} (http, file, stdout)")
    start = str(config.get("startAt", "beginning"))
    if start not in ("beginning", "end"):
        raise ValueError("startAt: beginning or end")
    fields = {str(k): str(v) for k, v in (config.get("fields") or {}).items()}
    for name, variable in (config.get("fieldsFromEnv") or {}).items():
        fields[str(name)] = os.environ.get(str(variable), "")
    collector = LogCollector(list(paths), ship, fields, start_at_end=start == "end")
    return collector, float(config.get("pollSeconds", 0.5))


def run(config_path: Path, stop: Callable[[], bool] = lambda: False) -> int:
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
        collector, every = collector_from_config(config)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        log.error("log-collect: %s: %s", config_path, exc)
        return 2
    log.info("log-collect: following %s", ", ".join(collector.paths))
    while not stop():
        collector.poll()
        time.sleep(every)
    collector.poll()
    return 0
