"""`controlplane diff FILE...`: what a change would do, before it is applied.

The current mesh (a directory read as file mode reads it, or a cluster listed read-only) goes
into a ``Store``; its snapshot is "before". The changed files are then applied to that same
store, exactly as a source would hand them over (a refused document keeps its last good
version, as when serving); the result is "after". Every workload's proxy (each Pod: a sidecar,
or a gateway when a Gateway selects it) is compiled against both by the same pure compiler
that serves them (``SnapshotCompiler``), and the Envoy resources are compared by their
serialized bytes. The answer: for each proxy, how many resources of each type would be added,
changed or removed; for one chosen proxy, a readable diff of each; and every finding analyze
would report on the result (new ones marked), with a non-zero exit for CI when there is an
error.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from controlplane.analyze import _order
from controlplane.analyze.describe import is_gateway_pod, workload_of, workload_proxy
from controlplane.analyze.loading import Loaded, Read, read_paths, store_findings
from controlplane.api.issues import Issue, Level, ResourceKey
from controlplane.api.resources import key_of
from controlplane.compile import SnapshotCompiler
from controlplane.compile.compiler import ProxyResources
from controlplane.compile.resources import SHORT_NAMES
from controlplane.store.registry import pod_tls_mode
from controlplane.store.snapshot import Snapshot

TYPES = ("cds", "eds", "lds", "rds")
_LEVEL_ORDER = {Level.ERROR: 0, Level.WARNING: 1, Level.INFO: 2}


@dataclass
class ProxyChange:
    """What would change for one proxy, by type short name."""

    proxy: str  # namespace/pod
    workload: str
    added: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)

    def count(self, short: str) -> int:
        return sum(len(d.get(short, ())) for d in (self.added, self.changed, self.removed))

    @property
    def total(self) -> int:
        return sum(self.count(t) for t in TYPES)


@dataclass
class DiffReport:
    proxies: list[ProxyChange]
    total_proxies: int
    findings: list[Issue]
    new_findings: set[int]  # indexes into findings
    detail: dict[str, Any] | None = None  # the chosen proxy's readable diff

    def exit_status(self, threshold: Level = Level.ERROR) -> int:
        worst = _LEVEL_ORDER[threshold]
        return 1 if any(_LEVEL_ORDER[i.severity] <= worst for i in self.findings) else 0

    def by_workload(self) -> dict[str, dict[str, int]]:
        """namespace/workload -> the number of its proxies that would change, and the
        resources that would change on them, by type (summed over its proxies)."""
        out: dict[str, dict[str, int]] = {}
        for p in self.proxies:
            row = out.setdefault(p.workload, {"proxies": 0, **dict.fromkeys(TYPES, 0)})
            row["proxies"] += 1
            for t in TYPES:
                row[t] += p.count(t)
        return dict(sorted(out.items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "proxies": self.total_proxies,
            "byWorkload": self.by_workload(),
            "affected": [
                {
                    "proxy": p.proxy,
                    "workload": p.workload,
                    "counts": {t: p.count(t) for t in TYPES},
                    "added": p.added,
                    "changed": p.changed,
                    "removed": p.removed,
                }
                for p in self.proxies
            ],
            "findings": [
                {
                    "code": i.code.id,
                    "title": i.code.title,
                    "level": str(i.severity),
                    "resource": str(i.resource) if i.resource else None,
                    "origin": i.origin,
                    "path": i.path,
                    "message": i.reason,
                    "new": n in self.new_findings,
                }
                for n, i in enumerate(self.findings)
            ],
            "diff": self.detail,
        }


def _workloads(snapshot: Snapshot, meshed_only: bool) -> dict[str, Any]:
    """namespace/name -> Pod, for every pod that runs a proxy (``meshed_only``: injected,
    as the sidecar injector marks it, or a gateway; else every pod)."""
    return {
        f"{k.namespace}/{k.name}": pod
        for k, pod in sorted(snapshot.of_kind("Pod").items(), key=lambda kv: str(kv[0]))
        if not meshed_only or pod_tls_mode(pod) == "istio" or is_gateway_pod(snapshot, pod)
    }


def _compile(compiler: SnapshotCompiler, snapshot: Snapshot, pod: Any) -> ProxyResources:
    return compiler.compile(workload_proxy(snapshot, pod))


def _as_text(resource: Any) -> list[str]:
    as_dict = json_format.MessageToDict(resource.message, preserving_proto_field_name=False)
    return json.dumps(as_dict, indent=2, sort_keys=True).splitlines(keepends=True)


def compare(
    before: Snapshot, after: Snapshot, chosen: str | None = None, meshed_only: bool = False
) -> tuple[list[ProxyChange], int, dict[str, Any] | None]:
    """Per proxy (every pod of ``before`` or ``after``), what its resources would become."""
    old_compiler, new_compiler = SnapshotCompiler(before), SnapshotCompiler(after)
    old_pods, new_pods = _workloads(before, meshed_only), _workloads(after, meshed_only)
    changes: list[ProxyChange] = []
    detail: dict[str, Any] | None = None
    names = sorted(set(old_pods) | set(new_pods))
    for name in names:
        old = _compile(old_compiler, before, old_pods[name]) if name in old_pods else None
        new = _compile(new_compiler, after, new_pods[name]) if name in new_pods else None
        pod = new_pods.get(name) or old_pods[name]
        change = ProxyChange(name, f"{pod.metadata.namespace}/{workload_of(pod)}")
        texts: list[str] = []
        for type_url, short in SHORT_NAMES.items():
            if short not in TYPES:
                continue
            a = old.of(type_url) if old is not None else {}
            b = new.of(type_url) if new is not None else {}
            added = sorted(set(b) - set(a))
            removed = sorted(set(a) - set(b))
            changed = sorted(n for n in set(a) & set(b) if a[n].value != b[n].value)
            if added:
                change.added[short] = added
            if removed:
                change.removed[short] = removed
            if changed:
                change.changed[short] = changed
            if chosen is not None and chosen in (name, pod.metadata.name):
                for n in sorted({*added, *removed, *changed}):
                    texts += difflib.unified_diff(
                        _as_text(a[n]) if n in a else [],
                        _as_text(b[n]) if n in b else [],
                        fromfile=f"before {short} {n}",
                        tofile=f"after {short} {n}",
                    )
        if chosen is not None and chosen in (name, pod.metadata.name):
            detail = {"proxy": name, "text": "".join(texts)}
        if change.total:
            changes.append(change)
    return changes, len(names), detail


def apply_changes(loaded: Loaded, changed: Read, deletes: Sequence[ResourceKey] = ()) -> Snapshot:
    """Apply the changed files (and deletions) to the loaded store as a source would
    (refused documents keep their last good version); the store's new snapshot."""
    loaded.store.apply(upserts=changed.submissions, rejections=changed.rejections, deletes=deletes)
    return loaded.snapshot


