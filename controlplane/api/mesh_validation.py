"""Validation of the mesh config (``api/mesh.py``), with istiod's rules
(``pkg/config/validation/agent``: ``ValidateMeshConfig``, ``validateTrustDomainConfig``,
``validateExtensionProvider``).

Errors refuse the mesh config (its last good version keeps serving): a bad ``trustDomain``
or alias, a ``rootNamespace`` that is not a namespace name. istiod only logs a bad extension
provider ("can be ignored if the given extension provider is not used") and refuses it when a
CUSTOM policy uses it: here it is a warning (CP0420), and a CUSTOM policy naming it fails
closed (CP0421, ``compile/extauthz.py``).
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.mesh import EnvoyExtAuthzGrpc, EnvoyExtAuthzHttp, MeshConfig
from controlplane.api.support import SUPPORTED
from controlplane.api.validation import register_validator

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_FQDN_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$")
# Envoy's StatusCode enum (envoy/type/v3/http_status.proto): the codes statusOnError takes.
_ENVOY_STATUS_CODES = frozenset(
    {100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307}
    | {308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415}
    | {416, 417, 421, 422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506}
    | {507, 508, 510, 511}
)
_HEADER_LISTS = (
    "includeRequestHeadersInCheck",
    "includeHeadersInCheck",
    "headersToUpstreamOnAllow",
    "headersToDownstreamOnDeny",
    "headersToDownstreamOnAllow",
)

# What the compiler reads of the mesh config; other declared fields are warned about.
SUPPORTED["MeshConfig"] = frozenset(
    {
        "spec.trustDomain",
        "spec.trustDomainAliases",
        "spec.rootNamespace",
        "spec.outboundTrafficPolicy",
        "spec.outboundTrafficPolicy.mode",
        "spec.defaultConfig",
        "spec.extensionProviders",
        "spec.extensionProviders.name",
        "spec.extensionProviders.envoyExtAuthzHttp",
        "spec.extensionProviders.envoyExtAuthzGrpc",
        *(
            f"spec.extensionProviders.envoyExtAuthzHttp.{name}"
            for name in (
                "service",
                "port",
                "timeout",
                "pathPrefix",
                "failOpen",
                "statusOnError",
                "includeRequestHeadersInCheck",
                "includeAdditionalHeadersInCheck",
                "includeRequestBodyInCheck.**",
                "headersToUpstreamOnAllow",
                "headersToDownstreamOnDeny",
                "headersToDownstreamOnAllow",
                "includeHeadersInCheck",
            )
        ),
        *(
            f"spec.extensionProviders.envoyExtAuthzGrpc.{name}"
            for name in (
                "service",
                "port",
                "timeout",
                "failOpen",
                "statusOnError",
                "includeRequestBodyInCheck.**",
            )
        ),
        # part "telemetry" (compile/telemetry.py): the providers a Telemetry names and the
        # mesh-wide access log and tracing settings. Not read: an OpenTelemetry provider's
        # resource detectors, service attribute enrichment and Dynatrace sampler.
        "spec.accessLogFile",
        "spec.accessLogEncoding",
        "spec.accessLogFormat",
        "spec.enableTracing",
        "spec.defaultProviders.**",
        "spec.extensionProviders.envoyFileAccessLog.**",
        "spec.extensionProviders.prometheus.**",
        "spec.extensionProviders.zipkin.**",
        "spec.extensionProviders.opentelemetry",
        *(
            f"spec.extensionProviders.opentelemetry.{name}"
            for name in ("service", "port", "maxTagLength", "http.**", "grpc.**")
        ),
    }
)


def check_trust_domain(path: str, domain: str) -> list[Issue]:
    """istiod's ``ValidateTrustDomain``: DNS-1123 labels separated by dots (one trailing
    dot allowed)."""
    if not domain:
        return [Issue(Codes.INVALID_FIELD, path, "empty trust domain not allowed")]
    labels = domain.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    if all(_DNS1123_LABEL.match(label) for label in labels):
        return []
    return [
        Issue(
            Codes.INVALID_FIELD,
            path,
            f"trust domain {domain!r} is invalid: each dot-separated part must be a DNS-1123 "
            "label (lower case letters, digits and '-')",
        )
    ]


def validate_mesh_config(mesh: MeshConfig) -> list[Issue]:
    spec = mesh.spec
    found = check_trust_domain("spec.trustDomain", spec.trust_domain)
    for i, alias in enumerate(spec.trust_domain_aliases):
        found += check_trust_domain(f"spec.trustDomainAliases[{i}]", alias)
    if not _DNS1123_LABEL.match(spec.root_namespace) or len(spec.root_namespace) > 63:
        found.append(
            Issue(
                Codes.INVALID_FIELD,
                "spec.rootNamespace",
                f"{spec.root_namespace!r} is not a namespace name (a DNS-1123 label)",
            )
        )
    found += _validate_providers(spec.extension_providers)
    found += _telemetry_provider_issues(spec.extension_providers)  # part "telemetry"
    return found


def _telemetry_provider_issues(providers: list[Any]) -> list[Issue]:
    """istiod's ``validateExtensionProviderTracingZipkin`` / ``...Opentelemetry``: a service
    and a port; not both grpc and http. Warnings, as for ext_authz providers: a Telemetry
    that uses such a provider gets no tracing."""
    found: list[Issue] = []
    for i, provider in enumerate(providers):
        for where, config in (
            ("zipkin", provider.zipkin),
            ("opentelemetry", provider.opentelemetry),
        ):
            if config is None:
                continue
            path = f"spec.extensionProviders[{i}].{where}"
            problems: list[tuple[str, str]] = []
            if not 1 <= config.port <= 65535:
                problems.append(
                    (
                        "port",
                        f"invalid service port: port number {config.port} must be in the range 1..65535",
                    )
                )
            reason = _service_problem(config.service)
            if reason:
                problems.append(("service", reason))
            if where == "opentelemetry" and config.http is not None and config.grpc is not None:
                problems.append(
                    ("", "OpenTelemetryTracingProvider cannot specify both grpc and http")
                )
            for sub, why in problems:
                found.append(
                    Issue(
                        Codes.INVALID_EXTENSION_PROVIDER,
                        f"{path}.{sub}" if sub else path,
                        why + "; a Telemetry using this provider configures no tracing",
                        level=Level.WARNING,
                    )
                )
    return found


def provider_problems(provider: Any) -> list[tuple[str, str]]:
    """(field path below the provider, reason) for each reason istiod refuses an ext_authz
    provider (``ValidateExtensionProviderEnvoyExtAuthzHTTP/GRPC``, ``buildExtAuthzHTTP``)."""
    out: list[tuple[str, str]] = []
    config: EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc | None
    if provider.envoy_ext_authz_http is not None:
        where, config = "envoyExtAuthzHttp", provider.envoy_ext_authz_http
    elif provider.envoy_ext_authz_grpc is not None:
        where, config = "envoyExtAuthzGrpc", provider.envoy_ext_authz_grpc
    else:
        return out
    if not 1 <= config.port <= 65535:
        out.append((f"{where}.port", f"port must be in the range [1, 65535], found: {config.port}"))
    reason = _service_problem(config.service)
    if reason:
        out.append((f"{where}.service", reason))
    if config.status_on_error:
        text = config.status_on_error
        if not text.lstrip("-").isdigit():
            out.append((f"{where}.statusOnError", f"invalid statusOnError {text!r}: not a number"))
        elif int(text) not in _ENVOY_STATUS_CODES:
            out.append(
                (
                    f"{where}.statusOnError",
                    f"unsupported statusOnError {text}: not an HTTP status Envoy defines",
                )
            )
    if isinstance(config, EnvoyExtAuthzHttp):
        if config.path_prefix and not config.path_prefix.startswith("/"):
            out.append(
                (
                    f"{where}.pathPrefix",
                    f"pathPrefix must begin with '/', found: {config.path_prefix!r}",
                )
            )
        dumped = config.model_dump(by_alias=True)
        for name in _HEADER_LISTS:
            if "*" in dumped.get(name, []):
                out.append(
                    (
                        f"{where}.{name}",
                        "a single wildcard ('*') is not supported; use a prefix or suffix match",
                    )
                )
    return out


def _service_problem(service: str) -> str | None:
    if not service:
        return "service must not be empty"
    parts = service.split("/")
    if len(parts) > 2 or any(not p for p in parts):
        return f"invalid service {service!r}: use <hostname> or <namespace>/<hostname>"
    host = parts[-1]
    if len(parts) == 2 and not _DNS1123_LABEL.match(parts[0]) and parts[0] != "*":
        return f"invalid service {service!r}: {parts[0]!r} is not a namespace name"
    labels = host.split(".")
    if all(_FQDN_LABEL.match(label) for label in labels) or _is_ip(host):
        return None
    return f"invalid service {service!r}: not a hostname or IP address"


def _is_ip(text: str) -> bool:
    import ipaddress  # noqa: PLC0415

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validate_providers(providers: list[Any]) -> list[Issue]:
    found: list[Issue] = []
    seen: set[str] = set()
    for i, provider in enumerate(providers):
        path = f"spec.extensionProviders[{i}]"
        if not provider.name:
            found.append(_provider_issue(f"{path}.name", "empty extension provider name"))
        elif provider.name in seen:
            found.append(
                _provider_issue(
                    f"{path}.name", f"extension provider name must be unique: {provider.name!r}"
                )
            )
        seen.add(provider.name)
        kinds = [
            name
            for name, value in provider.model_dump(by_alias=True, exclude_none=True).items()
            if name != "name" and value is not None
        ]
        if len(kinds) != 1:
            found.append(
                Issue(
                    Codes.INVALID_FIELD,
                    path,
                    f"exactly one provider kind must be set, found {len(kinds)}"
                    + (f" ({', '.join(sorted(kinds))})" if kinds else ""),
                )
            )
            continue
        for sub, reason in provider_problems(provider):
            found.append(_provider_issue(f"{path}.{sub}", reason))
    return found


def _provider_issue(path: str, reason: str) -> Issue:
    return Issue(
        Codes.INVALID_EXTENSION_PROVIDER,
        path,
        reason + "; a CUSTOM AuthorizationPolicy using this provider denies what it matches",
        level=Level.WARNING,
    )


register_validator("MeshConfig", validate_mesh_config)
