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

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from controlplane.api.gatewayapi import GATEWAY_API_STORE_KINDS
from controlplane.api.issues import Codes, Issue, Level, ResourceKey, errors
from controlplane.api.mesh import MESH_CONFIG_KIND
from controlplane.api.policy_scope import RefusedPolicy, describe, refused_policy
from controlplane.api.resources import is_istio_kind, key_of
from controlplane.store.authz_context import (
    ADVICE_CODES,
    MESH_CONFIG_KEY,
    SELECTION_KINDS,
    check_authorization_policy,
    mesh_of,
)
from controlplane.store.context import (
    SIDECAR_CONTEXT_CODES,
    blocking,
    check_custom_provider,
    check_destination_rule,
    check_provider_conflicts,
    check_request_authentication,
    check_request_principals,
    check_service_entry,
    check_sidecar,
    check_virtual_service,
    request_auth_paths,
)
from controlplane.store.dependencies import change_tokens
from controlplane.store.gamma import convert_mesh_routes, merge_route_parents
from controlplane.store.gateway_checks import NOT_BLOCKING as GATEWAY_CONTEXT_CODES
from controlplane.store.gateway_checks import check_gateway
from controlplane.store.gateway_credentials import check_gateway_credentials
from controlplane.store.gatewayapi import GATEWAY_API_INPUTS
from controlplane.store.gatewayapi import convert as convert_gateway_api
from controlplane.store.gatewayapi import findings as gateway_api_findings
from controlplane.store.reads import SnapshotReader, collecting
from controlplane.store.snapshot import ResourceStatus, Snapshot
from controlplane.store.telemetry_checks import TELEMETRY_CONTEXT_CODES, check_telemetry
from controlplane.store.tokens import ChangeTokens, Token


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
    # The document as read (a mapping, or whatever YAML gave): a refused security policy's
    # scope is read from it (``api/policy_scope.py``). None: nothing readable.
    content: Any = None


@dataclass(frozen=True)
class ChangeSet:
    """What one store update changed: effective resources and statuses, by key, and the
    dependency tokens the change of both touched (computed once, here; None when nothing
    changed)."""

    changed: frozenset[ResourceKey] = frozenset()
    status_changed: frozenset[ResourceKey] = frozenset()
    at: float = field(default_factory=time.time)  # wall-clock time the change was seen
    tokens: ChangeTokens | None = None

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k.kind for k in self.changed)

    def __bool__(self) -> bool:
        return bool(self.changed or self.status_changed)


_log = logging.getLogger("controlplane.gatewayapi")

Listener = Callable[[Snapshot, ChangeSet], None]
# The compiler's own check of one resource in context (compile/check.py, given by whoever
# builds the store, since the store is below the compiler): findings, never an exception.
CompileCheck = Callable[[SnapshotReader, Any], list[Issue]]
# Kinds checked in context; a check is repeated when a change touches what it read.
_CHECKED_KINDS = frozenset(
    {
        "VirtualService",
        "DestinationRule",
        "RequestAuthentication",
        "Gateway",
        "ServiceEntry",
        "Sidecar",
        "Telemetry",  # part "telemetry" (store/telemetry_checks.py)
    }
)
_CONTEXT_CHECKS: dict[str, Callable[[SnapshotReader, Any], list[Issue]]] = {
    "VirtualService": check_virtual_service,
    "DestinationRule": check_destination_rule,
    "RequestAuthentication": check_request_authentication,
    "ServiceEntry": check_service_entry,
    "Sidecar": check_sidecar,
    "Telemetry": check_telemetry,
    # part "gateway" (store/gateway_checks.py) and part "gwtls" (store/gateway_credentials.py)
    "Gateway": lambda snapshot, gateway: (
        check_gateway(snapshot, gateway) + check_gateway_credentials(snapshot, gateway)
    ),
}
# Findings of the store's own (besides CP03xx and CP0203): what JWKS fetches came to.
_STORE_CODES = frozenset(
    {
        Codes.JWKS_REFRESH_FAILING.id,
        Codes.JWKS_NEVER_FETCHED.id,
        Codes.JWT_CONDITION_WITHOUT_REQUEST_AUTHENTICATION.id,
    }
)
# Advice on AuthorizationPolicies that read the verified JWT (never blocking): looked at
# again when one of these kinds changes.
_REQUEST_AUTH_ADVICE_KINDS = frozenset(
    {"AuthorizationPolicy", "RequestAuthentication", "Pod", "MeshConfig"}
)
# Kinds checked by the compile check alone, when submitted (they read nothing of the mesh).
_POLICY_KINDS = frozenset({"PeerAuthentication", "AuthorizationPolicy"})