def parse_key(text: str) -> ResourceKey:
    """``KIND/NAMESPACE/NAME`` (or ``KIND/NAME`` in the default namespace)."""
    parts = text.split("/")
    if len(parts) == 2:
        parts = [parts[0], "default", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{text!r} is not KIND/NAMESPACE/NAME")
    return ResourceKey(parts[0], parts[1], parts[2])


def diff(
    loaded: Loaded,
    files: Sequence[Path],
    *,
    default_namespace: str = "default",
    proxy: str | None = None,
    deletes: Sequence[ResourceKey] = (),
) -> DiffReport:
    before = loaded.snapshot
    before_findings = {_identity(i) for i in [*loaded.read.issues, *store_findings(before)]}
    changed = read_paths(files, default_namespace)
    after = apply_changes(loaded, changed, deletes)
    changes, total, detail = compare(before, after, proxy, loaded.meshed_only)
    # A resource the files redefine is judged by its new version only: the findings the
    # current version's document had no longer apply.
    redefined = (
        {key_of(s.resource) for s in changed.submissions}
        | {r.key for r in changed.rejections}
        | set(deletes)
    )
    current = [i for i in loaded.read.issues if i.resource not in redefined]
    findings = _dedupe([*current, *changed.issues, *store_findings(after)])
    findings.sort(key=_order)
    new = {n for n, i in enumerate(findings) if _identity(i) not in before_findings}
    return DiffReport(changes, total, findings, new, detail)


def _identity(issue: Issue) -> tuple[object, ...]:
    return (issue.code.id, str(issue.resource), issue.path, issue.reason)


def _dedupe(issues: Iterable[Issue]) -> list[Issue]:
    seen: set[tuple[object, ...]] = set()
    out = []
    for issue in issues:
        ident = (*_identity(issue), issue.origin)
        if ident not in seen:
            seen.add(ident)
            out.append(issue)
    return out


def render_text(report: DiffReport) -> str:
    lines: list[str] = []
    affected = report.proxies
    lines.append(
        f"{len(affected)} of {report.total_proxies} proxies would change"
        + (":" if affected else ".")
    )
    if affected:
        rows = report.by_workload()
        width = max(len("WORKLOAD"), *(len(w) for w in rows))
        header = "  ".join(t.upper() for t in TYPES)
        lines.append(f"   {'WORKLOAD'.ljust(width)}  PROXIES  {header}")
        for workload, row in rows.items():
            counts = "  ".join(str(row[t]).rjust(3) for t in TYPES)
            lines.append(f"   {workload.ljust(width)}  {str(row['proxies']).rjust(7)}  {counts}")
        totals = {t: sum(p.count(t) for p in affected) for t in TYPES}
        lines.append("   total: " + ", ".join(f"{n} {t.upper()}" for t, n in totals.items() if n))
    if report.detail is not None:
        lines.append(f"Diff for {report.detail['proxy']}:")
        lines.append(report.detail["text"].rstrip("\n") or "   (no change)")
    if report.findings:
        lines.append("Findings:")
        for n, issue in enumerate(report.findings):
            mark = " (new)" if n in report.new_findings else ""
            lines.append(f"   {issue}{mark}")
    else:
        lines.append("No validation issues found.")
    return "\n".join(lines) + "\n"


def counts_by_workload(report: DiffReport) -> Mapping[str, Mapping[str, int]]:
    """proxy -> type -> number of resources that would change (tests and the closing note)."""
    return {p.proxy: {t: p.count(t) for t in TYPES if p.count(t)} for p in report.proxies}
