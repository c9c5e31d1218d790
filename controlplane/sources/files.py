"""The file source: a directory of Kubernetes/Istio YAML, watched for changes.

Every ``*.yaml``/``*.yml``/``*.json`` file below the directory is read as multi-document
YAML. Additions, edits and deletions are picked up without a restart. A document that cannot
be read is reported (file:line, resource, field path, reason) and the last good version of
that resource keeps serving; a file that fails to parse as YAML keeps all of its previous
resources. Nothing is deleted from the mesh unless the user removed it.

``FileSource`` keeps a store in step with the directory; ``DirectorySource`` is the Source
that `controlplane serve` hands the composition root (``controlplane.app``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.api import (
    InvalidResource,
    Issue,
    ResourceKey,
    document_key,
    key_of,
    load,
    load_mesh_config,
)
from controlplane.api.issues import Codes, Level
from controlplane.api.mesh import (
    DEFAULT_ROOT_NAMESPACE,
    MESH_CONFIG_KEY,
    MESH_CONFIG_NAME,
    MESH_CONFIGMAP_DATA_KEY,
    MESH_FILE_NAME,
)
from controlplane.sources import MeshCa
from controlplane.sources.state import STATE_DIR_NAME, LastGoodState, now, served_message
from controlplane.store import Rejection, Store, Submission
from controlplane.store.liveness import WatchLiveness

log = logging.getLogger("controlplane.files")
_control_plane_log = logging.getLogger("controlplane")  # the lines `serve` has always logged

_SUFFIXES = (".yaml", ".yml", ".json")
_DOC_SEPARATOR = re.compile(r"^---(?:\s.*)?$")
# libyaml's safe loader when PyYAML was built with it (about ten times faster), else PyYAML's.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Reporter = Callable[[Issue], None]

# Kubernetes stores an object in one etcd value, and etcd refuses requests over 1.5 MiB
# (its --max-request-bytes default, 1572864): a larger object cannot exist in a cluster, so
# a larger document is refused here too, before YAML parses it.
MAX_OBJECT_BYTES = 1_572_864
# A file is a batch of objects, like `kubectl apply -f`; this bounds what one file can cost
# (its text is held while it is read), checked from its size before it is read.
MAX_FILE_BYTES = 32 * 1024 * 1024
# How long a file must hold still (same size and mtime) before a watcher reads it, and how
# long a file that does not parse is taken to be still being written (retried, not
# reported). An atomic rename is always complete; see the README, "Writing files safely".
SETTLE = 0.2
FILES_WATCH = "files"  # the directory watcher's name in the liveness check
UNREADABLE_GRACE = 2.0


def _too_large(what: str, size: int, limit: int, why: str) -> str:
    return f"{what} is {size:,} bytes, more than the {limit:,} bytes {why}; not read"


def _default_report(issue: Issue) -> None:
    if issue.severity is Level.ERROR:
        log.error("%s", issue)
    elif issue.severity is Level.WARNING:
        log.warning("%s", issue)
    else:
        log.info("%s", issue)


@dataclass(frozen=True)
class Document:
    """One YAML document of a file: its parsed content or the YAML error, and where it starts."""

    line: int  # 1-based
    content: Any = None
    error: str | None = None
    too_large: bool = False  # not parsed: larger than Kubernetes stores (MAX_OBJECT_BYTES)


def split_documents(text: str) -> list[Document]:
    """Split multi-document YAML, keeping each document's line so errors can point at it."""
    chunks: list[tuple[int, list[str]]] = [(1, [])]
    for number, line in enumerate(text.splitlines(), start=1):
        if _DOC_SEPARATOR.match(line):
            chunks.append((number + 1, []))
        else:
            chunks[-1][1].append(line)
    docs: list[Document] = []
    for start, lines in chunks:
        body = "\n".join(lines)
        # Characters first (cheap); bytes only when the characters alone may be too many.
        if len(body) > MAX_OBJECT_BYTES // 4 and (size := len(body.encode())) > MAX_OBJECT_BYTES:
            why = "Kubernetes stores in one object (etcd's request limit)"
            message = _too_large("this document", size, MAX_OBJECT_BYTES, why)
            docs.append(Document(line=start, error=message, too_large=True))
            continue
        if not body.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in lines):
            continue
        try:
            content = yaml.load(body, Loader=_SAFE_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            error_line = start + (mark.line if mark is not None else 0)
            problem = getattr(exc, "problem", None) or str(exc)
            docs.append(Document(line=error_line, error=f"invalid YAML: {problem}"))
            continue
        if content is None:
            continue
        docs.append(Document(line=start, content=content))
    return docs


@dataclass
class _FileState:
    stamp: tuple[int, int]
    keys: set[ResourceKey] = field(default_factory=set)


@dataclass
class ReadResult:
    submissions: list[Submission] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    keys: set[ResourceKey] = field(default_factory=set)
    unreadable: bool = False  # some document could not be parsed: keep what the file had


def read_file(
    path: Path, display: str, default_namespace: str = "default", *, mesh: bool = False
) -> ReadResult:
    """Parse and validate every document of one file (pure apart from reading it).

    ``mesh``: the file is ``mesh.yaml``: its documents without a ``kind`` are Istio's
    MeshConfig YAML (the mesh config), the others resources as in any file."""
    result = ReadResult()
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            result.unreadable = True
            why = "a file may hold (each object at most 1.5 MiB, as in Kubernetes)"
            message = _too_large("the file", size, MAX_FILE_BYTES, why)
            result.issues.append(Issue(Codes.TOO_LARGE, "", message, origin=display))
            return result
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result.unreadable = True
        result.issues.append(
            Issue(Codes.YAML_ERROR, "", f"cannot read file: {exc}", origin=display)
        )
        return result
    for doc in split_documents(text):
        origin = f"{display}:{doc.line}"
        if doc.error is not None:
            result.unreadable = True
            code = Codes.TOO_LARGE if doc.too_large else Codes.YAML_ERROR
            result.issues.append(Issue(code, "", doc.error, origin=origin))
            continue
        items = (
            doc.content.get("items")
            if isinstance(doc.content, dict) and doc.content.get("kind", "").endswith("List")
            else None
        )
        if mesh and not (isinstance(doc.content, dict) and "kind" in doc.content):
            # MeshConfig has no ``kind``: a document with one is a resource, as elsewhere.
            read_mesh_config(doc.content, origin, "", result)
            continue
        for content in items if isinstance(items, list) else [doc.content]:
            _read_document(content, origin, default_namespace, result)
    return result


def is_mesh_configmap(content: Any, default_namespace: str = "default") -> bool:
    """The ``istio`` ConfigMap of the root namespace: its ``mesh`` key is the mesh config."""
    if not isinstance(content, dict) or content.get("kind") != "ConfigMap":
        return False
    if content.get("apiVersion") != "v1":
        return False
    meta = content.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != MESH_CONFIG_NAME:
        return False
    return (meta.get("namespace") or default_namespace) == DEFAULT_ROOT_NAMESPACE


def mesh_of_configmap(content: dict[str, Any], origin: str, result: ReadResult) -> None:
    """The mesh config from the istio ConfigMap's ``data.mesh`` (a YAML string)."""
    data = content.get("data")
    text = data.get(MESH_CONFIGMAP_DATA_KEY) if isinstance(data, dict) else None
    if text is None:
        return  # istiod falls back to its defaults: so does Snapshot.mesh
    prefix = f"data.{MESH_CONFIGMAP_DATA_KEY}"
    if not isinstance(text, str):
        _refuse_mesh(Issue(Codes.SCHEMA_ERROR, prefix, "must be a string of YAML"), origin, result)
        return
    try:
        mesh = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        _refuse_mesh(Issue(Codes.YAML_ERROR, prefix, f"invalid YAML: {problem}"), origin, result)
        return
    read_mesh_config(mesh, origin, prefix + ".", result)


def read_mesh_config(mesh: Any, origin: str, prefix: str, result: ReadResult) -> None:
    """One MeshConfig (parsed YAML) as the ``MeshConfig`` resource, or its refusal."""
    try:
        resource, found = load_mesh_config(mesh, prefix)
    except InvalidResource as exc:
        for issue in exc.issues:
            _refuse_mesh(issue, origin, result)
        return
    issues = [i.with_context(MESH_CONFIG_KEY, origin) for i in found]
    result.issues.extend(issues)
    result.keys.add(MESH_CONFIG_KEY)
    result.submissions.append(Submission(resource, tuple(issues), origin))


def _refuse_mesh(issue: Issue, origin: str, result: ReadResult) -> None:
    issue = issue.with_context(MESH_CONFIG_KEY, origin)
    result.issues.append(issue)
    result.keys.add(MESH_CONFIG_KEY)
    for i, rejection in enumerate(result.rejections):
        if rejection.key == MESH_CONFIG_KEY and rejection.origin == origin:
            result.rejections[i] = Rejection(
                MESH_CONFIG_KEY, (*rejection.issues, issue), origin, None, None
            )
            return
    result.rejections.append(Rejection(MESH_CONFIG_KEY, (issue,), origin, None, None))


def _read_document(content: Any, origin: str, default_namespace: str, result: ReadResult) -> None:
    if is_mesh_configmap(content, default_namespace):
        mesh_of_configmap(content, origin, result)
        return
    key = document_key(content, default_namespace)
    try:
        resource, found = load(content, default_namespace)
    except InvalidResource as exc:
        issues = [i.with_context(key, origin) for i in exc.issues]
        if any(i.code is Codes.UNKNOWN_KIND for i in issues):
            result.issues.extend(issues)  # not ours to read; not an error in the mesh
            return
        result.issues.extend(issues)
        if key is None:
            result.unreadable = True
            return
        result.keys.add(key)
        generation = None
        if isinstance(content, dict) and isinstance(content.get("metadata"), dict):
            generation = content["metadata"].get("generation")
        result.rejections.append(Rejection(key, tuple(issues), origin, generation, content))
        return
    key = key_of(resource)
    issues = [i.with_context(key, origin) for i in found]
    result.issues.extend(issues)
    result.keys.add(key)
    result.submissions.append(Submission(resource, tuple(issues), origin))


class FileSource:
    """Keeps the store in step with a directory."""

    def __init__(
        self,
        root: Path,
        store: Store,
        *,
        default_namespace: str = "default",
        report: Reporter = _default_report,
        state: LastGoodState | None = None,
        mesh_file: Path | None = None,
    ) -> None:
        self.root = Path(root).absolute()  # watchers report absolute paths
        # The mesh config (Istio's MeshConfig YAML): ROOT/mesh.yaml unless named elsewhere.
        self.mesh_file = Path(mesh_file).absolute() if mesh_file else self.root / MESH_FILE_NAME
        self.store = store
        # First-seen times (file mode's creation time) and, with a directory, the last good
        # versions a previous run accepted, served at the first scan where a file is broken.
        self.state = state if state is not None else LastGoodState(None)
        self._first_scan = True
        self.liveness: WatchLiveness | None = None  # told of every pass of ``run``
        self._seen_at = now()
        self.default_namespace = default_namespace
        self.report = report
        self._files: dict[Path, _FileState] = {}
        self._owner: dict[ResourceKey, Path] = {}
        # Files seen changing and not read yet (still being written?): looked at again soon.
        self.unsettled: set[Path] = set()
        # The inode of the version of each file last read: a file renamed over it (an atomic
        # write) has another, and is read at once, with no settle wait.
        self._inodes: dict[Path, int] = {}

    def _candidates(self) -> dict[Path, tuple[int, int]]:
        found: dict[Path, tuple[int, int]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or not name.endswith(_SUFFIXES):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                found[path] = (st.st_mtime_ns, st.st_size)
        if not self.mesh_file.is_relative_to(self.root):
            try:
                st = self.mesh_file.stat()
            except OSError:
                return found
            found[self.mesh_file] = (st.st_mtime_ns, st.st_size)
        return found

    def _changed_paths(
        self, paths: Iterable[Path]
    ) -> tuple[dict[Path, tuple[int, int]], set[Path]] | None:
        """The candidates among ``paths`` (what a watcher reported) and the tracked files
        among them that are gone; None when only a full scan can tell (a directory event)."""
        current: dict[Path, tuple[int, int]] = {}
        gone: set[Path] = set()
        for path in paths:
            try:
                relative = path.relative_to(self.root)
            except ValueError:
                return None  # spelled differently (a link?): look at everything
            if any(part.startswith(".") for part in relative.parts):
                continue
            try:
                st = path.stat()
            except OSError:
                gone |= {f for f in self._files if f == path or path in f.parents}
                continue
            if stat.S_ISDIR(st.st_mode):
                return None
            if path.name.endswith(_SUFFIXES):
                current[path] = (st.st_mtime_ns, st.st_size)
        return current, gone

    def _settled(self, path: Path, stamp: tuple[int, int], settle: float) -> bool:
        """Whether a changed file has held still for ``settle`` seconds (its mtime is that
        old); if not, it is left for a later look (``unsettled``)."""
        if settle <= 0 or time.time() - stamp[0] / 1e9 >= settle:
            return True
        self.unsettled.add(path)
        return False

    def _complete(
        self, path: Path, stamp: tuple[int, int], result: ReadResult, settle: float
    ) -> bool:
        """Whether what was read is the whole file: it did not change while being read, and
        (when it does not parse) it has not changed for ``UNREADABLE_GRACE`` seconds, since
        a half-written file rarely parses. Otherwise it is left for a later look."""
        if settle <= 0:
            return True
        try:
            st = path.stat()
        except OSError:
            return True  # gone: the next scan removes it
        if (st.st_mtime_ns, st.st_size) != stamp or (
            result.unreadable and time.time() - stamp[0] / 1e9 < UNREADABLE_GRACE
        ):
            self.unsettled.add(path)
            return False
        return True

    def scan(self, paths: Iterable[Path] | None = None, settle: float = 0.0) -> bool:
        """Read what changed since the last scan and apply it to the store in one batch:
        everything below the directory, or only ``paths`` when a watcher said which.

        With ``settle`` (the watcher's), a file is read only once it has held still that
        long (one renamed over a file already read is whole, and read at once), and what was
        read is applied only if the file did not change meanwhile and
        parses (or has stopped changing): a file being written is never half applied.
        Returns True when the store changed.
        """
        if paths is None:
            self.unsettled.clear()  # everything is looked at again
        else:
            paths = set(paths)
            self.unsettled -= paths  # looked at again now (put back if still unsettled)
        partial = self._changed_paths(paths) if paths is not None else None
        if partial is None:
            current = self._candidates()
            gone = set(self._files) - set(current)
        else:
            current, gone = partial
        upserts: list[Submission] = []
        rejections: list[Rejection] = []
        deletes: set[ResourceKey] = set()
        restoring = self._first_scan
        self._first_scan = False
        self._seen_at = now()
        for path in sorted(gone):
            self.unsettled.discard(path)
            self._inodes.pop(path, None)
            state = self._files.pop(path, None)
            if state is None:
                continue
            for key in state.keys:
                if self._owner.get(key) == path:
                    del self._owner[key]
                    deletes.add(key)
            log.info("file %s removed", self._display(path))
        for path, stamp in sorted(current.items()):
            previous = self._files.get(path)
            self.unsettled.discard(path)
            if previous is not None and previous.stamp == stamp:
                continue
            inode = _inode(path)
            replaced = previous is not None and inode != self._inodes.get(path)
            if not replaced and not self._settled(path, stamp, settle):
                continue
            result = read_file(
                path,
                self._display(path),
                self.default_namespace,
                mesh=path == self.mesh_file,
            )
            if not self._complete(path, stamp, result, settle):
                continue
            if inode is not None:
                self._inodes[path] = inode
            for issue in result.issues:
                self.report(issue)
            old_keys = previous.keys if previous else set()
            keys = set(result.keys)
            if result.unreadable:
                keys |= old_keys  # unknown content: keep everything the file had
                if restoring:
                    result.rejections += self._unreadable_restores(path, result, keys)
            for key in old_keys - keys:
                if self._owner.get(key) == path:
                    del self._owner[key]
                    deletes.add(key)
            for key in keys:
                owner = self._owner.get(key)
                if (
                    owner is not None
                    and owner != path
                    and (owner in current or owner in self._files)
                ):
                    self.report(
                        Issue(
                            Codes.SCHEMA_ERROR,
                            "metadata.name",
                            f"also defined in {self._display(owner)}; the definition there is used",
                            key,
                            self._display(path),
                            Level.WARNING,
                        )
                    )
                    continue
                self._owner[key] = path
            upserts += [
                self._stamped(s)
                for s in result.submissions
                if self._owner.get(key_of(s.resource)) == path
            ]
            rejections += [r for r in result.rejections if self._owner.get(r.key) == path]
            self._files[path] = _FileState(stamp, keys)
        deletes -= {key_of(s.resource) for s in upserts} | {r.key for r in rejections}
        for key in deletes:
            self.state.forget(key)
        restored = self._restores(rejections, upserts) if restoring else []
        if not (upserts or rejections or deletes):
            if restoring:
                self._settle_state()
            return False
        change = self.store.apply(
            upserts=upserts, deletes=deletes, rejections=rejections, restored=restored
        )
        if restoring:
            self._settle_state()
        return bool(change)

    # ---- last good versions and first-seen times (sources/state.py) ------------------------

    def _stamped(self, sub: Submission) -> Submission:
        """File mode's creation time: the time the resource was first seen (istiod orders
        conflicting resources by creation time), unless the document says it."""
        key = key_of(sub.resource)
        self.state.set_file(key, self._display(self._owner[key]))
        meta = sub.resource.metadata
        if meta.creation_timestamp is not None:
            return sub
        stamped = meta.model_copy(
            update={"creation_timestamp": self.state.first_seen(key, self._seen_at)}
        )
        return Submission(
            sub.resource.model_copy(update={"metadata": stamped}), sub.issues, sub.origin
        )

    def _unreadable_restores(
        self, path: Path, result: ReadResult, keys: set[ResourceKey]
    ) -> list[Rejection]:
        """At start, a file that does not parse: what it defined last time is what the
        state directory says it defined; each of those resources is refused with the file's
        error (and served from its last good version)."""
        found: list[Rejection] = []
        errors = tuple(i for i in result.issues if i.severity is Level.ERROR)
        rejected = {r.key for r in result.rejections} | {
            key_of(s.resource) for s in result.submissions
        }
        for entry in self.state.entries_of_file(self._display(path)):
            if entry.key in rejected:
                continue
            keys.add(entry.key)
            found.append(
                Rejection(
                    entry.key,
                    tuple(i.with_context(entry.key, i.origin) for i in errors),
                    entry.origin or self._display(path),
                )
            )
        return found

    def _restores(self, rejections: list[Rejection], upserts: list[Submission]) -> list[Any]:
        """The last good versions to hand the store with the first scan: for every refused
        resource (served instead of nothing, and said so), and for every VirtualService (the
        version to keep if the new one is broken in context)."""
        restored: list[Any] = []
        for i, rejection in enumerate(rejections):
            entry = self.state.entries.get(rejection.key)
            resource = self._entry_resource(entry)
            if entry is None or resource is None:
                continue
            restored.append(resource)
            served = Issue(
                Codes.LAST_GOOD_SERVED,
                "",
                served_message(entry),
                rejection.key,
                rejection.origin,
            )
            self.report(served)
            rejections[i] = dataclasses.replace(rejection, issues=(*rejection.issues, served))
        for sub in upserts:
            key = key_of(sub.resource)
            if key.kind == "VirtualService":
                resource = self._entry_resource(self.state.entries.get(key))
                if resource is not None:
                    restored.append(resource)
        return restored

    def _entry_resource(self, entry: Any) -> Any:
        if entry is None or entry.document is None:
            return None
        try:
            resource, _ = load(entry.document, self.default_namespace)
        except InvalidResource as exc:
            log.warning("the last good version of %s no longer reads: %s", entry.key, exc)
            return None
        return resource

    def _settle_state(self) -> None:
        """After the first scan: entries of resources that exist no more are removed (a
        deleted file never comes back), and the documents read at start are let go."""
        effective = self.store.snapshot.resources
        gone = [k for k in self.state.entries if k not in effective.get(k.kind, {})]
        self.state.remove(gone)
        for key in gone:
            self.state.forget(key)
        self.state.release()

    def _display(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    async def run(
        self, poll_interval: float = 1.0, rescan_every: float = 10.0, settle: float = SETTLE
    ) -> None:
        """Scan now, then on every filesystem event; when events are quiet, rescan everything
        every ``rescan_every`` seconds (checked every ``poll_interval``), as a safety net for
        events a filesystem does not deliver. A full scan of a large directory costs tens of
        milliseconds, so it is not done every second. Files still being written (see
        ``scan``'s ``settle``) are looked at again every ``settle / 2`` seconds."""
        from watchfiles import awatch

        self.scan(settle=settle)
        if settle > 0:
            poll_interval = min(poll_interval, settle / 2)
        last_full = time.monotonic()
        stop = asyncio.Event()
        try:
            outside = [] if self.mesh_file.is_relative_to(self.root) else [self.mesh_file.parent]
            async for changes in awatch(
                self.root,
                *outside,
                debounce=30,
                step=10,
                stop_event=stop,
                rust_timeout=int(poll_interval * 1000),
                yield_on_timeout=True,
                recursive=True,
            ):
                if self.liveness is not None:
                    # every pass (an event or a quiet poll) proves the watcher alive
                    self.liveness.event(FILES_WATCH)
                try:
                    if changes or self.unsettled:
                        # only the reported paths, and those still being written
                        paths = {Path(p) for _, p in changes} | self.unsettled
                        self.scan(paths, settle=settle)
                    elif time.monotonic() - last_full >= rescan_every:
                        last_full = time.monotonic()
                        self.scan(settle=settle)
                except Exception:  # never let one bad file stop the watcher
                    log.exception("scanning %s failed", self.root)
        finally:
            stop.set()


class DirectorySource:
    """File mode's source: one directory, watched (a ``controlplane.sources.Source``).

    ``ca_dir`` (optional) holds the mesh CA in the cacerts layout, created if empty; a CA
    that cannot be loaded stops the start."""

    def __init__(
        self,
        config_dir: Path,
        ca_dir: Path | None = None,
        state_dir: Path | None = None,
        keep_state: bool = True,
        mesh_config: Path | None = None,
    ) -> None:
        self.config_dir = config_dir
        self.mesh_config = mesh_config  # None: CONFIG_DIR/mesh.yaml
        self.ca_dir = ca_dir
        # The last good versions, kept across restarts (default: a hidden directory inside
        # the config directory, which the watcher ignores); keep_state=False keeps none.
        if keep_state:
            self.state_dir: Path | None = state_dir or config_dir / STATE_DIR_NAME
        else:
            self.state_dir = None
        self._files: FileSource | None = None
        self._state: LastGoodState | None = None
        self.liveness = WatchLiveness()  # the directory watcher, kind "files"

    @property
    def files(self) -> FileSource:
        if self._files is None:
            raise RuntimeError("the directory source is not open")
        return self._files

    async def open(self, store: Store) -> None:
        state = self._state = LastGoodState(self.state_dir)
        state.load()
        store.subscribe(state.on_change)
        self._files = FileSource(self.config_dir, store, state=state, mesh_file=self.mesh_config)
        self._files.liveness = self.liveness
        self._files.scan()
        self.liveness.watching([FILES_WATCH])

    def ready(self) -> bool:
        return True

    def mesh_ca(self) -> MeshCa | None:
        ca_dir = self.ca_dir
        if ca_dir is None:
            return None

        def refuse(exc: Exception) -> None:
            from controlplane.ca import CAError

            if isinstance(exc, (CAError, ValueError, OSError)):
                raise SystemExit(f"controlplane serve: --ca-dir {ca_dir}: {exc}") from None
            raise exc

        return MeshCa(ca_dir, refuse)

    def status_client(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        watcher = asyncio.create_task(self.files.run(), name="file-source")
        try:
            yield
        finally:
            watcher.cancel()
            if self._state is not None:
                await asyncio.to_thread(self._state.close)  # what is queued reaches the disk

    def announce(self, host: str, xds_port: int, debug_port: int, debug_host: str) -> None:
        snapshot = self.files.store.snapshot
        _control_plane_log.info(
            "serving %d resources from %s: xDS on %s:%d, debug on http://%s:%d",
            sum(len(v) for v in snapshot.resources.values()),
            self.config_dir,
            host,
            xds_port,
            debug_host,
            debug_port,
        )

    async def wait(self) -> None:
        await asyncio.Event().wait()  # a directory never goes away on its own

    def exit_code(self) -> int:
        return 0


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None
