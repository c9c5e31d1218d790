"""AuthorizationPolicy -> Envoy RBAC filters, with Istio's semantics.

Which policies apply: those in the root namespace (with a selector: matching workloads of every
namespace) and those in the workload's namespace (all of its workloads, or the ones the selector
matches). Filters, in Istio's order: CUSTOM, AUDIT (RBAC ``LOG``), DENY, ALLOW. A request is
denied when any DENY rule matches; when at least one ALLOW policy applies, it must match an
ALLOW rule; an ALLOW policy without rules therefore denies everything, a DENY policy without
rules matches nothing.

Inside a rule: ``from`` entries are alternatives, so are ``to`` entries; the fields of one
entry and the ``when`` conditions must all hold; the values of one field are alternatives and
a ``not`` field holds when none of its values match.

Fail closed. CUSTOM (external authorization) is built by ``compile/extauthz.py`` (its filters
go first; a CUSTOM policy whose provider cannot be used denies what it matches). For TCP ports (network RBAC) an ALLOW rule that needs HTTP attributes is dropped
(narrower) while a DENY or AUDIT rule only loses its HTTP conditions (broader), as in Istio
(``authz/model/model.go``, ``checkError``). Anything the translator cannot express makes an
ALLOW rule vanish and a DENY or AUDIT rule match everything.

Dry-run: a policy annotated ``istio.io/dry-run: "true"`` goes into the filter's
``shadow_rules`` only, never its enforced ``rules``, with istiod's shadow stat prefixes
(``istio_dry_run_allow_`` / ``istio_dry_run_deny_``), so Envoy counts what it would have done
(``...rbac.istio_dry_run_allow_shadow_denied``) and decides as if it were absent.

Principals are expanded over the mesh's trust domain and ``trustDomainAliases``
(``rbac_trust_domains.py``); ``source.trustDomains`` and the ``source.trustDomain`` key too.

A refused policy with no good version in effect (``WorkloadPolicies.rejected``) applies to the
workloads it would have selected, with the effect istiod gives a policy whose rules it cannot
translate (``builder.go``, ``model.go``): a refused ALLOW is an ALLOW that allows nothing (the
workload denies what no other ALLOW policy allows); a refused DENY, or CUSTOM (istiod denies
what a CUSTOM policy it cannot serve would have sent to its authorizer), or one whose action
cannot be read, denies every request; a refused AUDIT only marks every request for audit
(RBAC ``LOG``, never a denial). A policy that attaches by ``targetRef`` selects no sidecar.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from controlplane.api.issues import ResourceKey
from controlplane.api.mesh import DEFAULT_TRUST_DOMAIN
from controlplane.api.policy_scope import RefusedPolicy
from controlplane.api.security import AuthorizationPolicy, Condition, Operation, Rule, Source
from controlplane.compile.extauthz import (
    ExtAuthzProvider,
    http_ext_authz_filters,
    network_ext_authz_filters,
)
from controlplane.compile.filters import HTTP_RBAC_FILTER, NETWORK_RBAC_FILTER
from controlplane.compile.protos import packed
from controlplane.compile.rbac_matchers import (
    Untranslatable,
    authn_metadata_principal,
    destination_ip_permission,
    direct_remote_ip_principal,
    envoy_filter_metadata_permission,
    header_principal,
    host_permission,
    method_permission,
    namespace_matcher,
    path_permission,
    port_permission,
    principal_matcher,
    remote_ip_principal,
    request_principal_matcher,
    service_account_matcher,
    sni_permission,
    trust_domain_matcher,
)
from controlplane.compile.rbac_trust_domains import expand_principals, expand_trust_domains
from controlplane.store.registry import selects
from controlplane.store.snapshot import ROOT_NAMESPACE

ACTIONS = ("CUSTOM", "AUDIT", "DENY", "ALLOW")  # Istio's filter order
_ENVOY_ACTION = {
    "CUSTOM": rbac_pb2.RBAC.DENY,  # refused CUSTOM policies only (compile/extauthz.py)
    "AUDIT": rbac_pb2.RBAC.LOG,
    "DENY": rbac_pb2.RBAC.DENY,
    "ALLOW": rbac_pb2.RBAC.ALLOW,
}


# Istio's annotation that turns a policy into shadow rules, and the stat prefixes of those.
DRY_RUN_ANNOTATION = "istio.io/dry-run"
SHADOW_STAT_PREFIX = {
    "ALLOW": "istio_dry_run_allow_",
    "DENY": "istio_dry_run_deny_",
}
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def dry_run_value(policy: AuthorizationPolicy) -> bool | None:
    """The policy's dry-run annotation read as istiod reads it (Go's ``ParseBool``): True,
    False, or None when absent or unreadable (istiod then enforces the policy)."""
    value = (policy.metadata.annotations or {}).get(DRY_RUN_ANNOTATION)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def is_dry_run(policy: AuthorizationPolicy) -> bool:
    """Whether the policy is installed as shadow rules only (never for CUSTOM here: what a
    dry-run CUSTOM does belongs to the external authorization translation)."""
    return policy.spec.action != "CUSTOM" and dry_run_value(policy) is True


_MATCH_ALL = rbac_pb2.Policy(
    permissions=[rbac_pb2.Permission(any=True)], principals=[rbac_pb2.Principal(any=True)]
)


class HttpOnly(Exception):
    """A condition that a TCP (network) filter cannot evaluate."""


# ---- which policies apply -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadPolicies:
    """The AuthorizationPolicies that apply to one workload, by action, in a stable order."""

    by_action: Mapping[str, tuple[AuthorizationPolicy, ...]]
    # Refused policies with no good version in effect that would have selected the workload:
    # what their rules said is unknown, so each fails closed as its action does (module doc).
    rejected: tuple[RefusedPolicy, ...] = ()
    # The providers the CUSTOM policies name, resolved against the mesh config.
    providers: tuple[ExtAuthzProvider, ...] = ()
    # The mesh's trust domain first, then its aliases: principals are matched under each.
    trust_domains: tuple[str, ...] = (DEFAULT_TRUST_DOMAIN,)

    def of(self, action: str) -> tuple[AuthorizationPolicy, ...]:
        return self.by_action.get(action, ())

    def rejected_of(self, action: str) -> tuple[ResourceKey, ...]:
        """The refused policies that act as ``action`` (an unreadable action acts as DENY)."""
        return tuple(r.key for r in self.rejected if r.effective_action == action)

    @cached_property
    def key(self) -> tuple[tuple[str, str, str], ...]:
        """Identifies the set and its content, for memoizing the filters built from it: memo
        entries outlive a snapshot (incremental recompiles), so a policy edited under the
        same name must give another key."""
        return (
            tuple(
                (action, f"{p.metadata.namespace}/{p.metadata.name}", _fingerprint(p))
                for action in ACTIONS
                for p in self.of(action)
            )
            + tuple(
                (f"REJECTED-{r.effective_action}", r.key.namespace, r.key.name)
                for r in self.rejected
            )
            + tuple(("PROVIDER", p.name, "/".join(p.key)) for p in self.providers)
            + (("TRUST-DOMAINS", ",".join(self.trust_domains), ""),)
        )

    def __bool__(self) -> bool:
        return any(self.by_action.values()) or bool(self.rejected)


def _fingerprint(policy: AuthorizationPolicy) -> str:
    """A digest of what a policy says (its spec)."""
    text = policy.spec.model_dump_json(by_alias=True, exclude_none=True) + repr(is_dry_run(policy))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def policies_for(
    policies: Iterable[AuthorizationPolicy],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = ROOT_NAMESPACE,
    rejected: Iterable[RefusedPolicy] = (),
    trust_domains: tuple[str, ...] = (DEFAULT_TRUST_DOMAIN,),
) -> WorkloadPolicies:
    """The policies that select a workload with ``labels`` in ``namespace``.

    ``rejected``: refused policies with no good version; each counts where it would have
    applied (``selects``), an unreadable selector counting as its whole namespace.
    ``trust_domains``: the mesh's trust domain, then its aliases.
    """
    found: dict[str, list[AuthorizationPolicy]] = {a: [] for a in ACTIONS}
    for policy in policies:
        meta = policy.metadata
        if meta.namespace not in (namespace, root_namespace):
            continue
        spec = policy.spec
        if spec.selector is None and (spec.target_ref is not None or spec.target_refs):
            continue  # attached by targetRef: gateways and waypoints only, as in istiod
        selector = spec.selector
        if selector is not None and selector.match_labels:
            if not selects(selector.match_labels, labels):
                continue
        found[policy.spec.action].append(policy)
    return WorkloadPolicies(
        {
            a: tuple(sorted(p, key=lambda x: (x.metadata.namespace, x.metadata.name)))
            for a, p in found.items()
            if p
        },
        tuple(r for r in rejected if refused_selects(r, namespace, labels, root_namespace)),
        trust_domains=trust_domains,
    )


def refused_selects(
    refused: RefusedPolicy,
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = ROOT_NAMESPACE,
) -> bool:
    """Whether a refused AuthorizationPolicy would have applied to a workload: the same rule
    as for a good one, a selector that cannot be read counting as its whole namespace (the
    mesh in the root namespace)."""
    if refused.key.namespace not in (namespace, root_namespace) or refused.targeted:
        return False
    if refused.dry_run:
        return False  # never enforced in istiod, broken or not
    if refused.selector is None or not refused.selector:
        return True
    return selects(dict(refused.selector), labels)


def rejected_policy_name(key: ResourceKey) -> str:
    """The deny-everything RBAC policy standing in for a refused AuthorizationPolicy."""
    return f"ns[{key.namespace}]-policy[{key.name}]-rejected"


def policy_name(namespace: str, name: str, index: int) -> str:
    """Istio's RBAC policy key: ``ns[<ns>]-policy[<name>]-rule[<i>]``."""
    return f"ns[{namespace}]-policy[{name}]-rule[{index}]"


