"""CUSTOM AuthorizationPolicies -> Envoy external authorization, as istiod builds it
(``pilot/pkg/security/authz/builder/{builder,extauthz}.go``).

The provider is the one ``spec.provider.name`` names in the mesh config's
``extensionProviders`` (``envoyExtAuthzHttp`` or ``envoyExtAuthzGrpc``). For each workload
with CUSTOM policies, before every other authorization filter:

1. an RBAC filter in shadow mode whose shadow rules are the CUSTOM policies' rules, named
   ``istio-ext-authz-<provider>-ns[<ns>]-policy[<name>]-rule[<i>]``, with the shadow stat
   prefix ``istio_ext_authz_``: it enforces nothing, and records the rule a request matched
   in the dynamic metadata ``istio_ext_authz_shadow_effective_policy_id``;
2. the ext_authz filter, enabled only when that metadata starts with
   ``istio-ext-authz-<provider>`` (``filter_enabled_metadata``): a request the CUSTOM rules
   do not match never reaches the authorizer.

TCP ports get the same pair as network filters, for a gRPC provider only (an HTTP provider
cannot check a TCP connection: istiod leaves the CUSTOM policy out there).

Fail closed, as istiod: a CUSTOM policy whose provider is undefined, invalid, not an ext_authz
provider, or whose service is not in the registry, and every CUSTOM policy of a workload whose
CUSTOM policies name more than one provider (istiod's rule unless
PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS), becomes an RBAC DENY of what its rules match
(rules suffixed ``-deny-due-to-bad-CUSTOM-action``). A dry-run CUSTOM policy is left out
(nothing is sent to the authorizer for it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as http_ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as tcp_ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2

from controlplane.api.mesh import (
    EnvoyExtAuthzGrpc,
    EnvoyExtAuthzHttp,
    ExtAuthzBody,
    MeshConfigSpec,
)
from controlplane.api.security import AuthorizationPolicy
from controlplane.compile.filters import (
    HTTP_EXT_AUTHZ_FILTER,
    HTTP_RBAC_FILTER,
    NETWORK_EXT_AUTHZ_FILTER,
    NETWORK_RBAC_FILTER,
)
from controlplane.compile.naming import outbound_cluster_name
from controlplane.compile.protos import duration, packed
from controlplane.store.context import resolve_ext_authz
from controlplane.store.registry import MeshService

EXT_AUTHZ_PREFIX = "istio-ext-authz"
SHADOW_STAT_PREFIX = "istio_ext_authz_"  # istiod's RBACExtAuthzShadowRulesStatPrefix
SHADOW_EFFECTIVE_POLICY_ID = SHADOW_STAT_PREFIX + "shadow_effective_policy_id"
BAD_CUSTOM_SUFFIX = "-deny-due-to-bad-CUSTOM-action"
DEFAULT_TIMEOUT_SECONDS = 600.0  # istiod's default when the provider sets no timeout
_DRY_RUN_ANNOTATION = "istio.io/dry-run"

# A policy's rules as named RBAC policies, for an HTTP (False) or TCP (True) chain, with the
# CUSTOM action's translation (compile/rbac.py: broader when in doubt, as a DENY).
RuleBuilder = Callable[[AuthorizationPolicy, bool], list[tuple[str, rbac_pb2.Policy]]]


@dataclass(frozen=True)
class ExtAuthzProvider:
    """A provider a CUSTOM policy names, resolved against the mesh config and the registry:
    its config and cluster, or why it cannot be used (``error``)."""

    name: str
    config: EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc | None = None
    cluster: str = ""
    hostname: str = ""
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identifies the provider and its content (for memo keys)."""
        text = self.config.model_dump_json(by_alias=True) if self.config is not None else ""
        digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        return (self.name, self.cluster, self.error or "", digest)


def is_dry_run(policy: AuthorizationPolicy) -> bool:
    """istiod's ``isDryRun``: the annotation parsed as a Go bool."""
    value = policy.metadata.annotations.get(_DRY_RUN_ANNOTATION, "")
    return value.strip() in ("1", "t", "T", "TRUE", "true", "True")


def provider_names(policies: Iterable[AuthorizationPolicy]) -> list[str]:
    """The providers the enforced CUSTOM ``policies`` name, sorted, each once."""
    return sorted(
        {p.spec.provider.name if p.spec.provider else "" for p in policies if not is_dry_run(p)}
    )


