"""What a refused security policy would have applied to, read from the document as written.

A refused AuthorizationPolicy or PeerAuthentication (no earlier good version in effect) fails
closed, but only for the workloads it would have selected: the store reads its scope here from
the raw document (a refused document has no model), the compiler applies it
(``compile/rbac.py``, ``compile/authn.py``), and status and ``analyze`` describe it
(``describe``). Reading is best effort and errs wide: a selector that cannot be read counts as
the whole namespace (it could have matched any workload there, and a policy outside the root
namespace reaches no further); an action that cannot be read counts as DENY (the only action
whose loss would let through traffic the operator meant to stop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.api.issues import ResourceKey

ROOT_NAMESPACE = "istio-system"  # as controlplane.store.snapshot (api imports nothing of ours)
ACTIONS = frozenset({"ALLOW", "DENY", "AUDIT", "CUSTOM"})
POLICY_KINDS = frozenset({"AuthorizationPolicy", "PeerAuthentication"})


@dataclass(frozen=True)
class RefusedPolicy:
    """The scope of one refused policy.

    ``selector``: the labels it selects (``()``: every workload of its namespace; the mesh in
    the root namespace for AuthorizationPolicy); None when the selector cannot be read, which
    counts as the whole namespace. ``action``: the AuthorizationPolicy action as written
    (ALLOW by default), None when unreadable (treated as DENY). ``targeted``: the policy
    attaches by ``targetRef``/``targetRefs`` and no selector, so it applies to no sidecar
    (gateways and waypoints only, as in istiod). ``dry_run``: an AuthorizationPolicy annotated
    ``istio.io/dry-run: "true"`` (not CUSTOM), which istiod never enforces, broken or not.
    """

    key: ResourceKey
    selector: tuple[tuple[str, str], ...] | None = None
    action: str | None = None
    targeted: bool = False
    dry_run: bool = False

    @property
    def effective_action(self) -> str:
        """The action the compiler applies: an unreadable one counts as DENY."""
        return self.action if self.action in ACTIONS else "DENY"

    @property
    def namespace_wide(self) -> bool:
        return self.selector is None or not self.selector


def refused_policy(key: ResourceKey, content: Any) -> RefusedPolicy | None:
    """The scope of the refused document ``content`` of ``key``; None for other kinds."""
    if key.kind not in POLICY_KINDS:
        return None
    spec = content.get("spec") if isinstance(content, Mapping) else None
    if not isinstance(spec, Mapping):
        spec = {} if isinstance(content, Mapping) and "spec" not in content else None
    if spec is None:  # nothing readable: the widest scope and the strictest action
        return RefusedPolicy(key)
    action: str | None = None
    if key.kind == "AuthorizationPolicy":
        raw_action = spec.get("action", "ALLOW")
        action = raw_action if raw_action in ACTIONS else None
    selector = _selector(spec.get("selector", {}))
    targeted = (
        key.kind == "AuthorizationPolicy"
        and "selector" not in spec
        and bool(spec.get("targetRef") or spec.get("targetRefs"))
    )
    return RefusedPolicy(key, selector, action, targeted, _dry_run(content, action))


_DRY_RUN_TRUE = frozenset("1 t T TRUE true True".split())  # Go's ParseBool, as istiod reads it


def _dry_run(content: Any, action: str | None) -> bool:
    metadata = content.get("metadata") if isinstance(content, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping) or action not in ("ALLOW", "DENY", "AUDIT"):
        return False
    return annotations.get("istio.io/dry-run") in _DRY_RUN_TRUE


def _selector(raw: Any) -> tuple[tuple[str, str], ...] | None:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        return None
    labels = raw.get("matchLabels", {})
    if labels is None:
        return ()
    if not isinstance(labels, Mapping):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        return None
    return tuple(sorted(labels.items()))


def workloads(refused: RefusedPolicy, root_namespace: str = ROOT_NAMESPACE) -> str:
    """The workloads a refused policy stands for, in words."""
    namespace = refused.key.namespace
    if refused.selector is None:
        where = "the mesh" if namespace == root_namespace else f"namespace {namespace}"
        return f"all workloads of {where} (its selector cannot be read)"
    if not refused.selector:
        if namespace == root_namespace and refused.key.kind == "AuthorizationPolicy":
            return "all workloads of the mesh"
        if namespace == root_namespace:
            return "all workloads of the mesh"
        return f"all workloads of namespace {namespace}"
    labels = ",".join(f"{k}={v}" for k, v in refused.selector)
    where = (
        "of every namespace"
        if (namespace == root_namespace and refused.key.kind == "AuthorizationPolicy")
        else f"in namespace {namespace}"
    )
    return f"workloads {labels} {where}"


def describe(refused: RefusedPolicy, root_namespace: str = ROOT_NAMESPACE) -> tuple[str, bool]:
    """What a refused policy does to traffic until it is fixed, and whether it changes
    traffic at all (False: AUDIT, or a policy for gateways only)."""
    who = workloads(refused, root_namespace)
    if refused.key.kind == "PeerAuthentication":
        return (
            f"PeerAuthentication refused: until it is fixed {who} accept mTLS only (STRICT, "
            "fail closed; a more specific PeerAuthentication still overrides it): plaintext "
            "connections to them are refused",
            True,
        )
    if refused.dry_run:
        return (
            f"dry-run {refused.action} policy refused: no effect on traffic (a dry-run policy "
            "is never enforced, only counted as shadow rules, and this one not even that)",
            False,
        )
    if refused.targeted:
        return (
            "AuthorizationPolicy refused: it attaches by targetRef, which selects no sidecar; "
            "no effect on sidecar traffic",
            False,
        )
    action = refused.action
    if action == "AUDIT":
        return (
            f"AUDIT policy refused: no effect on traffic; until it is fixed every request to "
            f"{who} is marked for audit",
            False,
        )
    if action == "ALLOW":
        return (
            f"ALLOW policy refused: until it is fixed {who} deny all requests that no other "
            "ALLOW policy allows (nothing is allowed by this one: fail closed)",
            True,
        )
    if action == "CUSTOM":
        return (
            f"CUSTOM policy refused: until it is fixed {who} deny all requests "
            "(what it would have sent to its authorizer is unknown: fail closed)",
            True,
        )
    if action == "DENY":
        return (f"DENY policy refused: until it is fixed {who} deny all requests", True)
    return (
        f"policy refused and its action cannot be read: until it is fixed {who} deny all "
        "requests (treated as DENY: fail closed)",
        True,
    )
