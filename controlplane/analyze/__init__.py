"""`controlplane analyze`: check Istio YAML offline, as ``istioctl analyze`` does.

The findings come from the same places as the running control plane's: each document goes
through the file source's reader (``controlplane.api`` parsing and validation), and the
accepted resources through a ``Store``, whose in-context checks (``controlplane.store.context``:
missing subsets, hosts and ports, conflicting VirtualServices, ineffective matches, subsets
that select no pod) feed the logs and status, as does the note on what a refused security
policy does meanwhile (CP0203: which workloads it fails closed for, and how). A message
therefore reads the same here, in the log and in status.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.api.injection_templates import injector_configmap_findings
from controlplane.api.issues import Codes, Issue, Level, ResourceKey
from controlplane.api.mesh import MESH_FILE_NAME
from controlplane.api.resources import ISTIO_GROUPS, split_api_version
from controlplane.compile.check import check_resource
from controlplane.sources.files import read_file
from controlplane.store import Rejection, Store, Submission, found_by_store
from controlplane.store.gatewayapi import findings as gateway_api_findings

SUFFIXES = (".yaml", ".yml", ".json")
_LEVEL_ORDER = {Level.ERROR: 0, Level.WARNING: 1, Level.INFO: 2}


@dataclass
class Report:
    """What one analysis found, over which files and how many resources."""

    issues: list[Issue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    resources: int = 0

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity is Level.ERROR]

    def exit_status(self, threshold: Level = Level.ERROR) -> int:
        """Non-zero when any finding is at ``threshold`` or worse (errors by default), so
        analyze can gate a CI pipeline (istioctl's ``--failure-threshold``)."""
        worst = _LEVEL_ORDER[threshold]
        return 1 if any(_LEVEL_ORDER[i.severity] <= worst for i in self.issues) else 0

    def as_json(self) -> list[dict[str, object]]:
        return [
            {
                "code": i.code.id,
                "title": i.code.title,
                "level": str(i.severity),
                "resource": str(i.resource) if i.resource else None,
                "origin": i.origin,
                "path": i.path,
                "message": i.reason,
            }
            for i in self.issues
        ]


def collect_files(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """Every YAML/JSON file named or below a named directory, with the name to show."""
    out: list[tuple[Path, str]] = []
    for root in paths:
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.endswith(SUFFIXES) and not name.startswith("."):
                        path = Path(dirpath) / name
                        out.append((path, str(path)))
        else:
            out.append((root, str(root)))
    return out


def analyze(
    paths: Sequence[Path], default_namespace: str = "default", mesh_config: Path | None = None
) -> Report:
    """Read, validate and cross-check every resource under ``paths``; the mesh config is
    ``mesh_config``, else a ``mesh.yaml`` among them."""
    report = Report()
    submissions: list[Submission] = []
    rejections: list[Rejection] = []
    files = collect_files(paths)
    if mesh_config is not None:
        files = [f for f in files if f[0].resolve() != mesh_config.resolve()]
        files.append((mesh_config, str(mesh_config)))
    for path, display in files:
        if not path.exists():
            report.issues.append(
                Issue(Codes.YAML_ERROR, "", "no such file or directory", origin=display)
            )
            continue
        report.files.append(display)
        # mesh.yaml is the mesh config (Istio's MeshConfig YAML), as in file mode.
        is_mesh = path == mesh_config if mesh_config is not None else path.name == MESH_FILE_NAME
        result = read_file(path, display, default_namespace, mesh=is_mesh)
        report.issues += [i for i in result.issues if not _foreign_kind(i)]
        # part "templates": the injector's ConfigMap (istio-sidecar-injector), judged as the
        # webhook and the operator judge it.
        if path.suffix in (".yaml", ".yml") and path.is_file():
            report.issues += injector_configmap_findings(path.read_text(), display)
        submissions += result.submissions
        rejections += result.rejections
    report.resources = len(submissions)
    # The compiler's own check too: what it fails on is refused as it is when serving.
    store = Store(compile_check=check_resource)
    store.apply(upserts=_first_definition_wins(submissions, report), rejections=rejections)
    snapshot = store.snapshot
    for key, status in snapshot.status.items():
        for issue in status.issues:
            if found_by_store(issue):
                report.issues.append(issue.with_context(key, status.origin))
    # part "gwapi": the Gateway API status's findings (store/gatewayapi.py)
    report.issues += gateway_api_findings(snapshot.gateway_api_status)
    report.issues.sort(key=_order)
    return report


def _first_definition_wins(submissions: list[Submission], report: Report) -> list[Submission]:
    """One resource defined twice: the first definition is used, the second reported, as the
    file source does."""
    seen: dict[tuple[str, str, str], Submission] = {}
    out: list[Submission] = []
    for sub in submissions:
        meta = sub.resource.metadata
        key = (sub.resource.kind, meta.namespace, meta.name)
        if key in seen:
            report.issues.append(
                Issue(
                    Codes.SCHEMA_ERROR,
                    "metadata.name",
                    f"also defined in {_file_of(seen[key].origin)}; the definition there is used",
                    ResourceKey(*key),
                    _file_of(sub.origin),
                    Level.WARNING,
                )
            )
            continue
        seen[key] = sub
        out.append(sub)
    return out


def _file_of(origin: str | None) -> str:
    return (origin or "").rpartition(":")[0] or (origin or "")


def _foreign_kind(issue: Issue) -> bool:
    """Kubernetes kinds the mesh does not read (Deployments, ConfigMaps...) are not findings;
    an Istio kind it does not read (a Gateway, say) is, as Info."""
    if issue.code is not Codes.UNKNOWN_KIND:
        return False
    reason = issue.reason
    api_version = reason.split(" ", 1)[0]
    group, _ = split_api_version(api_version)
    return not any(
        group == g or group.endswith("." + g) for g in ISTIO_GROUPS
    ) and not group.endswith("istio.io")


def _order(issue: Issue) -> tuple[object, ...]:
    origin = issue.origin or ""
    file, _, line = origin.rpartition(":")
    if not line.isdigit():
        file, line = origin, "0"
    return (file, int(line), _LEVEL_ORDER[issue.severity], issue.code.id, issue.path)


def render_text(report: Report) -> str:
    if not report.issues:
        return f"No validation issues found when analyzing {len(report.files)} file(s).\n"
    return "".join(f"{issue}\n" for issue in report.issues)
