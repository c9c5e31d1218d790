"""The store: the single owner of the mesh's current state.

Sources submit what they read (resources, deletions, and rejections of documents that could
not be read); the store decides what is *effective* and produces a new immutable Snapshot and
the set of keys that changed.

For Istio kinds the store keeps both the latest submitted version ("desired") and the last
version that was good ("effective"). A desired version that fails validation on its own, or
that is broken in context (a route to a subset no DestinationRule defines), does not replace
the effective one; it is retried whenever the mesh changes, so fixing the DestinationRule
brings it in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from controlplane.api.issues import Issue, ResourceKey, errors
from controlplane.api.resources import is_istio_kind, key_of
from controlplane.store.context import blocking, check_destination_rule, check_virtual_service
from controlplane.store.snapshot import ResourceStatus, Snapshot


@dataclass(frozen=True)
class Submission:
    """One resource as a source read it, with the findings from validating it alone."""

    resource: Any
    issues: tuple[Issue, ...] = ()
    origin: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A document that could not be accepted; the last good version of ``key`` stays."""

    key: ResourceKey
    issues: tuple[Issue, ...]
    origin: str | None = None
    generation: int | None = None


@dataclass(frozen=True)
class ChangeSet:
    """What one store update changed: effective resources and statuses, by key."""

    changed: frozenset[ResourceKey] = frozenset()
    status_changed: frozenset[ResourceKey] = frozenset()
    at: float = field(default_factory=time.time)  # wall-clock time the change was seen

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k.kind for k in self.changed)

    def __bool__(self) -> bool:
        return bool(self.changed or self.status_changed)


Listener = Callable[[Snapshot, ChangeSet], None]
_CONTEXT_KINDS = frozenset({"VirtualService", "DestinationRule", "Service"})
# What a DestinationRule's in-context findings (subsets that select no pod) depend on.
_RULE_CONTEXT_KINDS = frozenset({"DestinationRule", "Service", "Pod", "EndpointSlice"})