class _Probe:
    """The effective resources during settling, and the tokens the change from the previous
    probe touched (computed at once when there are earlier checks to compare with, before a
    check fills the lookups they let it inherit; else on first need)."""

    def __init__(
        self, old: Snapshot, snapshot: Snapshot, delta: set[ResourceKey], eager: bool
    ) -> None:
        self.old = old
        self.snapshot = snapshot
        self.delta = delta
        self._tokens: frozenset[Token] | None = None
        if eager:
            self.tokens  # noqa: B018 (computes and inherits)

    @property
    def computed_tokens(self) -> frozenset[Token] | None:
        """The tokens, if something already needed them."""
        return self._tokens

    @property
    def tokens(self) -> frozenset[Token]:
        if self._tokens is None:
            self._tokens = change_tokens(self.old, self.snapshot, self.delta)
            self.snapshot.take_over_lookups(self.old, self._tokens)
        return self._tokens


def found_by_store(issue: Issue) -> bool:
    """Findings the store adds to a status (the sources report the rest): in-context
    problems (CP03xx, and the Gateway ones of ``gateway_checks`` and ``gateway_credentials``),
    what a refused security policy does meanwhile (CP0203), a CUSTOM policy's unusable
    provider or a workload's several providers (CP0421, CP0422), the AuthorizationPolicy
    advice (CP0400, CP0401), the JWT findings (CP0440-0442), the ServiceEntry and the Sidecar ones."""
    return (
        issue.code.id.startswith("CP03")
        or issue.code is Codes.POLICY_FAILS_CLOSED
        or issue.code.id in _STORE_CODES
        or issue.code is Codes.UNKNOWN_EXTENSION_PROVIDER
        or issue.code is Codes.MULTIPLE_EXTENSION_PROVIDERS
        or issue.code.id in ADVICE_CODES
        or issue.code.id in GATEWAY_CONTEXT_CODES
        or issue.code in _GATEWAY_CREDENTIAL_CODES
        or issue.code in _CONTEXT_CODES
        or issue.code in SIDECAR_CONTEXT_CODES
        or issue.code in TELEMETRY_CONTEXT_CODES
    )


# In-context findings numbered in a part's own range (CP03xx are all in-context).
_CONTEXT_CODES = frozenset(
    {Codes.SERVICE_ENTRY_HOST_COLLIDES, Codes.CONFLICTING_SERVICE_ENTRIES}  # serviceentry
)
# In-context findings about a Gateway's credential Secrets (part "gwtls", gateway_credentials).
_GATEWAY_CREDENTIAL_CODES = frozenset(
    {Codes.GATEWAY_CREDENTIAL_NOT_FOUND, Codes.GATEWAY_CREDENTIAL_INVALID}
)