def resolve_provider(
    mesh: MeshConfigSpec, services: Mapping[str, MeshService], name: str
) -> ExtAuthzProvider:
    """``name`` looked up as istiod does (``store/context.py``, ``resolve_ext_authz``)."""
    config, service, error = resolve_ext_authz(mesh, services, name)
    if error is not None or service is None or config is None:
        return ExtAuthzProvider(name, config, error=error or "unresolved")
    cluster = outbound_cluster_name(config.port, None, service.hostname)
    return ExtAuthzProvider(name, config, cluster, service.hostname)


def resolve_providers(
    mesh: MeshConfigSpec, services: Mapping[str, MeshService], names: Iterable[str]
) -> tuple[ExtAuthzProvider, ...]:
    return tuple(resolve_provider(mesh, services, name) for name in names)


# ---- filters ------------------------------------------------------------------------------


def http_ext_authz_filters(
    policies: Sequence[AuthorizationPolicy],
    providers: Sequence[ExtAuthzProvider],
    rules: RuleBuilder,
) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filters of the CUSTOM ``policies``, to go first (module doc)."""
    out: list[hcm_pb2.HttpFilter] = []
    for rbac, ext_authz in _build(policies, providers, rules, for_tcp=False):
        out.append(
            hcm_pb2.HttpFilter(
                name=HTTP_RBAC_FILTER,
                typed_config=packed(
                    http_rbac_pb2.RBAC(
                        shadow_rules=rbac, shadow_rules_stat_prefix=SHADOW_STAT_PREFIX
                    )
                    if ext_authz is not None
                    else http_rbac_pb2.RBAC(rules=rbac)
                ),
            )
        )
        if ext_authz is not None:
            out.append(hcm_pb2.HttpFilter(name=HTTP_EXT_AUTHZ_FILTER, typed_config=ext_authz))
    return out


def network_ext_authz_filters(
    policies: Sequence[AuthorizationPolicy],
    providers: Sequence[ExtAuthzProvider],
    rules: RuleBuilder,
) -> list[listener_components_pb2.Filter]:
    """The network filters of the CUSTOM ``policies`` for a TCP port (gRPC providers only)."""
    out: list[listener_components_pb2.Filter] = []
    for rbac, ext_authz in _build(policies, providers, rules, for_tcp=True):
        config = network_rbac_pb2.RBAC(stat_prefix="tcp.")
        if ext_authz is not None:
            config.shadow_rules.CopyFrom(rbac)
            config.shadow_rules_stat_prefix = SHADOW_STAT_PREFIX
        else:
            config.rules.CopyFrom(rbac)
        out.append(
            listener_components_pb2.Filter(name=NETWORK_RBAC_FILTER, typed_config=packed(config))
        )
        if ext_authz is not None:
            out.append(
                listener_components_pb2.Filter(
                    name=NETWORK_EXT_AUTHZ_FILTER, typed_config=ext_authz
                )
            )
    return out


def _build(
    policies: Sequence[AuthorizationPolicy],
    providers: Sequence[ExtAuthzProvider],
    rules: RuleBuilder,
    *,
    for_tcp: bool,
) -> list[tuple[rbac_pb2.RBAC, object | None]]:
    """Per provider: the RBAC rules and the packed ext_authz config (None: deny instead)."""
    by_name = {p.name: p for p in providers}
    grouped: dict[str, list[AuthorizationPolicy]] = {}
    for policy in policies:
        if is_dry_run(policy):
            continue
        name = policy.spec.provider.name if policy.spec.provider else ""
        grouped.setdefault(name, []).append(policy)
    several = len(grouped) > 1
    out: list[tuple[rbac_pb2.RBAC, object | None]] = []
    for name in sorted(grouped):
        prefix = f"{EXT_AUTHZ_PREFIX}-{name}-"
        rbac = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
        for policy in grouped[name]:
            for rule_name, built in rules(policy, for_tcp):
                rbac.policies[prefix + rule_name].CopyFrom(built)
        provider = by_name.get(name)
        if several or provider is None or provider.error is not None or provider.config is None:
            denied = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
            for rule_name, built in rbac.policies.items():
                denied.policies[rule_name + BAD_CUSTOM_SUFFIX].CopyFrom(built)
            out.append((denied, None))
            continue
        if for_tcp:
            if not isinstance(provider.config, EnvoyExtAuthzGrpc):
                continue  # an HTTP provider does not check TCP: istiod leaves it out
            out.append((rbac, packed(_tcp_ext_authz(provider, provider.config))))
        else:
            out.append((rbac, packed(_http_ext_authz(provider))))
    return out


def _enabled_when(rbac_filter: str, provider: str) -> metadata_pb2.MetadataMatcher:
    """Only requests whose shadow RBAC matched a rule of ``provider``."""
    return metadata_pb2.MetadataMatcher(
        filter=rbac_filter,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=SHADOW_EFFECTIVE_POLICY_ID)],
        value=value_pb2.ValueMatcher(
            string_match=string_pb2.StringMatcher(prefix=f"{EXT_AUTHZ_PREFIX}-{provider}")
        ),
    )


def _timeout(config: EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc) -> float:
    return config.timeout if config.timeout is not None else DEFAULT_TIMEOUT_SECONDS


def _status(config: EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc) -> http_status_pb2.HttpStatus | None:
    if not config.status_on_error:
        return None
    return http_status_pb2.HttpStatus(code=int(config.status_on_error))


def _body(body: ExtAuthzBody | None) -> http_ext_authz_pb2.BufferSettings | None:
    if body is None:
        return None
    return http_ext_authz_pb2.BufferSettings(
        max_request_bytes=body.max_request_bytes,
        allow_partial_message=body.allow_partial_message,
        pack_as_bytes=body.pack_as_bytes,
    )


def _headers(names: Sequence[str]) -> string_pb2.ListStringMatcher | None:
    """istiod's ``generateHeaders``: ``*x`` a suffix, ``x*`` a prefix, else exact; any case."""
    if not names:
        return None
    patterns = []
    for name in names:
        if name.startswith("*"):
            patterns.append(string_pb2.StringMatcher(suffix=name[1:], ignore_case=True))
        elif name.endswith("*"):
            patterns.append(string_pb2.StringMatcher(prefix=name[:-1], ignore_case=True))
        else:
            patterns.append(string_pb2.StringMatcher(exact=name, ignore_case=True))
    return string_pb2.ListStringMatcher(patterns=patterns)


