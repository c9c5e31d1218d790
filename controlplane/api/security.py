"""security.istio.io models: PeerAuthentication and AuthorizationPolicy.

One schema serves v1 and v1beta1, as in Istio. Every field Istio defines is declared so that
types are checked; which of them the compiler implements is listed in
``controlplane.api.support``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.api.base import IstioModel, ObjectMeta
from controlplane.api.networking import WorkloadSelector

# ---- PeerAuthentication -------------------------------------------------------------------

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class MutualTLS(IstioModel):
    mode: MtlsMode = "UNSET"


class PeerAuthenticationSpec(IstioModel):
    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    # Keys are port numbers; YAML gives them as ints or strings, both are accepted.
    port_level_mtls: dict[int, MutualTLS] = Field(default_factory=dict)


class PeerAuthentication(IstioModel):
    api_version: str = "security.istio.io/v1"
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    metadata: ObjectMeta
    spec: PeerAuthenticationSpec


# ---- AuthorizationPolicy ------------------------------------------------------------------


class Source(IstioModel):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    request_principals: list[str] = Field(default_factory=list)
    not_request_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    service_accounts: list[str] = Field(default_factory=list)
    not_service_accounts: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)
    trust_domains: list[str] = Field(default_factory=list)
    not_trust_domains: list[str] = Field(default_factory=list)


class Operation(IstioModel):
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)


class RuleFrom(IstioModel):
    source: Source | None = None


class RuleTo(IstioModel):
    operation: Operation | None = None


class Condition(IstioModel):
    key: str = ""
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)


class Rule(IstioModel):
    from_: list[RuleFrom] = Field(default_factory=list, alias="from")
    to: list[RuleTo] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class ExtensionProvider(IstioModel):
    name: str = ""


class PolicyTargetReference(IstioModel):
    group: str | None = None
    kind: str = ""
    name: str = ""
    namespace: str | None = None


AuthorizationAction = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]


class AuthorizationPolicySpec(IstioModel):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    rules: list[Rule] | None = None  # None (no rules) differs from [{}] (one empty rule)
    action: AuthorizationAction = "ALLOW"
    provider: ExtensionProvider | None = None


class AuthorizationPolicy(IstioModel):
    api_version: str = "security.istio.io/v1"
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    metadata: ObjectMeta
    spec: AuthorizationPolicySpec