# ---- filters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionRules:
    """One RBAC filter's content: enforced rules (None: nothing enforced) and dry-run ones."""

    action: str
    rules: rbac_pb2.RBAC | None
    shadow_rules: rbac_pb2.RBAC | None

    @property
    def shadow_stat_prefix(self) -> str:
        return SHADOW_STAT_PREFIX.get(self.action, "") if self.shadow_rules is not None else ""


def http_rbac_filters(policies: WorkloadPolicies) -> list[hcm_pb2.HttpFilter]:
    """The HTTP RBAC filters for an HTTP port, to go before the router, in Istio's order."""
    custom = http_ext_authz_filters(
        policies.of("CUSTOM"), policies.providers, _custom_rules(policies.trust_domains)
    )
    out: list[hcm_pb2.HttpFilter] = [*custom]
    for built in rbac_rules(policies, for_tcp=False):
        # AUDIT never decides; counting per rule is what makes an audit visible in metrics
        # (besides the access-log hint). Stats only: the decision is istiod's.
        config = http_rbac_pb2.RBAC(
            shadow_rules_stat_prefix=built.shadow_stat_prefix,
            track_per_rule_stats=built.action == "AUDIT",
        )
        if built.rules is not None:
            config.rules.CopyFrom(built.rules)
        if built.shadow_rules is not None:
            config.shadow_rules.CopyFrom(built.shadow_rules)
        out.append(hcm_pb2.HttpFilter(name=HTTP_RBAC_FILTER, typed_config=packed(config)))
    return out


