"""Validation of PeerAuthentication and AuthorizationPolicy, as istiod's webhook does it.

Every rule here exists because the compiler would otherwise have to guess, and a guess in a
security policy either opens a hole or closes a door nobody asked to close. A value the
compiler cannot translate exactly is an error with its field path, never dropped.
"""

from __future__ import annotations

import ipaddress
import re

from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.networking import WorkloadSelector
from controlplane.api.security import (
    AuthorizationPolicy,
    Condition,
    Operation,
    PeerAuthentication,
    Rule,
    Source,
)
from controlplane.api.validation import register_validator

# ``request.headers[x-user]``, ``request.auth.claims[groups]`` and
# ``experimental.envoy.filters.<filter>[<key>]`` carry a name in brackets.
_BRACKETED_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
# Condition keys and the kind of value each takes (Istio's "conditions" reference).
WHEN_KEYS: dict[str, str] = {
    "source.ip": "cidr",
    "remote.ip": "cidr",
    "source.namespace": "namespace",
    "source.principal": "principal",
    "source.serviceAccount": "service_account",
    "source.trustDomain": "trust_domain",
    "request.auth.principal": "text",
    "request.auth.audiences": "text",
    "request.auth.presenter": "text",
    "destination.ip": "cidr",
    "destination.port": "port",
    "connection.sni": "text",
}
# Keys istiod knows and refuses, with its reason (pkg/config/security ValidateAttribute).
_REFUSED_KEYS: dict[str, str] = {
    "destination.namespace": "replaced by the policy's metadata.namespace",
    "destination.name": "deprecated: only supported in v1alpha1",
    "destination.user": "deprecated: only supported in v1alpha1",
}
_HTTP_METHOD = re.compile(r"^[A-Z-]+$")
# A segment of a path with a {*} / {**} template (istiod's IsValidLiteral).
_TEMPLATE_LITERAL = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")
_SERVICE_ACCOUNTS_MAX = 16
_SERVICE_ACCOUNT_MAX_LENGTH = 320
_DRY_RUN_ANNOTATION = "istio.io/dry-run"
# What Go's strconv.ParseBool reads (istiod reads the annotation with it).
_GO_BOOLS = frozenset("1 t T TRUE true True 0 f F FALSE false False".split())
_SHADOW_STATS = {"ALLOW": "istio_dry_run_allow_.", "DENY": "istio_dry_run_deny_."}
_DRY_RUN_TRUE = frozenset("1 t T TRUE true True".split())
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def _warning(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason, level=Level.WARNING)


def when_key_kind(key: str) -> str | None:
    """The kind of value a ``when`` key takes, or None for a key Istio does not define."""
    if key in WHEN_KEYS:
        return WHEN_KEYS[key]
    for prefix in _BRACKETED_KEYS:
        if not key.startswith(prefix) or not key.endswith("]"):
            continue
        open_at = key.find("[", len(prefix) - 1)
        if prefix.endswith("."):  # experimental.envoy.filters.<filter>[<key>]
            if open_at > len(prefix) and open_at < len(key) - 2:
                return "text"
        elif open_at == len(prefix) and len(key) > len(prefix) + 2:
            return "text"
    return None


# ---- shared value checks ------------------------------------------------------------------


def _check_selector(path: str, selector: WorkloadSelector | None) -> list[Issue]:
    found: list[Issue] = []
    if selector is None:
        return found
    for key, value in selector.match_labels.items():
        lpath = f"{path}.matchLabels.{key}"
        if "*" in key or "*" in value:
            found.append(_error(lpath, "wildcards are not allowed in a workload selector"))
        elif not key or not _LABEL_KEY.match(key):
            found.append(_error(lpath, f"{key!r} is not a valid label key"))
    return found


