"""PeerAuthentication: which mTLS mode a workload's inbound ports accept.

Istio's precedence: a policy selecting the workload beats its namespace's policy, which beats
the mesh-wide policy in the root namespace; within one scope the oldest policy wins; a mode
of UNSET inherits from the scope above; no policy at all means PERMISSIVE. ``portLevelMtls``
(only on selector policies) overrides per port, its UNSET inheriting the workload's mode.
Ports are the workload's own (target) ports, as in Istio.

A refused policy with no good version in effect is not simply left out, as istiod (whose
webhook stops it before it is stored) would leave it: what it asked for is unknown, and
leaving it out could silently downgrade its workloads to plaintext. It stands, at its own
level (workload, namespace or mesh), as a STRICT policy without port settings, and beats a
good policy of the same level: a more specific good policy still overrides it, as it would
have overridden the refused one whatever that said. A refused policy whose selector cannot be
read makes its whole namespace (the mesh, in the root namespace) STRICT.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.api.issues import ResourceKey
from controlplane.api.policy_scope import RefusedPolicy
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
    rejected: Iterable[RefusedPolicy] = (),
) -> MtlsPolicy:
    """The mode for a workload with ``labels`` in ``namespace``, from every PeerAuthentication
    and every refused one (``rejected``, see the module doc)."""
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
    # Refused policies, at their own level: (level, key) with 0 mesh, 1 namespace, 2 workload,
    # 3 unreadable selector (overrides everything in its namespace).
    broken: list[tuple[int, ResourceKey]] = []
    for refused in rejected:
        level = _refused_level(refused, namespace, labels, root_namespace)
        if level is not None:
            broken.append((level, refused.key))
    levels: list[tuple[str | None, ResourceKey | None]] = [
        (_mode(chosen) if chosen is not None else None, _key(chosen) if chosen else None)
        for chosen in (mesh, scope, workload)
    ]
    for level, key in sorted(broken, key=lambda b: (b[0], str(b[1]))):
        if level < 3 and levels[level][1] is not None and levels[level][0] == STRICT:
            continue  # already STRICT at that level
        if level < 3:
            levels[level] = (STRICT, key)
        else:
            levels.append((STRICT, key))
    mode = PERMISSIVE
    sources: list[ResourceKey] = []
    for chosen_mode, chosen_key in levels:
        if chosen_key is None:
            continue
        sources.append(chosen_key)
        if chosen_mode not in (None, UNSET):
            mode = str(chosen_mode)
    if broken and any(lvl == 3 or lvl == 2 for lvl, _ in broken):
        return MtlsPolicy(mode, (), tuple(sources))
    port_modes: list[tuple[int, str]] = []
    if workload is not None:
        for port, setting in sorted(workload.spec.port_level_mtls.items()):
            port_modes.append((port, mode if setting.mode == UNSET else setting.mode))
    return MtlsPolicy(mode, tuple(port_modes), tuple(sources))


def _refused_level(
    refused: RefusedPolicy, namespace: str, labels: Mapping[str, str], root_namespace: str
) -> int | None:
    """The level a refused policy stands at for this workload (see ``resolve_mtls``), or None
    when it would not have applied to it."""
    home = refused.key.namespace
    if refused.selector is None:
        return 3 if home in (namespace, root_namespace) else None
    if refused.selector:
        # Selector policies are namespace-local, also in the root namespace.
        return 2 if home == namespace and selects(dict(refused.selector), labels) else None
    if home == namespace:
        return 1
    if home == root_namespace:
        return 0
    return None
