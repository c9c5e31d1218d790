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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.analyze.loading import (
    SUFFIXES,
    collect_files,
    foreign_kind,
    load_paths,
    store_findings,
)
from controlplane.api.injection_templates import injector_configmap_findings
from controlplane.api.issues import Issue, Level
from controlplane.store.gatewayapi import findings as gateway_api_findings

__all__ = ["SUFFIXES", "Report", "analyze", "collect_files", "foreign_kind", "render_text"]

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


def analyze(
    paths: Sequence[Path], default_namespace: str = "default", mesh_config: Path | None = None
) -> Report:
    """Read, validate and cross-check every resource under ``paths``; the mesh config is
    ``mesh_config``, else a ``mesh.yaml`` among them. The same reading and store as
    ``describe`` and ``diff`` (``analyze/loading.py``), so the three agree."""
    loaded = load_paths(paths, default_namespace, mesh_config)
    snapshot = loaded.snapshot
    report = Report(
        issues=list(loaded.read.issues),
        files=list(loaded.read.files),
        resources=len(loaded.read.submissions),
    )
    report.issues += store_findings(snapshot)
    # part "templates": the injector's ConfigMap (istio-sidecar-injector), judged as the
    # webhook and the operator judge it.
    for path, display in collect_files(paths):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            report.issues += injector_configmap_findings(path.read_text(), display)
    # part "gwapi": the Gateway API status's findings (store/gatewayapi.py)
    report.issues += gateway_api_findings(snapshot.gateway_api_status)
    report.issues.sort(key=_order)
    return report


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