def network_rbac_filters(policies: WorkloadPolicies) -> list[listener_components_pb2.Filter]:
    """The network RBAC filters for a TCP port, to go before tcp_proxy."""
    custom = network_ext_authz_filters(
        policies.of("CUSTOM"), policies.providers, _custom_rules(policies.trust_domains)
    )
    out: list[listener_components_pb2.Filter] = [*custom]
    for built in rbac_rules(policies, for_tcp=True):
        config = network_rbac_pb2.RBAC(
            stat_prefix="tcp.", shadow_rules_stat_prefix=built.shadow_stat_prefix
        )
        if built.rules is not None:
            config.rules.CopyFrom(built.rules)
        if built.shadow_rules is not None:
            config.shadow_rules.CopyFrom(built.shadow_rules)
        out.append(
            listener_components_pb2.Filter(name=NETWORK_RBAC_FILTER, typed_config=packed(config))
        )
    return out


def rbac_rules(policies: WorkloadPolicies, *, for_tcp: bool) -> list[ActionRules]:
    """The RBAC filter contents for one workload, in Istio's order (CUSTOM, AUDIT, DENY,
    ALLOW), each action's enforced and dry-run policies apart."""
    out: list[ActionRules] = []
    for action in ACTIONS:
        # CUSTOM policies go to compile/extauthz.py; only refused ones are denied here.
        selected = policies.of(action) if action != "CUSTOM" else ()
        refused = policies.rejected_of(action)
        if not selected and not refused:
            continue
        enforced = [p for p in selected if not is_dry_run(p)]
        dry_run = [p for p in selected if is_dry_run(p)]
        rules: rbac_pb2.RBAC | None = None
        if enforced or refused:
            rules = rbac_pb2.RBAC(action=_ENVOY_ACTION[action])
            for policy in enforced:
                for name, built in policy_rules(policy, action, for_tcp, policies.trust_domains):
                    rules.policies[name].CopyFrom(built)
            if action != "ALLOW":
                # DENY, CUSTOM (denied here) and AUDIT (logged): a refused one matches every
                # request. A refused ALLOW adds no rule: it allows nothing, but its presence
                # makes the workload deny what no other ALLOW policy allows.
                for key in refused:
                    rules.policies[rejected_policy_name(key)].CopyFrom(_MATCH_ALL)
            if action != "ALLOW" and not rules.policies:
                rules = None  # a DENY/AUDIT/CUSTOM filter that matches nothing enforces nothing
        shadow: rbac_pb2.RBAC | None = None
        if dry_run:
            shadow = rbac_pb2.RBAC(action=_ENVOY_ACTION[action])
            for policy in dry_run:
                for name, built in policy_rules(policy, action, for_tcp, policies.trust_domains):
                    shadow.policies[name].CopyFrom(built)
        if rules is None and shadow is None:
            continue
        out.append(ActionRules(action, rules, shadow))
    return out


