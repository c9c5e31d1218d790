"""File mode's state directory: the last accepted version of every resource, kept on disk.

The store keeps the last good version of a resource in memory, so a broken edit never takes
a working route away while the control plane runs. This module makes that survive a restart:
every resource the store makes effective is written to ``<state dir>/resources/`` (one small
JSON file per resource, named by a hash of its key) and removed when the resource is deleted.
At the next start, a resource whose file is now broken (a document refused, or a file that is
not YAML any more) is served from here, with the error reported as before plus the time of
the version that is served. A resource whose file is gone, or whose file no longer defines
it, is not brought back: its entry is removed.

Each entry also keeps when the resource was first seen, which file mode uses as its creation
time (istiod decides conflicts between resources by creation time, oldest first), so a
restart does not change which of two VirtualServices for one host wins.

Writes are atomic (a temporary file, fsync, rename, then the directory is synced) and done
by a thread of their own, so serving never waits for the disk. Only what changed is written,
and a version already on disk is not written again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.api import ResourceKey
from controlplane.store import ChangeSet, Snapshot

log = logging.getLogger("controlplane.state")

_FORMAT = 1
STATE_DIR_NAME = ".controlplane-state"  # the default, inside the config directory


def now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def document_of(resource: Any) -> dict[str, Any]:
    """The resource as a document that reads back into the same resource."""
    doc: dict[str, Any] = resource.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return doc


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def entry_name(key: ResourceKey) -> str:
    raw = f"{key.kind}/{key.namespace}/{key.name}".encode()
    return hashlib.sha256(raw).hexdigest()[:40] + ".json"


@dataclass
class Entry:
    """One resource's last accepted version, as found on disk at start."""

    key: ResourceKey
    file: str  # the config file that defined it (relative to the config directory)
    origin: str | None
    first_seen: datetime
    accepted_at: datetime
    document: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class _OnDisk:
    digest: bytes
    accepted_at: datetime
    first_seen: datetime