def _grpc_service(
    provider: ExtAuthzProvider, config: EnvoyExtAuthzGrpc
) -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
            cluster_name=provider.cluster, authority=provider.hostname
        ),
        timeout=duration(_timeout(config)),
    )


def _http_ext_authz(provider: ExtAuthzProvider) -> http_ext_authz_pb2.ExtAuthz:
    config = provider.config
    assert config is not None
    ext_authz = http_ext_authz_pb2.ExtAuthz(
        failure_mode_allow=config.fail_open,
        transport_api_version=config_source_pb2.V3,
        filter_enabled_metadata=_enabled_when(HTTP_RBAC_FILTER, provider.name),
    )
    status = _status(config)
    if status is not None:
        ext_authz.status_on_error.CopyFrom(status)
    body = _body(config.include_request_body_in_check)
    if body is not None:
        ext_authz.with_request_body.CopyFrom(body)
    if isinstance(config, EnvoyExtAuthzGrpc):
        ext_authz.grpc_service.CopyFrom(_grpc_service(provider, config))
        return ext_authz
    service = ext_authz.http_service
    service.path_prefix = config.path_prefix
    service.server_uri.CopyFrom(
        http_uri_pb2.HttpUri(
            uri=f"http://{provider.hostname}",
            cluster=provider.cluster,
            timeout=duration(_timeout(config)),
        )
    )
    allowed = _headers(config.include_request_headers_in_check) or _headers(
        config.include_headers_in_check
    )
    if allowed is not None:
        ext_authz.allowed_headers.CopyFrom(allowed)
    for name in sorted(config.include_additional_headers_in_check):
        service.authorization_request.headers_to_add.append(
            base_pb2.HeaderValue(key=name, value=config.include_additional_headers_in_check[name])
        )
    if (
        config.headers_to_upstream_on_allow
        or config.headers_to_downstream_on_deny
        or config.headers_to_downstream_on_allow
    ):
        response = service.authorization_response
        for field, names in (
            ("allowed_upstream_headers", config.headers_to_upstream_on_allow),
            ("allowed_client_headers", config.headers_to_downstream_on_deny),
            ("allowed_client_headers_on_success", config.headers_to_downstream_on_allow),
        ):
            matcher = _headers(names)
            if matcher is not None:
                getattr(response, field).CopyFrom(matcher)
    return ext_authz


def _tcp_ext_authz(
    provider: ExtAuthzProvider, config: EnvoyExtAuthzGrpc
) -> tcp_ext_authz_pb2.ExtAuthz:
    return tcp_ext_authz_pb2.ExtAuthz(
        stat_prefix="tcp.",
        failure_mode_allow=config.fail_open,
        transport_api_version=config_source_pb2.V3,
        grpc_service=_grpc_service(provider, config),
        filter_enabled_metadata=_enabled_when(NETWORK_RBAC_FILTER, provider.name),
    )
