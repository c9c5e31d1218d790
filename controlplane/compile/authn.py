"""PeerAuthentication: which mTLS mode a workload's inbound ports accept.

Istio's precedence: a policy selecting the workload beats its namespace's policy, which beats
the mesh-wide policy in the root namespace; within one scope the oldest policy wins; a mode
of UNSET inherits from the scope above; no policy at all means PERMISSIVE. ``portLevelMtls``
(only on selector policies) overrides per port, its UNSET inheriting the workload's mode.
Ports are the workload's own (target) ports, as in Istio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.api.issues import ResourceKey
from controlplane.api.security import PeerAuthentication
from controlplane.store.registry import selects
from controlplane.store.snapshot import ROOT_NAMESPACE, created

STRICT = "STRICT"
PERMISSIVE = "PERMISSIVE"
DISABLE = "DISABLE"
UNSET = "UNSET"


@dataclass(frozen=True)
class MtlsPolicy:
    """The effective PeerAuthentication of one workload."""

    mode: str = PERMISSIVE
    port_modes: tuple[tuple[int, str], ...] = ()
    sources: tuple[ResourceKey, ...] = ()  # the policies that decided it, widest first

    def for_port(self, port: int) -> str:
        """The mode of one inbound (target) port."""
        for number, mode in self.port_modes:
            if number == port:
                return mode
        return self.mode


def _key(pa: PeerAuthentication) -> ResourceKey:
    return ResourceKey("PeerAuthentication", pa.metadata.namespace, pa.metadata.name)


def _has_selector(pa: PeerAuthentication) -> bool:
    return pa.spec.selector is not None and bool(pa.spec.selector.match_labels)


def _mode(pa: PeerAuthentication | None) -> str:
    if pa is None or pa.spec.mtls is None:
        return UNSET
    return pa.spec.mtls.mode


def resolve_mtls(
    policies: Iterable[PeerAuthentication],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = ROOT_NAMESPACE,
    rejected: Iterable[ResourceKey] = (),
) -> MtlsPolicy:
    """The mode for a workload with ``labels`` in ``namespace``, from every PeerAuthentication.

    A refused policy with no good version in the workload's namespace (or the root namespace)
    makes it STRICT: what it asked for is unknown, and plaintext is what fails closed.
    """
    mesh: PeerAuthentication | None = None
    scope: PeerAuthentication | None = None
    workload: PeerAuthentication | None = None
    for pa in sorted(policies, key=created):
        pa_namespace = pa.metadata.namespace
        if _has_selector(pa):
            # Selector policies are namespace-local, also in the root namespace.
            assert pa.spec.selector is not None
            if (
                workload is None
                and pa_namespace == namespace
                and selects(pa.spec.selector.match_labels, labels)
            ):
                workload = pa
        elif pa_namespace == namespace and scope is None:
            scope = pa
        elif pa_namespace == root_namespace and mesh is None:
            mesh = pa
    if namespace == root_namespace and scope is not None:
        mesh = None  # the root namespace's own policy is its namespace policy
    mode = PERMISSIVE
    sources: list[ResourceKey] = []
    for chosen in (mesh, scope, workload):
        if chosen is None:
            continue
        sources.append(_key(chosen))
        if _mode(chosen) != UNSET:
            mode = _mode(chosen)
    broken = tuple(k for k in rejected if k.namespace in (namespace, root_namespace))
    if broken:
        return MtlsPolicy(STRICT, (), tuple(sources) + broken)
    port_modes: list[tuple[int, str]] = []
    if workload is not None:
        for port, setting in sorted(workload.spec.port_level_mtls.items()):
            port_modes.append((port, mode if setting.mode == UNSET else setting.mode))
    return MtlsPolicy(mode, tuple(port_modes), tuple(sources))