def _check_wildcard(path: str, value: str, what: str) -> list[Issue]:
    """Istio matches exact values, ``*``, a ``prefix*`` or a ``*suffix``. istiod refuses only
    an empty value; any other ``*`` is matched as a literal character, so it is accepted with
    a warning saying so (the policy means what it means in istiod)."""
    if value == "":
        return [_error(path, f"{what} must not be empty")]
    if any(c.isspace() for c in value):
        return [_warning(path, f"{what} {value!r} contains whitespace, matched literally")]
    if "*" in value[1:-1] or value == "**":
        return [
            _warning(
                path,
                f"{what} {value!r}: a '*' inside a value is matched as the character '*' "
                "(it is a wildcard only alone, as a prefix '*foo' or as a suffix 'foo*')",
            )
        ]
    return []


def _check_trust_domain(path: str, value: str, slash_allowed: bool = False) -> list[Issue]:
    """istiod's CheckTrustDomainValues: one ``*`` at most, at either end; no ``/`` (the
    ``source.trustDomain`` key is checked for the wildcard only, as istiod does)."""
    if value == "":
        return [_error(path, "trust domain must not be empty")]
    stars = value.count("*")
    if stars > 1 or (
        stars == 1 and value != "*" and not value.startswith("*") and not value.endswith("*")
    ):
        return [
            _error(
                path,
                f"trust domain {value!r}: one '*' at most, alone, at the start or at the end",
            )
        ]
    if "/" in value and not slash_allowed:
        return [_error(path, f"trust domain {value!r} must not contain '/'")]
    return []


def check_path_template(path: str, value: str) -> list[Issue]:
    """istiod's CheckValidPathTemplate: ``{*}`` and ``{**}`` only as whole segments, ``{**}``
    the last operator, and literal segments of a template path from the URI characters."""
    has_template = "{*}" in value or "{**}" in value
    found_any = False
    for segment in value.strip("/").split("/"):
        if segment in ("{*}", "{**}"):
            if found_any:
                return [_error(path, f"path {value!r}: {{**}} must be the last operator")]
            found_any = segment == "{**}"
            continue
        if "{" in segment or "}" in segment:
            return [_error(path, f"path {value!r}: '{{' or '}}' outside a {{*}} or {{**}} segment")]
        if has_template and not _TEMPLATE_LITERAL.match(segment):
            return [
                _error(path, f"path {value!r}: segment {segment!r} is not a valid template literal")
            ]
    return []


def check_principal(path: str, value: str) -> list[Issue]:
    """A principal is any string istiod matches as ``spiffe://<value>`` (usually
    ``<trust-domain>/ns/<ns>/sa/<sa>``), with ``*`` as a prefix or suffix; istiod accepts any
    such string, and so do we. One that can never match is a warning."""
    found = _check_wildcard(path, value, "principal")
    if found:
        return found
    if value.startswith("spiffe://"):
        return [
            _warning(
                path,
                f"principal {value!r} is matched as 'spiffe://{value}' and never matches; "
                f"write it without 'spiffe://' (e.g. {value.removeprefix('spiffe://')!r})",
            )
        ]
    return []


def check_cidr(path: str, value: str) -> list[Issue]:
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return [_error(path, f"{value!r} is not an IP address or CIDR block (e.g. 10.0.0.0/16)")]
    return []


def check_port_text(path: str, value: str) -> list[Issue]:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        return [_error(path, f"port {value!r} must be a number between 0 and 65535")]
    return []


# ---- PeerAuthentication -------------------------------------------------------------------


def validate_peer_authentication(pa: PeerAuthentication) -> list[Issue]:
    spec = pa.spec
    found = _check_selector("spec.selector", spec.selector)
    has_selector = spec.selector is not None and bool(spec.selector.match_labels)
    if "port_level_mtls" in spec.model_fields_set and not spec.port_level_mtls:
        found.append(_error("spec.portLevelMtls", "must have at least one port when set"))
    if spec.port_level_mtls and not has_selector:
        found.append(
            _error(
                "spec.portLevelMtls",
                "portLevelMtls applies to the ports of selected workloads and needs a "
                "selector with matchLabels",
            )
        )
    for port in spec.port_level_mtls:
        if not 1 <= port <= 65535:
            found.append(_error(f"spec.portLevelMtls.{port}", "port must be between 1 and 65535"))
    return found


