"""Findings about resources: one vocabulary for logs, `analyze`, admission and status.

Every finding names the resource, the field path (as the user wrote it, camelCase with
indexes, e.g. ``spec.http[0].route[1].weight``) and the reason. Codes are stable: tools and
users may match on them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Level(enum.StrEnum):
    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"


@dataclass(frozen=True)
class Code:
    """A stable message code with its default level and a short title."""

    id: str
    level: Level
    title: str


class Codes:
    """The catalogue of codes. Never renumber; add new ones at the end of a group."""

    # 01xx: a document or resource that cannot be read at all
    YAML_ERROR = Code("CP0101", Level.ERROR, "InvalidYAML")
    SCHEMA_ERROR = Code("CP0102", Level.ERROR, "SchemaValidationError")
    UNKNOWN_KIND = Code("CP0103", Level.INFO, "UnknownKind")
    UNKNOWN_FIELD = Code("CP0104", Level.ERROR, "UnknownField")
    TOO_LARGE = Code("CP0105", Level.ERROR, "ResourceTooLarge")
    # A refused resource served from the last version accepted (before a restart)
    LAST_GOOD_SERVED = Code("CP0110", Level.WARNING, "LastGoodVersionServed")
    # 02xx: a resource that reads but breaks a validation rule on its own
    INVALID_FIELD = Code("CP0201", Level.ERROR, "InvalidField")
    UNSUPPORTED_FIELD = Code("CP0202", Level.WARNING, "UnsupportedField")
    POLICY_FAILS_CLOSED = Code("CP0203", Level.ERROR, "BrokenPolicyFailsClosed")
    # 03xx: a resource that is valid alone but broken in the context of the mesh
    SUBSET_NOT_FOUND = Code("CP0301", Level.ERROR, "ReferencedSubsetNotFound")
    HOST_NOT_FOUND = Code("CP0302", Level.WARNING, "ReferencedHostNotFound")
    CONFLICTING_VIRTUAL_SERVICES = Code("CP0303", Level.ERROR, "ConflictingVirtualServiceHosts")
    DESTINATION_RULE_NO_PODS = Code("CP0304", Level.WARNING, "DestinationRuleSubsetWithoutPods")
    PORT_NOT_FOUND = Code("CP0305", Level.ERROR, "ReferencedPortNotFound")
    INEFFECTIVE_MATCH = Code("CP0306", Level.WARNING, "VirtualServiceIneffectiveMatch")
    # Valid alone and in context, but the compiler failed on it: refused (its last good
    # version keeps serving), never allowed to stop other resources or proxies updating.
    COMPILE_FAILED = Code("CP0307", Level.ERROR, "CompileFailed")
    # 0400-0419, part authz (issue 12): AuthorizationPolicy findings
    AUTHZ_SELECTS_NOTHING = Code("CP0400", Level.WARNING, "NoMatchingWorkloadsFound")
    AUTHZ_DRY_RUN = Code("CP0401", Level.INFO, "AuthorizationPolicyDryRun")
    # 044x: part "jwt" (RequestAuthentication, JWKS, request principals)
    # requestPrincipals / request.auth.* on workloads no RequestAuthentication applies to:
    # no token is ever verified there, so the condition never holds.
    JWT_CONDITION_WITHOUT_REQUEST_AUTHENTICATION = Code(
        "CP0440", Level.WARNING, "RequestPrincipalWithoutRequestAuthentication"
    )
    # A jwksUri that fails now: the key set fetched before stays in effect.
    JWKS_REFRESH_FAILING = Code("CP0441", Level.WARNING, "JwksRefreshFailing")
    # A jwksUri never fetched: tokens of its issuer are refused (fail closed).
    JWKS_NEVER_FETCHED = Code("CP0442", Level.WARNING, "JwksNeverFetched")
    # 0420-0439, part "meshcfg": the mesh config and external authorization (CUSTOM).
    # An extension provider istiod would refuse when a CUSTOM policy uses it (a warning on
    # the mesh config, as istiod logs it; the policies that use it fail closed).
    INVALID_EXTENSION_PROVIDER = Code("CP0420", Level.WARNING, "InvalidExtensionProvider")
    # A CUSTOM policy naming a provider the mesh config does not define (or one that is
    # invalid or not an ext_authz provider): what its rules match is denied.
    UNKNOWN_EXTENSION_PROVIDER = Code("CP0421", Level.ERROR, "UnknownExtensionProvider")
    # CUSTOM policies naming different providers for one workload: istiod allows one
    # provider per workload (unless PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS) and denies
    # what all of them match.
    MULTIPLE_EXTENSION_PROVIDERS = Code("CP0422", Level.ERROR, "MultipleExtensionProviders")
    # 054x, part "serviceentry": ServiceEntry and WorkloadEntry in the registry
    # A ServiceEntry host that is also a Kubernetes Service's: the Service defines it.
    SERVICE_ENTRY_HOST_COLLIDES = Code(
        "CP0540", Level.WARNING, "ServiceEntryHostCollidesWithService"
    )
    # A host an older ServiceEntry already defines (istioctl IST0177 when protocols differ).
    CONFLICTING_SERVICE_ENTRIES = Code("CP0541", Level.WARNING, "ConflictingServiceEntries")
    # istioctl IST0134: a TCP (or unset protocol) port with no addresses.
    SERVICE_ENTRY_ADDRESSES_REQUIRED = Code(
        "CP0542", Level.WARNING, "ServiceEntryAddressesRequired"
    )
    # 0500-0519: part "gateway" (issue 13): Gateways and the VirtualServices bound to them
    # (istioctl's IST0101 ReferencedResourceNotFound, IST0132, IST0145 ConflictingGateways).
    GATEWAY_NOT_FOUND = Code("CP0501", Level.ERROR, "ReferencedGatewayNotFound")
    HOST_NOT_IN_GATEWAY = Code("CP0502", Level.WARNING, "VirtualServiceHostNotFoundInGateway")
    CONFLICTING_GATEWAYS = Code("CP0503", Level.ERROR, "ConflictingGateways")
    GATEWAY_SELECTS_NO_POD = Code("CP0504", Level.WARNING, "GatewaySelectorMatchesNoPod")
    GATEWAY_PORT_NOT_ON_SERVICE = Code("CP0505", Level.WARNING, "GatewayPortNotDefinedOnService")
    # gateway-tls (CP0520-0539): a Gateway server's TLS credentials (credentialName Secrets).
    # Found in context but never blocking: the Gateway applies, that server's TLS waits for
    # its Secret (as in istiod, where the listener waits for the SDS secret).
    GATEWAY_CREDENTIAL_NOT_FOUND = Code("CP0520", Level.ERROR, "GatewayCredentialNotFound")
    GATEWAY_CREDENTIAL_INVALID = Code("CP0521", Level.ERROR, "InvalidGatewayCredential")
    # Part "sidecar/unsupported" (CP0560-0579): the Sidecar kind, and Istio kinds this
    # control plane does not implement (api/unsupported.py).
    UNSUPPORTED_KIND = Code("CP0560", Level.WARNING, "UnsupportedKind")
    SIDECAR_HIDES_ROUTED_HOST = Code("CP0561", Level.WARNING, "SidecarHidesVirtualServiceHost")
    CONFLICTING_SIDECAR_SELECTORS = Code(
        "CP0562", Level.ERROR, "ConflictingSidecarWorkloadSelectors"
    )
    MULTIPLE_SIDECARS_WITHOUT_SELECTOR = Code(
        "CP0563", Level.ERROR, "MultipleSidecarsWithoutWorkloadSelectors"
    )
    # Part "gwapi" (CP0600-0619): the Kubernetes Gateway API, as its status says it
    # (store/gatewayapi.py); the title follows the condition, the reason is the spec's.
    GWAPI_LISTENER_NOT_ACCEPTED = Code("CP0600", Level.ERROR, "GatewayListenerNotAccepted")
    GWAPI_LISTENER_CONFLICTED = Code("CP0601", Level.ERROR, "GatewayListenerConflicted")
    GWAPI_LISTENER_REFS_NOT_RESOLVED = Code("CP0602", Level.ERROR, "GatewayListenerRefsNotResolved")
    GWAPI_ROUTE_NOT_ACCEPTED = Code("CP0603", Level.ERROR, "RouteNotAccepted")
    GWAPI_ROUTE_REFS_NOT_RESOLVED = Code("CP0604", Level.ERROR, "RouteRefsNotResolved")

    # part "ops" (issue 17): certificate guardrails, CP0730-0739.
    ROOT_CERT_EXPIRES_SOON = Code("CP0730", Level.WARNING, "RootCertificateExpiresSoon")
    ROOT_CERT_EXPIRES_VERY_SOON = Code("CP0731", Level.ERROR, "RootCertificateExpiresVerySoon")

    # part "telemetry" (issue 15): the Telemetry API, CP0800-0819 (store/telemetry_checks.py).
    # A provider name the mesh config does not define (istiod skips it).
    TELEMETRY_PROVIDER_NOT_FOUND = Code("CP0800", Level.WARNING, "TelemetryProviderNotFound")
    # A provider of a kind this control plane does not implement, or of a kind the section
    # cannot use (a zipkin provider for access logs): no effect.
    UNSUPPORTED_TELEMETRY_PROVIDER = Code("CP0801", Level.WARNING, "UnsupportedTelemetryProvider")
    # A tracing provider whose service is not in the registry: istiod configures no tracing.
    TRACING_PROVIDER_SERVICE_NOT_FOUND = Code(
        "CP0802", Level.WARNING, "TracingProviderServiceNotFound"
    )
    # istioctl IST0159 / IST0160: several Telemetries compete for the same workloads.
    CONFLICTING_TELEMETRY_SELECTORS = Code(
        "CP0803", Level.ERROR, "ConflictingTelemetryWorkloadSelectors"
    )
    MULTIPLE_TELEMETRIES_WITHOUT_SELECTOR = Code(
        "CP0804", Level.ERROR, "MultipleTelemetriesWithoutWorkloadSelectors"
    )
    # istioctl IST0157: an access logging entry without providers and no default provider.
    INVALID_TELEMETRY_PROVIDER = Code("CP0805", Level.WARNING, "InvalidTelemetryProvider")


@dataclass(frozen=True)
class ResourceKey:
    """Identifies one resource: its kind, namespace (empty for cluster-scoped) and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Issue:
    """One finding: what is wrong, where, and how bad."""

    code: Code
    path: str
    reason: str
    resource: ResourceKey | None = None
    origin: str | None = None  # "file:line" where the resource came from, when known
    level: Level | None = None  # overrides the code's default level

    @property
    def severity(self) -> Level:
        return self.level or self.code.level

    @property
    def field_message(self) -> str:
        """``path: reason`` as the admission webhook and status conditions show it."""
        return f"{self.path}: {self.reason}" if self.path else self.reason

    def __str__(self) -> str:
        parts = []
        if self.origin:
            parts.append(self.origin)
        if self.resource:
            parts.append(str(self.resource))
        parts.append(self.field_message)
        return f"{self.severity} [{self.code.id} {self.code.title}] " + ": ".join(parts)

    def with_context(self, resource: ResourceKey | None, origin: str | None) -> Issue:
        return Issue(
            self.code,
            self.path,
            self.reason,
            resource or self.resource,
            origin or self.origin,
            self.level,
        )


def errors(issues: list[Issue] | tuple[Issue, ...]) -> list[Issue]:
    return [i for i in issues if i.severity is Level.ERROR]


class InvalidResource(Exception):
    """A resource that cannot be accepted; carries every error found."""

    def __init__(self, resource: ResourceKey | None, issues: list[Issue]) -> None:
        self.resource = resource
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))
