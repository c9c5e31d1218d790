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
    Source,
)
from controlplane.api.validation import register_validator

# ``request.headers[x-user]`` and ``request.auth.claims[groups]`` carry a name in brackets.
_BRACKETED_KEYS = ("request.headers", "request.auth.claims")
# Condition keys and the kind of value each takes (Istio's "conditions" reference).
WHEN_KEYS: dict[str, str] = {
    "source.ip": "cidr",
    "remote.ip": "cidr",
    "source.namespace": "namespace",
    "source.principal": "principal",
    "source.serviceAccount": "service_account",
    "request.auth.principal": "text",
    "request.auth.audiences": "text",
    "request.auth.presenter": "text",
    "destination.ip": "cidr",
    "destination.port": "port",
    "connection.sni": "text",
}
_HTTP_METHOD = re.compile(r"^[A-Z-]+$")
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
        if key.startswith(prefix + "[") and key.endswith("]") and len(key) > len(prefix) + 2:
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
    """Istio matches exact values, ``*``, a ``prefix*`` or a ``*suffix``; nothing else."""
    if value == "":
        return [_error(path, f"{what} must not be empty")]
    if any(c.isspace() for c in value):
        return [_error(path, f"{what} {value!r} must not contain whitespace")]
    if "*" in value[1:-1] or value == "**":
        return [
            _error(
                path,
                f"{what} {value!r}: '*' is allowed only alone, as a prefix ('*foo') "
                "or as a suffix ('foo*')",
            )
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
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return [_error(path, f"port {value!r} must be a number between 1 and 65535")]
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
    if spec.action == "CUSTOM":
        # The provider is looked up in the mesh config when compiling (compile/extauthz.py).
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
    return found


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
        for k, value in enumerate(getattr(source, field)):
            found += _check_service_account(f"{path}.{_alias(Source, field)}[{k}]", value)
    for field in ("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks"):
        for k, value in enumerate(getattr(source, field)):
            found += check_cidr(f"{path}.{_alias(Source, field)}[{k}]", value)
    for field in ("trust_domains", "not_trust_domains"):
        if getattr(source, field):
            # Compiling the rest of the source without it would widen an ALLOW or narrow a
            # DENY: refuse (and fail closed) rather than guess.
            found.append(
                _error(
                    f"{path}.{_alias(Source, field)}",
                    "not supported yet: the policy is refused rather than applied without it",
                )
            )
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
            found += _check_wildcard(ppath, value, "path")
            if "{" in value:
                found.append(_error(ppath, f"path template {value!r} is not supported yet"))
    for field in ("hosts", "not_hosts"):
        for k, value in enumerate(getattr(operation, field)):
            found += _check_wildcard(f"{path}.{_alias(Operation, field)}[{k}]", value, "host")
    return found


def _validate_condition(path: str, condition: Condition) -> list[Issue]:
    found: list[Issue] = []
    kind = when_key_kind(condition.key)
    if not condition.key:
        return [_error(f"{path}.key", "key is required")]
    if kind is None:
        known = ", ".join([*WHEN_KEYS, "request.headers[<name>]", "request.auth.claims[<name>]"])
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