# ---- AuthorizationPolicy ------------------------------------------------------------------


def validate_authorization_policy(policy: AuthorizationPolicy) -> list[Issue]:
    spec = policy.spec
    found = _check_selector("spec.selector", spec.selector)
    if spec.selector is not None and (spec.target_ref is not None or spec.target_refs):
        found.append(_error("spec.selector", "selector and targetRef are mutually exclusive"))
    if spec.target_ref is not None and spec.target_refs:
        found.append(_error("spec.targetRefs", "targetRef and targetRefs are mutually exclusive"))
    found += _check_dry_run(policy)
    if spec.action == "CUSTOM":
        # The provider is looked up in the mesh config when compiling (compile/extauthz.py).
        found += _custom_refusals(spec.rules or [])
        if spec.rules is None:
            found.append(
                _error(
                    "spec.rules",
                    "a CUSTOM policy without rules never triggers; add an empty rule {} to "
                    "send every request to the provider",
                )
            )
        if spec.provider is None or not spec.provider.name:
            found.append(_error("spec.provider.name", "a CUSTOM policy needs a provider"))
    elif spec.provider is not None:
        found.append(_error("spec.provider", "provider is only allowed with action CUSTOM"))
    if spec.rules is None:
        if spec.action == "DENY":
            found.append(
                _error(
                    "spec.rules",
                    "a DENY policy without rules never triggers; add an empty rule {} to "
                    "deny every request",
                )
            )
        elif spec.action == "AUDIT":
            found.append(_warning("spec.rules", "an AUDIT policy without rules matches nothing"))
        return found
    for i, rule in enumerate(spec.rules):
        path = f"spec.rules[{i}]"
        for field, entries in (("from", rule.from_), ("to", rule.to)):
            if not entries and ("from_" if field == "from" else "to") in rule.model_fields_set:
                found.append(_error(f"{path}.{field}", f"`{field}` must not be empty when set"))
        for j, source in enumerate(f.source for f in rule.from_):
            fpath = f"{path}.from[{j}].source"
            if source is None or not _has_values(source):
                found.append(_error(fpath, "a from entry needs a source with at least one field"))
            else:
                found += _validate_source(fpath, source)
        for j, operation in enumerate(t.operation for t in rule.to):
            tpath = f"{path}.to[{j}].operation"
            if operation is None or not _has_values(operation):
                found.append(_error(tpath, "a to entry needs an operation with at least one field"))
            else:
                found += _validate_operation(tpath, operation)
        for j, condition in enumerate(rule.when):
            found += _validate_condition(f"{path}.when[{j}]", condition)
        if spec.action == "DENY" and _denies_every_tcp_connection(rule):
            found.append(
                _warning(
                    path,
                    "this DENY rule uses only HTTP attributes, so it denies every connection "
                    "to the TCP ports it covers (as in istiod); name the ports to narrow it",
                )
            )
    return found


def _check_dry_run(policy: AuthorizationPolicy) -> list[Issue]:
    value = (policy.metadata.annotations or {}).get(_DRY_RUN_ANNOTATION)
    if value is None or value in _GO_BOOLS:
        if value in _DRY_RUN_TRUE and policy.spec.action != "CUSTOM":
            return [
                Issue(
                    Codes.AUTHZ_DRY_RUN,
                    f"metadata.annotations[{_DRY_RUN_ANNOTATION}]",
                    "dry-run: installed as shadow rules only, never enforced; Envoy counts "
                    f"what it would have done (rbac.{_SHADOW_STATS.get(policy.spec.action, '')}"
                    "shadow_allowed / shadow_denied)",
                )
            ]
        return []
    return [
        _warning(
            f"metadata.annotations[{_DRY_RUN_ANNOTATION}]",
            f"{value!r} is not a boolean ('true' or 'false'); the policy is enforced, "
            "as istiod does",
        )
    ]