class Store:
    """The single owner of the mesh's current state.

    Contract: ``apply`` takes one batch from a source (upserts, deletes, rejections), decides
    what is effective (an Istio resource keeps its last good version while its latest is
    invalid alone or broken in context), and, if anything changed, publishes a new immutable
    Snapshot and calls every listener with it and the ChangeSet, synchronously, on the
    caller's thread. Snapshots are numbered 1, 2, ... in publishing order. The store is not
    thread-safe: one caller at a time (sources serialize their batches).
    """

    def __init__(
        self, recheck_everything: bool = False, compile_check: CompileCheck | None = None
    ) -> None:
        # True: every change re-checks every resource in context (the reference behaviour
        # the incremental checks are tested against).
        self._recheck_everything = recheck_everything
        # A VirtualService or DestinationRule the compiler fails on is held back like one
        # broken in context: its last good version stays.
        self._compile_check = compile_check
        self._desired: dict[ResourceKey, Submission] = {}
        self._rejected: dict[ResourceKey, Rejection] = {}
        self._effective: dict[str, dict[ResourceKey, Any]] = {}
        self._last_good: dict[ResourceKey, Any] = {}
        self._custom: set[ResourceKey] = set()  # CUSTOM AuthorizationPolicies (desired, read)
        self._context_issues: dict[ResourceKey, list[Issue]] = {}
        self._advice: dict[ResourceKey, list[Issue]] = {}  # see _advise
        # What each in-context check read (dependency tokens), and the effective resources
        # as of the last check: a change re-checks only what read something it touched.
        self._check_reads: dict[ResourceKey, frozenset[Token]] = {}
        self._probe = _Probe(Snapshot(version=-1, resources={}), Snapshot(-1, {}), set(), False)
        self._rounds = 0  # probes made by the current apply
        self._status: dict[ResourceKey, ResourceStatus] = {}
        self._origins: dict[ResourceKey, str] = {}
        self._snapshot = Snapshot(version=0, resources={})
        self._listeners: list[Listener] = []
        # part "gwapi": the Istio Gateways and VirtualServices the Gateway API resources
        # convert into (kept among the effective resources), and their status.
        self._derived: set[ResourceKey] = set()
        self._gateway_api_status: dict[ResourceKey, Mapping[str, Any]] = {}
        self._gateway_api_logged: frozenset[Issue] = frozenset()

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
        restored: Iterable[Any] = (),
    ) -> ChangeSet:
        """Apply one batch from a source; notify listeners if anything changed.

        ``restored``: last good versions a source kept from an earlier run (file mode's state
        directory). Each is the last good version of its key; it is served when the key's
        latest version in this batch is refused (or broken in context), never over a good
        one and never for a key no longer in the batch."""
        changed: set[ResourceKey] = set()
        touched: set[ResourceKey] = set()
        for key in deletes:
            touched.add(key)
            self._desired.pop(key, None)
            self._rejected.pop(key, None)
            self._origins.pop(key, None)
            self._last_good.pop(key, None)
            self._context_issues.pop(key, None)
            self._check_reads.pop(key, None)
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
        for resource in restored:
            key = key_of(resource)
            if key not in touched or self._effective.get(key.kind, {}).get(key) is not None:
                continue
            self._last_good[key] = resource
            if key in self._rejected:
                self._effective.setdefault(key.kind, {})[key] = resource
                changed.add(key)
        changed |= self._convert_gateway_api(changed)  # part "gwapi"
        moved, rechecked = self._settle_istio(touched, changed)
        changed |= moved
        # A status reads the resource's own submission, findings and effective version.
        advised = self._advise(touched | changed | moved)
        status_changed = self._update_status(touched | moved | rechecked | advised)
        if not changed and not status_changed:
            return ChangeSet()
        previous = self._snapshot
        keys = frozenset(changed | status_changed)
        if previous.change is not None:
            previous.change.release()  # uncomputed by now: nobody compiled against it
        tokens = ChangeTokens(previous.version, keys, self._change_tokens(previous, changed, keys))
        self._snapshot = Snapshot(
            version=previous.version + 1,
            resources=MappingProxyType(
                {k: MappingProxyType(dict(v)) for k, v in self._effective.items()}
            ),
            status=MappingProxyType(dict(self._status)),
            origins=MappingProxyType(dict(self._origins)),
            change=tokens,
            gateway_api_status=MappingProxyType(dict(self._gateway_api_status)),
        )
        # The last probe holds the same resources: its indexes need not be built again.
        self._snapshot.share_derived(self._probe.snapshot)
        change = ChangeSet(frozenset(changed), frozenset(status_changed), tokens=tokens)
        for listener in list(self._listeners):
            listener(self._snapshot, change)
        return change

    def _change_tokens(
        self, previous: Snapshot, changed: set[ResourceKey], keys: frozenset[ResourceKey]
    ) -> frozenset[Token] | Callable[[], frozenset[Token]]:
        """The tokens the change of ``keys`` from ``previous`` to the effective resources
        now touched, or how to compute them on first need. When settling took one round and
        its probe already computed them for the effective changes (that probe went from
        ``previous``'s resources to today's), only the keys whose status alone changed are
        added."""
        probe = self._probe
        after = probe.snapshot
        known = probe.computed_tokens
        if self._rounds == 1 and probe.delta == changed and known is not None:
            status_only = keys - changed
            if not status_only:
                return known
            return lambda: known | change_tokens(previous, after, status_only)
        return lambda: change_tokens(previous, after, keys)

    def _convert_gateway_api(self, changed: set[ResourceKey]) -> set[ResourceKey]:
        """Convert the Gateway API resources into Istio Gateways and VirtualServices (the
        effective resources every compiler reads, ``store/gatewayapi.py``) when something
        they read changed; returns the derived keys whose version moved."""
        if not any(k.kind in GATEWAY_API_INPUTS for k in changed):
            return set()
        if (
            not self._derived
            and not self._gateway_api_status
            and not any(self._effective.get(kind) for kind in GATEWAY_API_STORE_KINDS)
        ):
            return set()  # no Gateway API resource, before or now: nothing to convert
        conversion = convert_gateway_api(self._effective)
        # part "gamma": routes whose parent is a Service, for the mesh (store/gamma.py).
        mesh = convert_mesh_routes(self._effective)
        derived: dict[ResourceKey, Any] = {
            **conversion.gateways,
            **conversion.virtual_services,
            **mesh.virtual_services,
        }
        moved: set[ResourceKey] = set()
        for key in self._derived - derived.keys():
            if self._effective.get(key.kind, {}).pop(key, None) is not None:
                moved.add(key)
        for key, resource in derived.items():
            effective = self._effective.setdefault(key.kind, {})
            if effective.get(key) != resource:
                effective[key] = resource
                moved.add(key)
        self._derived = set(derived)
        self._gateway_api_status = merge_route_parents(conversion.status, mesh.status)
        # Each finding logged once, as the sources log a resource's findings.
        found = frozenset(gateway_api_findings(self._gateway_api_status))
        for issue in sorted(found - self._gateway_api_logged, key=str):
            _log.warning("%s", issue)
        self._gateway_api_logged = found
        return moved

    def _settle_istio(
        self, touched: set[ResourceKey], changed: set[ResourceKey]
    ) -> tuple[set[ResourceKey], set[ResourceKey]]:
        """Decide the effective version of each Istio resource. Returns the keys whose
        effective version moved and the keys whose findings in context were re-checked."""
        moved: set[ResourceKey] = set()
        self._rounds = 0
        batch = touched | changed  # ``touched`` is reused by the rounds below
        for key in touched:
            sub = self._desired.get(key)
            if not is_istio_kind(key.kind) or key in self._rejected or sub is None:
                continue
            if key.kind in _POLICY_KINDS:
                self._context_issues.pop(key, None)
            if errors(list(sub.issues)):
                continue
            if key.kind in _POLICY_KINDS and self._compile_check is not None:
                # A security policy the compiler fails on is refused like an invalid one
                # (fails closed for its scope until it is fixed, or its last good stays).
                view, _ = collecting(self._snapshot)
                self._context_issues[key] = self._compile_check(view, sub.resource)
                if blocking(self._context_issues[key]):
                    continue
            if self._effective.get(key.kind, {}).get(key) != sub.resource:
                self._effective.setdefault(key.kind, {})[key] = sub.resource
                moved.add(key)
        rechecked = self._check_custom_providers(touched, changed | moved)
        delta = changed | moved
        checked = [(k, sub) for k, sub in self._desired.items() if k.kind in _CHECKED_KINDS]
        # A rollback changes the context of other resources, so settle until nothing moves.
        # Each round re-checks only what read something the round's changes touched.
        for _ in range(3):
            probe = self._next_probe(delta)
            flipped: set[ResourceKey] = set()
            for key, sub in checked:
                if key in self._rejected or not self._needs_check(key, touched, probe):
                    continue
                # A DestinationRule's own findings are warnings: only a compile failure
                # holds its version back.
                check = _CONTEXT_CHECKS[key.kind]
                found = self._check(probe.snapshot, key, check)
                rechecked.add(key)
                self._context_issues[key] = found
                if blocking(found):
                    # Keep the last good version; a version that was good before and is broken
                    # only by a change elsewhere stays, as it would in Istio.
                    target = self._last_good.get(key)
                else:
                    target = sub.resource
                    self._last_good[key] = sub.resource
                effective = self._effective.setdefault(key.kind, {})
                if effective.get(key) != target:
                    if target is None:
                        effective.pop(key, None)
                    else:
                        effective[key] = target
                    flipped.add(key)
            moved |= flipped
            delta, touched = flipped, set()
            if not flipped:
                break
        if delta:
            # Still moving after the last round: the probe follows, and whatever read
            # something the last round moved is checked again on the next change.
            probe = self._next_probe(delta)
            for key, _ in checked:
                read = self._check_reads.get(key)
                if read is not None and not read.isdisjoint(probe.tokens):
                    del self._check_reads[key]
        rechecked |= self._advise_authorization_policies(batch | moved)
        return moved, rechecked

    def _advise(self, keys: set[ResourceKey]) -> set[ResourceKey]:
        """Non-blocking advice on AuthorizationPolicies that read the verified JWT where no
        RequestAuthentication applies (CP0440); returns the keys whose advice changed."""
        if not any(k.kind in _REQUEST_AUTH_ADVICE_KINDS for k in keys):
            return set()
        out: set[ResourceKey] = set()
        for key in [k for k in self._advice if k not in self._desired]:
            del self._advice[key]
        policies = [
            (key, policy)
            for key, policy in self._effective.get("AuthorizationPolicy", {}).items()
            if key not in self._rejected and request_auth_paths(policy)
        ]
        for key in [k for k in self._advice if k not in dict(policies)]:
            del self._advice[key]
            out.add(key)
        if not policies:
            return out
        snapshot = Snapshot(version=-1, resources={k: dict(v) for k, v in self._effective.items()})
        root = snapshot.mesh.root_namespace
        for key, policy in policies:
            found = check_request_principals(snapshot, policy, root)
            if found != self._advice.get(key, []):
                out.add(key)
            if found:
                self._advice[key] = found
            else:
                self._advice.pop(key, None)
        return out

    def _check_custom_providers(
        self, touched: set[ResourceKey], moved: set[ResourceKey]
    ) -> set[ResourceKey]:
        """The provider of each CUSTOM AuthorizationPolicy (CP0421, not blocking: the policy
        applies and denies what it matches), checked when the policy, the mesh config or a
        Service changed. Returns the policies whose findings were checked."""
        for key in touched:
            if key.kind == "AuthorizationPolicy":
                sub = self._desired.get(key)
                if (
                    sub is not None
                    and key not in self._rejected
                    and sub.resource.spec.action == "CUSTOM"
                ):
                    self._custom.add(key)
                else:
                    self._custom.discard(key)
        relevant = (MESH_CONFIG_KIND, "Service", "Pod", "AuthorizationPolicy")
        if not self._custom or not any(k.kind in relevant for k in touched | moved):
            return set()
        custom = [(key, self._desired[key]) for key in sorted(self._custom, key=str)]
        current = Snapshot(version=-1, resources={k: dict(v) for k, v in self._effective.items()})
        conflicts = check_provider_conflicts(current, [sub.resource for _, sub in custom])
        ours = (Codes.UNKNOWN_EXTENSION_PROVIDER, Codes.MULTIPLE_EXTENSION_PROVIDERS)
        for key, sub in custom:
            kept = [i for i in self._context_issues.get(key, ()) if i.code not in ours]
            found = check_custom_provider(current, sub.resource) + conflicts.get(key, [])
            self._context_issues[key] = kept + found
        return {key for key, _ in custom}

    def _advise_authorization_policies(self, keys: set[ResourceKey]) -> set[ResourceKey]:
        """Part authz: warn about AuthorizationPolicies that select no workload, again for
        every policy when pods or the mesh config changed. Never blocking."""
        kinds = {k.kind for k in keys}
        if not kinds & SELECTION_KINDS:
            return set()
        everything = bool(kinds & (SELECTION_KINDS - {"AuthorizationPolicy"}))
        snapshot = self._probe.snapshot
        pods = tuple(snapshot.of_kind("Pod").values())
        mesh = mesh_of(snapshot.get(MESH_CONFIG_KEY))
        out: set[ResourceKey] = set()
        for key in list(self._effective.get("AuthorizationPolicy", {})):
            sub = self._desired.get(key)
            if sub is None or key in self._rejected or (not everything and key not in keys):
                continue
            before = list(self._context_issues.get(key, ()))
            kept = [i for i in before if i.code.id not in ADVICE_CODES]
            after = kept + check_authorization_policy(sub.resource, pods, mesh)
            if after != before:
                self._context_issues[key] = after
                out.add(key)
        return out

    def _needs_check(self, key: ResourceKey, touched: set[ResourceKey], probe: _Probe) -> bool:
        if key in touched or self._recheck_everything:
            return True
        read = self._check_reads.get(key)
        return read is None or not read.isdisjoint(probe.tokens)

    def _check(
        self,
        probe: Snapshot,
        key: ResourceKey,
        check: Callable[[SnapshotReader, Any], list[Issue]],
    ) -> list[Issue]:
        """Check the desired version of ``key`` in context, recording what the check read."""
        view, tokens = collecting(probe)
        resource = self._desired[key].resource
        found = check(view, resource)
        if self._compile_check is not None and not blocking(found):
            found = found + self._compile_check(view, resource)
        self._check_reads[key] = frozenset(tokens)
        return found

    def _next_probe(self, delta: set[ResourceKey]) -> _Probe:
        """A snapshot of the effective resources now, sharing every index the keys ``delta``
        left valid with the previous one."""
        old = self._probe.snapshot
        snapshot = Snapshot(version=-1, resources={k: dict(v) for k, v in self._effective.items()})
        snapshot.take_over(old, {k.kind for k in delta})
        self._probe = _Probe(old, snapshot, delta, eager=bool(self._check_reads))
        self._rounds += 1
        return self._probe

    def _update_status(self, keys: set[ResourceKey]) -> set[ResourceKey]:
        changed: set[ResourceKey] = set()
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
            issues, refused = self._fails_closed(key, rejection.issues, rejection.content)
            return ResourceStatus(
                accepted=False,
                reconciled=False,
                issues=issues,
                generation=rejection.generation,
                origin=rejection.origin,
                refused=refused,
            )
        sub = self._desired.get(key)
        if sub is None:
            return None
        context = tuple(self._context_issues.get(key, ())) + tuple(self._advice.get(key, ()))
        accepted = not errors(list(sub.issues))
        if key.kind in _POLICY_KINDS and blocking(list(context)):
            accepted = False  # the compiler failed on it: refused, as security fails closed
        effective = self._effective.get(key.kind, {}).get(key)
        issues, refused = tuple(sub.issues) + context, None
        if not accepted:
            content = sub.resource.model_dump(by_alias=True, exclude_none=True)
            issues, refused = self._fails_closed(key, issues, content)
        return ResourceStatus(
            accepted=accepted,
            reconciled=accepted and not blocking(list(context)) and effective == sub.resource,
            issues=issues,
            generation=sub.resource.metadata.generation,
            origin=sub.origin,
            refused=refused,
        )

    def _fails_closed(
        self, key: ResourceKey, issues: tuple[Issue, ...], content: Any
    ) -> tuple[tuple[Issue, ...], RefusedPolicy | None]:
        """For a refused security policy with no good version in effect: the scope it fails
        closed for, and the findings with a note saying how (``api/policy_scope.py``)."""
        if key in self._effective.get(key.kind, {}):
            return issues, None  # the last good version keeps serving
        refused = refused_policy(key, content)
        if refused is None:
            return issues, None
        if key.kind == "AuthorizationPolicy":  # part authz: the mesh config's root namespace
            mesh = mesh_of(self._effective.get(MESH_CONFIG_KEY.kind, {}).get(MESH_CONFIG_KEY))
            text, affects_traffic = describe(refused, mesh.root_namespace)
        else:
            text, affects_traffic = describe(refused)
        origin = next((i.origin for i in issues if i.origin), self._origins.get(key))
        note = Issue(
            Codes.POLICY_FAILS_CLOSED,
            "",
            text,
            key,
            origin,
            None if affects_traffic else Level.WARNING,
        )
        return (*issues, note), refused
