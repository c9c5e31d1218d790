"""RequestAuthentication -> Envoy's ``envoy.filters.http.jwt_authn``, as istiod builds it
(``pilot/pkg/security/authn/policy_applier.go``).

Which policies apply to a workload: those of its namespace and of the root namespace, each
when it has no selector or its selector matches the workload's labels; a policy attached by
``targetRef(s)`` applies to gateways and waypoints only, never to a sidecar. Their JWT rules
are merged and sorted by issuer; each becomes a provider ``origins-<i>``. The requirement is
istiod's: for one rule, "this provider, or no token at all"; for several, any one provider,
or every one of them allowing a missing token. So a request with an invalid token (bad
signature, expired, wrong issuer, wrong audience) gets 401 from Envoy, and a request without
one goes on to the AuthorizationPolicies (``requestPrincipals: ["*"]`` requires one).

The verified payload goes into the filter's dynamic metadata under ``payload``, where the
RBAC matchers of ``requestPrincipals`` and ``request.auth.*`` look for it
(``rbac_matchers.py``), as istiod's upstream-Envoy mode does.

Keys are always inline (``local_jwks``): proxies never reach the issuer. A ``jwksUri`` is
fetched by the control plane (``sources/jwks.py``), which puts the last good key set into the
store (``JwksKeySet``); until one was ever fetched, or when what is there is not a key set,
the provider gets a public key whose private half was discarded at its creation, so that
tokens of that issuer are refused (fail closed, istiod's ``PublicOnlyJwks`` behaviour) and the
rest of the sidecar's configuration is unaffected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import empty_pb2

from controlplane.api.request_authn import (
    JwksKeySet,
    JWTRule,
    RequestAuthentication,
    jwks_key,
    key_source,
    parse_jwks,
)
from controlplane.compile.filters import JWT_AUTHN_FILTER
from controlplane.compile.protos import packed
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import selects

# Where the verified payload goes in the filter's dynamic metadata (istiod's name).
PAYLOAD_METADATA_KEY = "payload"
# Claims whose space-separated strings are split into lists, always (as istiod).
DEFAULT_SPACE_DELIMITED_CLAIMS = ("permission", "scope")
# An RSA public key whose private key was discarded when it was made: no token verifies
# against it. Made for this project (not istiod's key).
PUBLIC_ONLY_JWKS = json.dumps(
    {
        "keys": [
            {
                "kty": "RSA",
                "kid": "controlplane-fail-closed",
                "e": "AQAB",
                "n": (
                    "r2m69lRg9LhOJBEIRQRiq5JMQvCRN8V4rucZH9fr4A5T_sY2rjJiqVxSTpsAGWHsR5wCUAGx_k2S"
                    "QQG_3CwaYvuqOOHC4SgIUWLsKmuQiU-nQrvbEKfeQumOgCUlzn4B2ozXi4SLAQGvbhLzss-cNhwK"
                    "yfrp-b-jB-7JUmMN_BRzo8FBPFatoo1wtRBNhESAdVDeqhN8BXVTknPR9WJ4rJK9HxOVHtoNZ5w7"
                    "HplYl2YRgyif2nAQeu7Mi3tZfLdC9jpOaxW4Lq42KUgw5FHpv0CZm8KSbnz9-03j9D8HTTMzWgAy"
                    "kj0R4LdBPg8n4qJM2FCCVR-2y1pp2cb2fjrwBw"
                ),
            }
        ]
    },
    separators=(",", ":"),
)


@dataclass(frozen=True)
class ResolvedRule:
    """One JWT rule with the key set its provider gets (inline, fetched, or fail-closed)."""

    rule: JWTRule = field(compare=False, hash=False)
    rule_json: str
    jwks: str
    fails_closed: bool  # no usable key set: tokens of this issuer are refused


@dataclass(frozen=True)
class WorkloadJwt:
    """The JWT rules that apply to one workload, sorted by issuer; equal values build equal
    filters (the memo key of everything that embeds the filter)."""

    rules: tuple[ResolvedRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(r.rule.issuer for r in self.rules)


def applies_to(
    ra: RequestAuthentication, namespace: str, labels: Mapping[str, str], root: str
) -> bool:
    """Whether ``ra`` applies to a sidecar workload with ``labels`` in ``namespace``."""
    if ra.metadata.namespace not in (namespace, root):
        return False
    spec = ra.spec
    if spec.selector is None and (spec.target_ref is not None or spec.target_refs):
        return False  # gateways and waypoints only
    if spec.selector is not None and spec.selector.match_labels:
        return selects(spec.selector.match_labels, labels)
    return True


def resolve_jwt(
    reads: SnapshotReader,
    policies: Iterable[RequestAuthentication],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str,
) -> WorkloadJwt:
    """The rules of every RequestAuthentication that applies, with their key sets (a
    fetched one read through ``reads``, so that a key change recompiles what used it)."""
    rules: list[JWTRule] = []
    for ra in sorted(policies, key=lambda p: (p.metadata.namespace, p.metadata.name)):
        if applies_to(ra, namespace, labels, root_namespace):
            rules.extend(ra.spec.jwt_rules)
    rules.sort(key=lambda r: r.issuer)  # stable, as istiod's SortBy
    out: list[ResolvedRule] = []
    for rule in rules:
        jwks, closed = _key_set(reads, rule)
        out.append(ResolvedRule(rule, rule.model_dump_json(by_alias=True), jwks, closed))
    return WorkloadJwt(tuple(out))


def _key_set(reads: SnapshotReader, rule: JWTRule) -> tuple[str, bool]:
    source = key_source(rule)
    text: str | None = rule.jwks
    if source is not None:
        fetched: JwksKeySet | None = reads.get(jwks_key(source))
        text = fetched.spec.jwks if fetched is not None else None
    if not text:
        return PUBLIC_ONLY_JWKS, True
    _, reason = parse_jwks(text)
    if reason is not None:
        return PUBLIC_ONLY_JWKS, True
    return text, False


# ---- the filter -------------------------------------------------------------------------------


def provider_name(index: int) -> str:
    return f"origins-{index}"


def jwt_provider(resolved: ResolvedRule) -> jwt_pb2.JwtProvider:
    rule = resolved.rule
    provider = jwt_pb2.JwtProvider(
        issuer=rule.issuer,
        audiences=list(rule.audiences),
        forward=rule.forward_original_token,
        forward_payload_header=rule.output_payload_to_header,
        payload_in_metadata=PAYLOAD_METADATA_KEY,
        from_params=list(rule.from_params),
        from_cookies=list(rule.from_cookies),
        local_jwks=base_pb2.DataSource(inline_string=resolved.jwks),
    )
    claims = sorted(set(rule.space_delimited_claims) | set(DEFAULT_SPACE_DELIMITED_CLAIMS))
    provider.normalize_payload_in_metadata.space_delimited_claims.extend(claims)
    for header in rule.from_headers:
        provider.from_headers.append(
            jwt_pb2.JwtHeader(name=header.name, value_prefix=header.prefix)
        )
    for out in rule.output_claim_to_headers:
        provider.claim_to_headers.append(
            jwt_pb2.JwtClaimToHeader(header_name=out.header, claim_name=out.claim)
        )
    return provider


def _provider_or_missing(name: str) -> jwt_pb2.JwtRequirement:
    return jwt_pb2.JwtRequirement(
        requires_any=jwt_pb2.JwtRequirementOrList(
            requirements=[
                jwt_pb2.JwtRequirement(provider_name=name),
                jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()),
            ]
        )
    )


def jwt_authentication(jwt: WorkloadJwt) -> jwt_pb2.JwtAuthentication:
    """The filter config (istiod's requirement shape, see the module docstring)."""
    config = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True)
    names = [provider_name(i) for i in range(len(jwt.rules))]
    for name, resolved in zip(names, jwt.rules, strict=True):
        config.providers[name].CopyFrom(jwt_provider(resolved))
    if len(names) == 1:
        requires = _provider_or_missing(names[0])
    else:
        alternatives = [jwt_pb2.JwtRequirement(provider_name=n) for n in names]
        alternatives.append(
            jwt_pb2.JwtRequirement(
                requires_all=jwt_pb2.JwtRequirementAndList(
                    requirements=[_provider_or_missing(n) for n in names]
                )
            )
        )
        requires = jwt_pb2.JwtRequirement(
            requires_any=jwt_pb2.JwtRequirementOrList(requirements=alternatives)
        )
    config.rules.append(jwt_pb2.RequirementRule(match=rc.RouteMatch(prefix="/"), requires=requires))
    return config


def jwt_filters(jwt: WorkloadJwt | None) -> list[hcm_pb2.HttpFilter]:
    """The jwt_authn filter of an inbound HTTP chain (before RBAC), or none."""
    if not jwt:
        return []
    return [hcm_pb2.HttpFilter(name=JWT_AUTHN_FILTER, typed_config=packed(jwt_authentication(jwt)))]