class Store:
    def __init__(self) -> None:
        self._desired: dict[ResourceKey, Submission] = {}
        self._rejected: dict[ResourceKey, Rejection] = {}
        self._effective: dict[str, dict[ResourceKey, Any]] = {}
        self._last_good: dict[ResourceKey, Any] = {}
        self._context_issues: dict[ResourceKey, list[Issue]] = {}
        self._status: dict[ResourceKey, ResourceStatus] = {}
        self._origins: dict[ResourceKey, str] = {}
        self._snapshot = Snapshot(version=0, resources={})
        self._listeners: list[Listener] = []

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def desired(self, key: ResourceKey) -> Any | None:
        sub = self._desired.get(key)
        return sub.resource if sub else None

    def apply(
        self,
        upserts: Iterable[Submission] = (),
        deletes: Iterable[ResourceKey] = (),
        rejections: Iterable[Rejection] = (),
    ) -> ChangeSet:
        """Apply one batch from a source; notify listeners if anything changed."""
        changed: set[ResourceKey] = set()
        touched: set[ResourceKey] = set()
        for key in deletes:
            touched.add(key)
            self._desired.pop(key, None)
            self._rejected.pop(key, None)
            self._origins.pop(key, None)
            self._last_good.pop(key, None)
            self._context_issues.pop(key, None)
            if self._effective.get(key.kind, {}).pop(key, None) is not None:
                changed.add(key)
        for sub in upserts:
            key = key_of(sub.resource)
            touched.add(key)
            self._rejected.pop(key, None)
            self._desired[key] = sub
            if sub.origin:
                self._origins[key] = sub.origin
            if (
                not is_istio_kind(key.kind)
                and self._effective.get(key.kind, {}).get(key) != sub.resource
            ):
                self._effective.setdefault(key.kind, {})[key] = sub.resource
                changed.add(key)
        for rej in rejections:
            touched.add(rej.key)
            self._rejected[rej.key] = rej
            if rej.origin:
                self._origins[rej.key] = rej.origin
        changed |= self._settle_istio(touched, changed)
        status_changed = self._update_status(touched)
        change = ChangeSet(frozenset(changed), frozenset(status_changed))
        if change:
            self._snapshot = Snapshot(
                version=self._snapshot.version + 1,
                resources=MappingProxyType(
                    {k: MappingProxyType(dict(v)) for k, v in self._effective.items()}
                ),
                status=MappingProxyType(dict(self._status)),
                origins=MappingProxyType(dict(self._origins)),
            )
            for listener in list(self._listeners):
                listener(self._snapshot, change)
        return change

    def _settle_istio(
        self, touched: set[ResourceKey], changed: set[ResourceKey]
    ) -> set[ResourceKey]:
        """Decide the effective version of each Istio resource; return the keys that moved."""
        moved: set[ResourceKey] = set()
        for key in touched:
            sub = self._desired.get(key)
            if not is_istio_kind(key.kind) or key in self._rejected or sub is None:
                continue
            if errors(list(sub.issues)):
                continue
            if self._effective.get(key.kind, {}).get(key) != sub.resource:
                self._effective.setdefault(key.kind, {})[key] = sub.resource
                moved.add(key)
        kinds = {k.kind for k in changed | moved}
        if kinds & _RULE_CONTEXT_KINDS:
            self._check_rules()
        if not (kinds & _CONTEXT_KINDS):
            return moved
        effective = self._effective.setdefault("VirtualService", {})
        # A rollback changes the context of other resources, so settle until nothing moves.
        for _ in range(3):
            probe = Snapshot(version=-1, resources={k: dict(v) for k, v in self._effective.items()})
            flipped = False
            for key, sub in self._desired.items():
                if key.kind != "VirtualService" or key in self._rejected:
                    continue
                found = check_virtual_service(probe, sub.resource)
                self._context_issues[key] = found
                if blocking(found):
                    # Keep the last good version; a version that was good before and is broken
                    # only by a change elsewhere stays, as it would in Istio.
                    target = self._last_good.get(key)
                else:
                    target = sub.resource
                if effective.get(key) != target:
                    if target is None:
                        effective.pop(key, None)
                    else:
                        effective[key] = target
                    moved.add(key)
                    flipped = True
            if not flipped:
                break
        for key, sub in self._desired.items():
            if key.kind == "VirtualService" and not blocking(self._context_issues.get(key, [])):
                self._last_good[key] = sub.resource
        return moved

    def _check_rules(self) -> None:
        """Warnings about DestinationRules in context; they never hold a version back."""
        probe = Snapshot(version=-1, resources={k: dict(v) for k, v in self._effective.items()})
        for key, sub in self._desired.items():
            if key.kind == "DestinationRule" and key not in self._rejected:
                self._context_issues[key] = check_destination_rule(probe, sub.resource)

    def _update_status(self, touched: set[ResourceKey]) -> set[ResourceKey]:
        changed: set[ResourceKey] = set()
        keys = set(touched) | {
            k for k in self._desired if k.kind in ("VirtualService", "DestinationRule")
        }
        for key in keys:
            if not is_istio_kind(key.kind):
                continue
            status = self._status_of(key)
            if status is None:
                if self._status.pop(key, None) is not None:
                    changed.add(key)
            elif self._status.get(key) != status:
                self._status[key] = status
                changed.add(key)
        return changed

    def _status_of(self, key: ResourceKey) -> ResourceStatus | None:
        rejection = self._rejected.get(key)
        if rejection is not None:
            return ResourceStatus(
                accepted=False,
                reconciled=False,
                issues=rejection.issues,
                generation=rejection.generation,
                origin=rejection.origin,
            )
        sub = self._desired.get(key)
        if sub is None:
            return None
        context = tuple(self._context_issues.get(key, ()))
        accepted = not errors(list(sub.issues))
        effective = self._effective.get(key.kind, {}).get(key)
        return ResourceStatus(
            accepted=accepted,
            reconciled=accepted and not blocking(list(context)) and effective == sub.resource,
            issues=tuple(sub.issues) + context,
            generation=sub.resource.metadata.generation,
            origin=sub.origin,
        )