def _custom_rules(
    trust_domains: tuple[str, ...],
) -> Callable[[AuthorizationPolicy, bool], list[tuple[str, rbac_pb2.Policy]]]:
    """CUSTOM rules translated under the workload's trust domains (for compile/extauthz.py)."""

    def translate(policy: AuthorizationPolicy, for_tcp: bool) -> list[tuple[str, rbac_pb2.Policy]]:
        return policy_rules(policy, "CUSTOM", for_tcp, trust_domains)

    return translate


def policy_rules(
    policy: AuthorizationPolicy,
    action: str,
    for_tcp: bool,
    trust_domains: tuple[str, ...] = (DEFAULT_TRUST_DOMAIN,),
) -> list[tuple[str, rbac_pb2.Policy]]:
    """One policy's rules as named RBAC policies, translated with the narrowing of ``action``
    (ALLOW narrows when in doubt; DENY, AUDIT and CUSTOM broaden). Usable for any action:
    the caller puts them into whichever RBAC config it builds."""
    meta = policy.metadata
    out: list[tuple[str, rbac_pb2.Policy]] = []
    for i, rule in enumerate(policy.spec.rules or ()):
        name = policy_name(meta.namespace, meta.name, i)
        strict = action == "ALLOW"
        try:
            built = translate_rule(
                rule,
                meta.namespace,
                for_tcp=for_tcp,
                drop_http=not strict,
                trust_domains=trust_domains,
            )
        except HttpOnly:
            continue  # an ALLOW rule a TCP port cannot check allows nothing there
        except Untranslatable:
            if strict:
                continue
            built = _MATCH_ALL
        out.append((name, built))
    return out