def _custom_refusals(rules: list[Rule]) -> list[Issue]:
    """What istiod does not support with CUSTOM: identity fields and identity keys."""
    found: list[Issue] = []
    identity = (
        "namespaces",
        "not_namespaces",
        "service_accounts",
        "not_service_accounts",
        "trust_domains",
        "not_trust_domains",
        "principals",
        "not_principals",
        "request_principals",
        "not_request_principals",
    )
    for i, rule in enumerate(rules):
        for j, entry in enumerate(rule.from_):
            if entry.source is None:
                continue
            for field in identity:
                if getattr(entry.source, field):
                    found.append(
                        _error(
                            f"spec.rules[{i}].from[{j}].source.{_alias(Source, field)}",
                            "not supported with action CUSTOM (as in istiod)",
                        )
                    )
        for j, condition in enumerate(rule.when):
            key = condition.key
            if key in (
                "source.namespace",
                "source.serviceAccount",
                "source.trustDomain",
                "source.principal",
            ) or key.startswith("request.auth."):
                found.append(
                    _error(
                        f"spec.rules[{i}].when[{j}].key",
                        f"{key!r} is not supported with action CUSTOM (as in istiod)",
                    )
                )
    return found


def _denies_every_tcp_connection(rule: Rule) -> bool:
    """istiod's warning: a DENY rule whose from/to name only HTTP attributes."""
    tcp_from = any(
        f.source is not None
        and any(
            getattr(f.source, name)
            for name in type(f.source).model_fields
            if name not in ("request_principals", "not_request_principals")
        )
        for f in rule.from_
    )
    tcp_to = any(
        t.operation is not None and (t.operation.ports or t.operation.not_ports) for t in rule.to
    )
    has_from = any(f.source is not None for f in rule.from_)
    has_to = any(t.operation is not None for t in rule.to)
    return (has_from and not has_to and not tcp_from) or (has_to and not tcp_to)


def _has_values(model: Source | Operation) -> bool:
    return any(getattr(model, name) for name in type(model).model_fields)


def _validate_source(path: str, source: Source) -> list[Issue]:
    found: list[Issue] = []
    for field in ("principals", "not_principals"):
        for k, value in enumerate(getattr(source, field)):
            found += check_principal(f"{path}.{_alias(Source, field)}[{k}]", value)
    for field in ("request_principals", "not_request_principals"):
        for k, value in enumerate(getattr(source, field)):
            found += _check_wildcard(f"{path}.{_alias(Source, field)}[{k}]", value, "principal")
    for field in ("namespaces", "not_namespaces"):
        for k, value in enumerate(getattr(source, field)):
            found += _check_wildcard(f"{path}.{_alias(Source, field)}[{k}]", value, "namespace")
    for field in ("service_accounts", "not_service_accounts"):
        if len(getattr(source, field)) > _SERVICE_ACCOUNTS_MAX:
            found.append(
                _error(
                    f"{path}.{_alias(Source, field)}",
                    f"may not have more than {_SERVICE_ACCOUNTS_MAX} values",
                )
            )
        for k, value in enumerate(getattr(source, field)):
            found += _check_service_account(f"{path}.{_alias(Source, field)}[{k}]", value)
    for field in ("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks"):
        for k, value in enumerate(getattr(source, field)):
            found += check_cidr(f"{path}.{_alias(Source, field)}[{k}]", value)
    for field in ("trust_domains", "not_trust_domains"):
        for k, value in enumerate(getattr(source, field)):
            found += _check_trust_domain(f"{path}.{_alias(Source, field)}[{k}]", value)
    uses_accounts = source.service_accounts or source.not_service_accounts
    if uses_accounts and (
        source.principals or source.not_principals or source.namespaces or source.not_namespaces
    ):
        found.append(
            _error(
                f"{path}.serviceAccounts",
                "serviceAccounts cannot be combined with principals or namespaces",
            )
        )
    return found