class LastGoodState:
    """The state directory (or, with ``directory=None``, only the first-seen times in memory).

    ``load()`` reads what a previous run left; ``attach(store)`` follows the store from then
    on; ``close()`` writes what is pending and stops the writer."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.entries: dict[ResourceKey, Entry] = {}
        self._first_seen: dict[ResourceKey, datetime] = {}
        self._on_disk: dict[ResourceKey, _OnDisk] = {}
        self._files: dict[ResourceKey, str] = {}
        self._pending: dict[ResourceKey, tuple[Any, str | None, str | None] | None] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._busy = False
        self._failed = False
        self.writes = 0  # files written (for tests and measurements)
        self.removals = 0

    @property
    def resources_dir(self) -> Path | None:
        return self.directory / "resources" if self.directory is not None else None

    # ---- start ------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the entries a previous run wrote; unreadable entries are skipped (logged)."""
        folder = self.resources_dir
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                key = ResourceKey(raw["kind"], raw["namespace"], raw["name"])
                document = raw["document"]
                first_seen = _parse_time(raw.get("firstSeen")) or now()
                accepted_at = _parse_time(raw.get("acceptedAt")) or first_seen
                if path.name != entry_name(key) or not isinstance(document, dict):
                    raise ValueError("entry does not match its name")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("state %s: unreadable entry skipped: %s", path, exc)
                continue
            entry = Entry(
                key,
                str(raw.get("file") or ""),
                raw.get("origin"),
                first_seen,
                accepted_at,
                document,
            )
            self.entries[key] = entry
            self._first_seen[key] = first_seen
            self._files[key] = entry.file
            self._on_disk[key] = _OnDisk(_digest(_canonical(document)), accepted_at, first_seen)

    def first_seen(self, key: ResourceKey, at: datetime | None = None) -> datetime:
        """When the resource was first seen (kept across restarts once it was accepted);
        ``at`` is the time of the scan that sees it (one time for everything one scan
        finds, so that resources seen together tie, and the tie goes by name as in istiod)."""
        seen = self._first_seen.get(key)
        if seen is None:
            seen = self._first_seen[key] = at or now()
        return seen

    def forget(self, key: ResourceKey) -> None:
        """The resource is gone: a new one of the same name is new."""
        self._first_seen.pop(key, None)

    def entries_of_file(self, file: str) -> list[Entry]:
        return [e for e in self.entries.values() if e.file == file]

    def release(self) -> None:
        """Start is over: the documents read at start are no longer needed."""
        for entry in self.entries.values():
            entry.document = None

    # ---- following the store -------------------------------------------------------------

    def set_file(self, key: ResourceKey, file: str) -> None:
        self._files[key] = file

    def on_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        """A store listener: queue what became effective, and what is gone."""
        if self.directory is None or not change.changed:
            return
        with self._cond:
            for key in change.changed:
                resource = snapshot.resources.get(key.kind, {}).get(key)
                if resource is None:
                    self._pending[key] = None
                else:
                    origin = snapshot.origins.get(key)
                    self._pending[key] = (resource, origin, self._files.get(key))
            self._start_writer()
            self._cond.notify()

    def remove(self, keys: Iterable[ResourceKey]) -> None:
        """Remove entries that no longer stand for anything (their file is gone)."""
        if self.directory is None:
            return
        with self._cond:
            for key in keys:
                if key in self._on_disk:
                    self._pending[key] = None
            self._start_writer()
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is on disk."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # ---- the writer ---------------------------------------------------------------------

    def _start_writer(self) -> None:
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._closing)
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, {}
                self._busy = True
            try:
                self._write(batch)
            except Exception:  # never let the disk stop serving
                log.exception("writing the state directory %s failed", self.directory)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, batch: dict[ResourceKey, tuple[Any, str | None, str | None] | None]) -> None:
        folder = self.resources_dir
        assert folder is not None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ignore = folder.parent / ".gitignore"
            if not ignore.exists():
                ignore.write_text("*\n")
        except OSError as exc:
            if not self._failed:
                log.error(
                    "state directory %s cannot be written (%s): the last good versions will not "
                    "survive a restart; use --state-dir to put it elsewhere, or --no-state",
                    self.directory,
                    exc,
                )
                self._failed = True
            return
        touched = False
        staged: list[tuple[ResourceKey, Path, str]] = []
        on_disk: dict[ResourceKey, _OnDisk] = {}
        for key, item in batch.items():
            path = folder / entry_name(key)
            if item is None:
                if self._on_disk.pop(key, None) is not None or path.exists():
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
                    self.removals += 1
                    touched = True
                continue
            resource, origin, file = item
            document = document_of(resource)
            digest = _digest(_canonical(document))
            known = self._on_disk.get(key)
            if known is not None and known.digest == digest:
                continue
            first_seen = known.first_seen if known else self._first_seen.get(key, now())
            accepted_at = now()
            body = {
                "format": _FORMAT,
                "kind": key.kind,
                "namespace": key.namespace,
                "name": key.name,
                "file": file,
                "origin": origin,
                "firstSeen": _iso(first_seen),
                "acceptedAt": _iso(accepted_at),
                "document": document,
            }
            staged.append((key, path, json.dumps(body, ensure_ascii=False)))
            on_disk[key] = _OnDisk(digest, accepted_at, first_seen)
        # Atomic per entry: a temporary file, its data on disk, then the rename. For a large
        # batch (the first start) one syncfs(2) puts every temporary file on disk with one
        # flush of the device instead of one fsync each (2,000 entries: 0.2 s instead of 7 s).
        written: list[tuple[ResourceKey, Path, Path]] = []
        for key, path, text in staged:
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(text.encode())
            except OSError as exc:
                log.error("state %s for %s cannot be written: %s", path, key, exc)
                continue
            written.append((key, path, tmp))
        synced = len(written) > _SYNCFS_FROM and _syncfs(folder)
        for key, path, tmp in written:
            try:
                if not synced:
                    _fsync_path(tmp)
                os.replace(tmp, path)
            except OSError as exc:
                log.error("state %s for %s cannot be written: %s", path, key, exc)
                continue
            self._on_disk[key] = on_disk[key]
            self.writes += 1
            touched = True
        if touched:
            _sync_dir(folder)


_SYNCFS_FROM = 16  # entries in one batch from which one syncfs beats an fsync each


def _syncfs(folder: Path) -> bool:
    """syncfs(2) on the filesystem holding ``folder``; False where there is none (then each
    file is synced on its own)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        return bool(syncfs(fd) == 0)
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def served_message(entry: Entry) -> str:
    return f"the last good version from {_iso(entry.accepted_at)} is served"


__all__ = ["STATE_DIR_NAME", "Entry", "LastGoodState", "document_of", "served_message"]