# The name part extauthz's CUSTOM translation calls (compile/extauthz.py on its branch).
_policy_rules = policy_rules


# ---- one rule -------------------------------------------------------------------------------


def translate_rule(
    rule: Rule,
    namespace: str,
    *,
    for_tcp: bool = False,
    drop_http: bool = False,
    trust_domains: tuple[str, ...] = (DEFAULT_TRUST_DOMAIN,),
) -> rbac_pb2.Policy:
    """One Istio rule as an Envoy RBAC policy.

    For TCP, HTTP-only conditions raise HttpOnly, or are left out when ``drop_http``.
    """
    ctx = _Context(namespace, for_tcp, drop_http, trust_domains)
    permission_parts: list[rbac_pb2.Permission] = []
    principal_parts: list[rbac_pb2.Principal] = []
    if rule.to:
        alternatives = [ctx.operation(t.operation) for t in rule.to if t.operation is not None]
        permission_parts.append(_or_permissions([a for a in alternatives if a is not None]))
    if rule.from_:
        alternatives = [ctx.source(f.source) for f in rule.from_ if f.source is not None]
        principal_parts.append(_or_principals([a for a in alternatives if a is not None]))
    for condition in rule.when:
        ctx.condition(condition, permission_parts, principal_parts)
    return rbac_pb2.Policy(
        permissions=[_and_permissions(permission_parts)],
        principals=[_and_principals(principal_parts)],
    )