def _check_service_account(path: str, value: str) -> list[Issue]:
    if len(value) > _SERVICE_ACCOUNT_MAX_LENGTH:
        return [_error(path, f"service account is longer than {_SERVICE_ACCOUNT_MAX_LENGTH}")]
    if "*" in value:
        return [_error(path, f"service account {value!r}: wildcards are not allowed")]
    parts = value.split("/")
    if len(parts) > 2 or not all(parts):
        return [_error(path, f"{value!r} is not '<service-account>' or '<namespace>/<sa>'")]
    return []


def _validate_operation(path: str, operation: Operation) -> list[Issue]:
    found: list[Issue] = []
    for field in ("ports", "not_ports"):
        for k, value in enumerate(getattr(operation, field)):
            found += check_port_text(f"{path}.{_alias(Operation, field)}[{k}]", value)
    for field in ("methods", "not_methods"):
        for k, value in enumerate(getattr(operation, field)):
            mpath = f"{path}.{_alias(Operation, field)}[{k}]"
            wrong = _check_wildcard(mpath, value, "method")
            if wrong:
                found += wrong
            elif not _HTTP_METHOD.match(value.strip("*") or "GET"):
                # istiod accepts any method; HTTP methods are case-sensitive tokens
                found.append(_warning(mpath, f"{value!r} matches no standard HTTP method"))
    for field in ("paths", "not_paths"):
        for k, value in enumerate(getattr(operation, field)):
            ppath = f"{path}.{_alias(Operation, field)}[{k}]"
            if value == "":
                found.append(_error(ppath, "path must not be empty"))
            elif "{" in value or "}" in value:
                found += check_path_template(ppath, value)
            else:
                found += _check_wildcard(ppath, value, "path")
    for field in ("hosts", "not_hosts"):
        for k, value in enumerate(getattr(operation, field)):
            found += _check_wildcard(f"{path}.{_alias(Operation, field)}[{k}]", value, "host")
    return found


def _validate_condition(path: str, condition: Condition) -> list[Issue]:
    found: list[Issue] = []
    kind = when_key_kind(condition.key)
    if not condition.key:
        return [_error(f"{path}.key", "key is required")]
    if kind is None and (
        condition.key in _REFUSED_KEYS or condition.key.startswith("destination.labels[")
    ):
        reason = _REFUSED_KEYS.get(condition.key, "replaced by the workload selector")
        return [_error(f"{path}.key", f"key {condition.key!r} is {reason}")]
    if kind is None:
        known = ", ".join(
            [
                *WHEN_KEYS,
                "request.headers[<name>]",
                "request.auth.claims[<name>]",
                "experimental.envoy.filters.<filter>[<key>]",
            ]
        )
        return [_error(f"{path}.key", f"unknown key {condition.key!r} (known keys: {known})")]
    if not condition.values and not condition.not_values:
        found.append(_error(path, "a condition needs values or notValues"))
    for field, alias in (("values", "values"), ("not_values", "notValues")):
        for k, value in enumerate(getattr(condition, field)):
            vpath = f"{path}.{alias}[{k}]"
            if kind == "cidr":
                found += check_cidr(vpath, value)
            elif kind == "port":
                found += check_port_text(vpath, value)
            elif kind == "principal":
                found += check_principal(vpath, value)
            elif kind == "service_account":
                found += _check_service_account(vpath, value)
            elif kind == "trust_domain":
                found += _check_trust_domain(vpath, value, slash_allowed=True)
            else:
                found += _check_wildcard(vpath, value, "value")
    return found


def _alias(model: type[Source] | type[Operation], field: str) -> str:
    return model.model_fields[field].alias or field


# ---- registration ---------------------------------------------------------------------------
# What a refused policy does meanwhile (it fails closed for the workloads it would have
# selected) is said by the store, which knows whether an earlier version is in effect
# (``api/policy_scope.py``).

register_validator("PeerAuthentication", validate_peer_authentication)
register_validator("AuthorizationPolicy", validate_authorization_policy)
