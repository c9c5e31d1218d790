"""The mesh as ``analyze``, ``describe`` and ``diff`` read it: files or a cluster -> a Store.

Both ways end in the same ``Store`` (with the compiler's own check) that a running control
plane uses, so what is accepted, refused and reported is what the control plane would do:

- files: each document through the file source's reader (``sources/files.py``), as file mode;
- a cluster: every kind the control plane watches (``sources/kube/watch.py`` ``WATCHED``)
  listed once with the kube client, read only, each object through the same translation the
  watch uses (so a refused object, and its last accepted generation, count as they do there).

``Loaded`` keeps the refused documents as read, so a refused resource can be related to the
workloads it was written for (``describe``), and the store, so a change can be applied on top
of it (``diff``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.api.issues import Codes, Issue, Level, ResourceKey
from controlplane.api.mesh import MESH_FILE_NAME
from controlplane.api.resources import ISTIO_GROUPS, split_api_version
from controlplane.compile.check import check_resource
from controlplane.sources.files import read_file
from controlplane.store import Rejection, Store, Submission, found_by_store
from controlplane.store.snapshot import Snapshot

SUFFIXES = (".yaml", ".yml", ".json")


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


def foreign_kind(issue: Issue) -> bool:
    """Kubernetes kinds the mesh does not read (Deployments, ConfigMaps...) are not findings;
    an Istio kind it does not read (a Gateway, say) is, as Info."""
    if issue.code is not Codes.UNKNOWN_KIND:
        return False
    api_version = issue.reason.split(" ", 1)[0]
    group, _ = split_api_version(api_version)
    return not any(
        group == g or group.endswith("." + g) for g in ISTIO_GROUPS
    ) and not group.endswith("istio.io")


@dataclass
class Read:
    """What a set of files or a cluster listing gave: resources, refusals, findings."""

    submissions: list[Submission] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # Last accepted generations kept on refused objects (cluster mode's status.lastAccepted):
    # served while the latest is refused, as the running control plane does.
    restored: list[Any] = field(default_factory=list)

    def refused_content(self) -> dict[ResourceKey, Any]:
        """Each refused document as written (None when nothing could be read)."""
        return {r.key: r.content for r in self.rejections}


def read_paths(
    paths: Sequence[Path],
    default_namespace: str = "default",
    mesh_config: Path | None = None,
    *,
    keep_foreign: bool = False,
) -> Read:
    """Read every file under ``paths``; the mesh config is ``mesh_config``, else a
    ``mesh.yaml`` among them. Kubernetes kinds the mesh does not read are dropped from the
    findings unless ``keep_foreign``."""
    read = Read()
    files = collect_files(paths)
    if mesh_config is not None:
        files = [f for f in files if f[0].resolve() != mesh_config.resolve()]
        files.append((mesh_config, str(mesh_config)))
    for path, display in files:
        if not path.exists():
            read.issues.append(
                Issue(Codes.YAML_ERROR, "", "no such file or directory", origin=display)
            )
            continue
        read.files.append(display)
        is_mesh = path == mesh_config if mesh_config is not None else path.name == MESH_FILE_NAME
        result = read_file(path, display, default_namespace, mesh=is_mesh)
        read.issues += [i for i in result.issues if keep_foreign or not foreign_kind(i)]
        read.submissions += result.submissions
        read.rejections += result.rejections
    return read


def first_definition_wins(submissions: list[Submission], issues: list[Issue]) -> list[Submission]:
    """One resource defined twice: the first definition is used, the second reported, as the
    file source does."""
    seen: dict[tuple[str, str, str], Submission] = {}
    out: list[Submission] = []
    for sub in submissions:
        meta = sub.resource.metadata
        key = (sub.resource.kind, meta.namespace, meta.name)
        if key in seen:
            issues.append(
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


def new_store() -> Store:
    """A store that refuses what the compiler fails on, as when serving."""
    return Store(compile_check=check_resource)


def store_findings(snapshot: Snapshot) -> list[Issue]:
    """The in-context findings the store made of ``snapshot`` (each with its resource)."""
    out: list[Issue] = []
    for key, status in snapshot.status.items():
        for issue in status.issues:
            if found_by_store(issue):
                out.append(issue.with_context(key, status.origin))
    return out


@dataclass
class Loaded:
    """A mesh read and applied: its snapshot, the findings, the refused documents."""

    store: Store
    read: Read
    # A cluster: only pods that run a proxy (injected, or selected by a Gateway) have one.
    # In file mode every pod stands for a proxy (a pod there is just labels and an address).
    meshed_only: bool = False

    @property
    def snapshot(self) -> Snapshot:
        return self.store.snapshot


def load_paths(
    paths: Sequence[Path], default_namespace: str = "default", mesh_config: Path | None = None
) -> Loaded:
    read = read_paths(paths, default_namespace, mesh_config)
    store = new_store()
    upserts = first_definition_wins(read.submissions, read.issues)
    store.apply(upserts=upserts, rejections=read.rejections)
    return Loaded(store, read)


# ---- a cluster, read only ------------------------------------------------------------------


def list_cluster(api_client: Any, mesh: Mapping[str, Any] | None = None) -> Read:
    """One listing of every kind the control plane watches, through the watch's own
    translation (``sources/kube/watch.py``); nothing is written. ``mesh``: the ``istio``
    ConfigMap as read by the caller (cluster mode's mesh config), if any."""
    from controlplane.sources.kube.watch import WATCHED, translate, translate_mesh_configmap

    read = Read()
    for group, version, plural in WATCHED:
        if plural == "secrets":
            continue  # credentials are not needed to describe or compare configuration
        for item in _list(api_client, group, version, plural):
            update = translate(None, item)
            if update is None:
                continue
            _take(read, update)
        read.files.append(f"{group or 'core'}/{version}/{plural}")
    if mesh is not None:
        update = translate_mesh_configmap(None, mesh)
        if update is not None:
            _take(read, update)
    return read


def _take(read: Read, update: Any) -> None:
    if update.submission is not None:
        read.submissions.append(update.submission)
        read.issues += [i.with_context(update.key, None) for i in update.submission.issues]
    elif update.rejection is not None:
        read.rejections.append(update.rejection)
        read.issues += list(update.rejection.issues)
        if update.restored is not None:  # the last accepted generation stays in effect
            read.restored.append(update.restored)


_KINDS = {
    "virtualservices": "VirtualService",
    "destinationrules": "DestinationRule",
    "serviceentries": "ServiceEntry",
    "workloadentries": "WorkloadEntry",
    "gateways": "Gateway",
    "sidecars": "Sidecar",
    "peerauthentications": "PeerAuthentication",
    "authorizationpolicies": "AuthorizationPolicy",
    "requestauthentications": "RequestAuthentication",
    "services": "Service",
    "endpointslices": "EndpointSlice",
    "pods": "Pod",
    "namespaces": "Namespace",
}


def _list(api_client: Any, group: str, version: str, plural: str) -> list[dict[str, Any]]:
    path = f"/api/{version}/{plural}" if not group else f"/apis/{group}/{version}/{plural}"
    method, url, headers, body, _ = api_client.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api_client.call_api(method, url, header_params=headers, body=body)
    response.read()
    if response.status == 404:
        return []  # the kind's CRD is not installed: nothing of it exists
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    listing = json.loads(response.data)
    api_version = f"{group}/{version}" if group else version
    kind = _KINDS.get(plural) or str(listing.get("kind", "")).removesuffix("List")
    return [{"apiVersion": api_version, "kind": kind, **item} for item in listing.get("items", [])]


def load_cluster(api_client: Any, mesh: Mapping[str, Any] | None = None) -> Loaded:
    read = list_cluster(api_client, mesh)
    store = new_store()
    store.apply(upserts=read.submissions, rejections=read.rejections, restored=read.restored)
    return Loaded(store, read, meshed_only=True)