class _Context:
    def __init__(
        self, namespace: str, for_tcp: bool, drop_http: bool, trust_domains: tuple[str, ...]
    ) -> None:
        self.namespace = namespace
        self.for_tcp = for_tcp
        self.drop_http = drop_http
        self.trust_domains = trust_domains

    def http_only(self) -> bool:
        """True when an HTTP condition must be skipped (TCP, DENY); raises for TCP ALLOW."""
        if not self.for_tcp:
            return False
        if self.drop_http:
            return True
        raise HttpOnly()

    def principals(self, values: list[str]) -> list[str]:
        return expand_principals(values, self.trust_domains)

    def domains(self, values: list[str]) -> list[str]:
        return expand_trust_domains(values, self.trust_domains)

    # -- from.source
    def source(self, source: Source) -> rbac_pb2.Principal | None:
        parts: list[rbac_pb2.Principal] = []
        fields: list[tuple[list[str], list[str], Callable[[str], rbac_pb2.Principal], bool]] = [
            (
                self.principals(source.principals),
                self.principals(source.not_principals),
                principal_matcher,
                False,
            ),
            (
                source.request_principals,
                source.not_request_principals,
                request_principal_matcher,
                True,
            ),
            (source.namespaces, source.not_namespaces, namespace_matcher, False),
            (
                source.service_accounts,
                source.not_service_accounts,
                lambda v: service_account_matcher(v, self.namespace),
                False,
            ),
            (
                self.domains(source.trust_domains),
                self.domains(source.not_trust_domains),
                trust_domain_matcher,
                False,
            ),
            (source.ip_blocks, source.not_ip_blocks, direct_remote_ip_principal, False),
            (source.remote_ip_blocks, source.not_remote_ip_blocks, remote_ip_principal, False),
        ]
        for values, not_values, build, http in fields:
            if (values or not_values) and http and self.http_only():
                continue
            if values:
                parts.append(_or_principals([build(v) for v in values]))
            if not_values:
                parts.append(
                    rbac_pb2.Principal(not_id=_or_principals([build(v) for v in not_values]))
                )
        return _and_principals(parts)

    # -- to.operation
    def operation(self, op: Operation) -> rbac_pb2.Permission | None:
        parts: list[rbac_pb2.Permission] = []
        fields: list[tuple[list[str], list[str], Callable[[str], rbac_pb2.Permission], bool]] = [
            (op.hosts, op.not_hosts, host_permission, True),
            (op.ports, op.not_ports, port_permission, False),
            (op.methods, op.not_methods, method_permission, True),
            (op.paths, op.not_paths, path_permission, True),
        ]
        for values, not_values, build, http in fields:
            if (values or not_values) and http and self.http_only():
                continue
            if values:
                parts.append(_or_permissions([build(v) for v in values]))
            if not_values:
                parts.append(
                    rbac_pb2.Permission(not_rule=_or_permissions([build(v) for v in not_values]))
                )
        return _and_permissions(parts)

    # -- when
    def condition(
        self,
        condition: Condition,
        permissions: list[rbac_pb2.Permission],
        principals: list[rbac_pb2.Principal],
    ) -> None:
        key = condition.key
        values, not_values = condition.values, condition.not_values
        principal_build: Callable[[str], rbac_pb2.Principal] | None = None
        permission_build: Callable[[str], rbac_pb2.Permission] | None = None
        http = False
        if key.startswith("request.headers[") and key.endswith("]"):
            header = key[len("request.headers[") : -1]
            principal_build = lambda v: header_principal(header, v)  # noqa: E731
            http = True
        elif key.startswith("request.auth.claims[") and key.endswith("]"):
            claim = key[len("request.auth.claims[") : -1]
            principal_build = lambda v: authn_metadata_principal(  # noqa: E731
                ["request.auth.claims", *claim.split("][")], v
            )
            http = True
        elif key in ("request.auth.principal", "request.auth.audiences", "request.auth.presenter"):
            principal_build = lambda v: authn_metadata_principal([key], v)  # noqa: E731
            http = True
        elif key == "source.ip":
            principal_build = direct_remote_ip_principal
        elif key == "remote.ip":
            principal_build = remote_ip_principal
        elif key == "source.namespace":
            principal_build = namespace_matcher
        elif key == "source.principal":
            principal_build = principal_matcher
            values, not_values = self.principals(values), self.principals(not_values)
        elif key == "source.trustDomain":
            principal_build = trust_domain_matcher
            values, not_values = self.domains(values), self.domains(not_values)
        elif key == "source.serviceAccount":
            principal_build = lambda v: service_account_matcher(v, self.namespace)  # noqa: E731
        elif key == "destination.ip":
            permission_build = destination_ip_permission
        elif key == "destination.port":
            permission_build = port_permission
        elif key == "connection.sni":
            permission_build = sni_permission
        elif key.startswith("experimental.envoy.filters."):
            # The values together make one matcher (istiod's "extended" generator).
            if values:
                permissions.append(envoy_filter_metadata_permission(key, values))
            if not_values:
                permissions.append(
                    rbac_pb2.Permission(not_rule=envoy_filter_metadata_permission(key, not_values))
                )
            return
        else:
            raise Untranslatable(f"unknown condition key {key!r}")
        if http and self.http_only():
            return
        if principal_build is not None:
            if values:
                principals.append(_or_principals([principal_build(v) for v in values]))
            if not_values:
                principals.append(
                    rbac_pb2.Principal(
                        not_id=_or_principals([principal_build(v) for v in not_values])
                    )
                )
        elif permission_build is not None:
            if values:
                permissions.append(_or_permissions([permission_build(v) for v in values]))
            if not_values:
                permissions.append(
                    rbac_pb2.Permission(
                        not_rule=_or_permissions([permission_build(v) for v in not_values])
                    )
                )


# ---- combinators ----------------------------------------------------------------------------


def _and_permissions(parts: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not parts:
        return rbac_pb2.Permission(any=True)
    if len(parts) == 1:
        return parts[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))


def _or_permissions(parts: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not parts:
        raise Untranslatable("an empty list of alternatives")
    if len(parts) == 1:
        return parts[0]
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=parts))


def _and_principals(parts: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not parts:
        return rbac_pb2.Principal(any=True)
    if len(parts) == 1:
        return parts[0]
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=parts))


def _or_principals(parts: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not parts:
        raise Untranslatable("an empty list of alternatives")
    if len(parts) == 1:
        return parts[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=parts))
