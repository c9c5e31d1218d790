"""Which fields of each Istio kind the compiler implements.

A field that is set in a resource but not listed here is reported as "not supported yet"
(a warning): accepted, kept, and visible in logs, `analyze` and status, never silently
dropped. A path ending in ``.**`` covers the whole subtree below it. Map keys (e.g. header
names) appear as ``*`` in paths.
"""

from __future__ import annotations

# Paths relative to a traffic policy (top level, subset, and their port-level entries).
_POLICY_FIELDS = (
    "loadBalancer",
    "loadBalancer.simple",
    "loadBalancer.consistentHash",
    "loadBalancer.consistentHash.httpHeaderName",
    "loadBalancer.consistentHash.httpCookie.**",
    "loadBalancer.consistentHash.useSourceIp",
    "loadBalancer.consistentHash.httpQueryParameterName",
    "loadBalancer.consistentHash.ringHash.**",
    "loadBalancer.consistentHash.maglev.**",
    "loadBalancer.consistentHash.minimumRingSize",
    "loadBalancer.localityLbSetting.**",
    "loadBalancer.warmupDurationSecs",
    "connectionPool",
    "connectionPool.tcp",
    "connectionPool.tcp.maxConnections",
    "connectionPool.tcp.connectTimeout",
    "connectionPool.tcp.tcpKeepalive.**",
    "connectionPool.tcp.maxConnectionDuration",
    "connectionPool.tcp.idleTimeout",
    "connectionPool.http",
    "connectionPool.http.http1MaxPendingRequests",
    "connectionPool.http.http2MaxRequests",
    "connectionPool.http.maxRetries",
    "connectionPool.http.maxRequestsPerConnection",
    "connectionPool.http.idleTimeout",
    "connectionPool.http.h2UpgradePolicy",
    "outlierDetection",
    "outlierDetection.consecutive5xxErrors",
    "outlierDetection.consecutiveGatewayErrors",
    "outlierDetection.interval",
    "outlierDetection.baseEjectionTime",
    "outlierDetection.maxEjectionPercent",
    "outlierDetection.minHealthPercent",
    "outlierDetection.splitExternalLocalOriginErrors",
    "outlierDetection.consecutiveLocalOriginFailures",
)
_POLICY_ROOTS = (
    "spec.trafficPolicy",
    "spec.trafficPolicy.portLevelSettings",
    "spec.subsets.trafficPolicy",
    "spec.subsets.trafficPolicy.portLevelSettings",
)


def _policy_paths() -> frozenset[str]:
    paths = set(_POLICY_ROOTS)
    for root in _POLICY_ROOTS:
        paths.update(f"{root}.{field}" for field in _POLICY_FIELDS)
        if root.endswith("portLevelSettings"):
            paths.add(f"{root}.port.**")
    return frozenset(paths)


# HTTP route fields beyond the first slice (compile/http_routes.py, compile/route_policies.py).
_HTTP_ROUTE_FIELDS = frozenset(
    {
        "spec.http.match.method.**",
        "spec.http.match.authority.**",
        "spec.http.match.scheme.**",
        "spec.http.match.queryParams.**",
        "spec.http.match.ignoreUriCase",
        "spec.http.match.port",
        "spec.http.match.sourceLabels.**",
        "spec.http.match.sourceNamespace",
        "spec.http.match.gateways",
        "spec.http.route.headers.**",
        "spec.http.headers.**",
        "spec.http.retries.retryRemoteLocalities",
        "spec.http.retries.backoff",
        "spec.http.fault",
        "spec.http.fault.delay",
        "spec.http.fault.delay.fixedDelay",
        "spec.http.fault.delay.percentage.**",
        "spec.http.fault.delay.percent",
        "spec.http.fault.abort",
        "spec.http.fault.abort.httpStatus",
        "spec.http.fault.abort.grpcStatus",
        "spec.http.fault.abort.percentage.**",
        "spec.http.rewrite",
        "spec.http.rewrite.uri",
        "spec.http.rewrite.authority",
        "spec.http.rewrite.uriRegexRewrite.**",
        "spec.http.redirect",
        "spec.http.redirect.uri",
        "spec.http.redirect.authority",
        "spec.http.redirect.scheme",
        "spec.http.redirect.port",
        "spec.http.redirect.derivePort",
        "spec.http.redirect.redirectCode",
        "spec.http.directResponse",
        "spec.http.directResponse.status",
        "spec.http.directResponse.body",
        "spec.http.directResponse.body.string",
        "spec.http.mirror.**",
        "spec.http.mirrorPercentage.**",
        "spec.http.mirrorPercent",
        "spec.http.mirrors",
        "spec.http.mirrors.destination.**",
        "spec.http.mirrors.percentage.**",
        "spec.http.corsPolicy.**",
    }
)

SUPPORTED: dict[str, frozenset[str]] = {
    "VirtualService": frozenset(
        {
            "spec.hosts",
            "spec.gateways",
            # tcp and tls routes (compile/tcp.py)
            "spec.tcp",
            "spec.tcp.match",
            "spec.tcp.match.port",
            "spec.tcp.match.destinationSubnets",
            "spec.tcp.match.sourceLabels.**",
            "spec.tcp.match.sourceNamespace",
            "spec.tcp.match.gateways",
            "spec.tcp.route",
            "spec.tcp.route.destination.**",
            "spec.tcp.route.weight",
            "spec.tls",
            "spec.tls.match",
            "spec.tls.match.sniHosts",
            "spec.tls.match.port",
            "spec.tls.match.destinationSubnets",
            "spec.tls.match.sourceLabels.**",
            "spec.tls.match.sourceNamespace",
            "spec.tls.match.gateways",
            "spec.tls.route",
            "spec.tls.route.destination.**",
            "spec.tls.route.weight",
            "spec.exportTo",
            "spec.http",
            "spec.http.name",
            "spec.http.match",
            "spec.http.match.name",
            "spec.http.match.uri.**",
            "spec.http.match.headers.**",
            "spec.http.route",
            "spec.http.route.destination.**",
            "spec.http.route.weight",
            "spec.http.timeout",
            "spec.http.retries",
            "spec.http.retries.attempts",
            "spec.http.retries.perTryTimeout",
            "spec.http.retries.retryOn",
        }
    ),
    "DestinationRule": frozenset(
        {
            "spec.host",
            "spec.exportTo",
            "spec.subsets",
            "spec.subsets.name",
            "spec.subsets.labels.**",
            # trafficPolicy.tls (compile/tls.py); the rest of trafficPolicy is compile/clusters.py
            "spec.trafficPolicy",
            "spec.subsets.trafficPolicy",
            "spec.trafficPolicy.portLevelSettings",
            "spec.trafficPolicy.portLevelSettings.port.**",
            "spec.subsets.trafficPolicy.portLevelSettings",
            "spec.subsets.trafficPolicy.portLevelSettings.port.**",
            *(
                f"{where}.tls{field}"
                for where in (
                    "spec.trafficPolicy",
                    "spec.trafficPolicy.portLevelSettings",
                    "spec.subsets.trafficPolicy",
                    "spec.subsets.trafficPolicy.portLevelSettings",
                )
                for field in (
                    "",
                    ".mode",
                    ".clientCertificate",
                    ".privateKey",
                    ".caCertificates",
                    ".subjectAltNames",
                    ".sni",
                    ".insecureSkipVerify",
                )
            ),
        }
    ),
    # ServiceEntry and WorkloadEntry: store/service_entries.py, compile/clusters.py
    # (DNS and NONE clusters), compile/lds.py (TCP/TLS ports without an address).
    "ServiceEntry": frozenset(
        {
            "spec.hosts",
            "spec.addresses",
            "spec.ports.**",
            "spec.location",
            "spec.resolution",
            "spec.endpoints",
            "spec.endpoints.address",
            "spec.endpoints.ports.**",
            "spec.endpoints.labels.**",
            "spec.endpoints.locality",
            "spec.endpoints.weight",
            "spec.endpoints.serviceAccount",
            "spec.workloadSelector.**",
            "spec.exportTo",
            "spec.subjectAltNames",
        }
    ),
    "WorkloadEntry": frozenset(
        {
            "spec.address",
            "spec.ports.**",
            "spec.labels.**",
            "spec.locality",
            "spec.weight",
            "spec.serviceAccount",
        }
    ),
    # Gateway (part "gateway", compile/gateway.py). The servers' ``tls`` is the TLS part's
    # (it adds its fields here as it implements them); defaultEndpoint is for sidecars only.
    "Gateway": frozenset(
        {
            "spec.selector.**",
            "spec.servers",
            "spec.servers.port",
            "spec.servers.port.number",
            "spec.servers.port.protocol",
            "spec.servers.port.name",
            "spec.servers.bind",
            "spec.servers.hosts",
            "spec.servers.name",
            # part "gwtls" (compile/gateway_tls.py); AUTO_PASSTHROUGH is reported by
            # gateway_validation as not supported yet.
            "spec.servers.tls",
            "spec.servers.tls.httpsRedirect",
            "spec.servers.tls.mode",
            "spec.servers.tls.serverCertificate",
            "spec.servers.tls.privateKey",
            "spec.servers.tls.caCertificates",
            "spec.servers.tls.caCrl",
            "spec.servers.tls.credentialName",
            "spec.servers.tls.credentialNames",
            "spec.servers.tls.caCertCredentialName",
            "spec.servers.tls.tlsCertificates.**",
            "spec.servers.tls.subjectAltNames",
            "spec.servers.tls.verifyCertificateSpki",
            "spec.servers.tls.verifyCertificateHash",
            "spec.servers.tls.minProtocolVersion",
            "spec.servers.tls.maxProtocolVersion",
            "spec.servers.tls.cipherSuites",
            "spec.servers.tls.insecureSkipVerify",
        }
    ),
    # security.istio.io: compiled by compile/authn.py, compile/tls.py and compile/rbac.py.
    "PeerAuthentication": frozenset(
        {
            "spec.selector.**",
            "spec.mtls.**",
            "spec.portLevelMtls.**",
        }
    ),
    "AuthorizationPolicy": frozenset(
        {
            "spec.selector.**",
            "spec.action",
            "spec.rules",
            "spec.provider.**",  # CUSTOM: validated, denied (fail closed), reported
            "spec.rules.from.**",
            "spec.rules.to.**",
            "spec.rules.when.**",
        }
    ),
    # Every field but ``presence`` (istiod does not compile it either: a token stays
    # optional) and ``targetRef(s)`` (gateways and waypoints only: selects no sidecar).
    "RequestAuthentication": frozenset(
        {
            "spec.selector.**",
            "spec.jwtRules",
            *(
                f"spec.jwtRules.{name}"
                for name in (
                    "issuer",
                    "audiences",
                    "jwksUri",
                    "jwks_uri",
                    "jwks",
                    "fromHeaders.**",
                    "fromParams",
                    "fromCookies",
                    "outputPayloadToHeader",
                    "forwardOriginalToken",
                    "outputClaimToHeaders.**",
                    "spaceDelimitedClaims",
                    "timeout",
                )
            ),
        }
    ),
    # Part "sidecar": the scope of a proxy (store/sidecars.py) and its ingress listeners
    # (compile/inbound.py) with their connection pools. Not yet implemented: ingress tls and
    # captureMode, egress listeners' bind and captureMode (a listener of its own) and the
    # egress proxy; they are reported as unsupported.
    "Sidecar": frozenset(
        {
            "spec.workloadSelector.**",
            "spec.egress",
            "spec.egress.hosts",
            "spec.egress.port.**",
            "spec.outboundTrafficPolicy",
            "spec.outboundTrafficPolicy.mode",
            "spec.ingress",
            "spec.ingress.port.**",
            "spec.ingress.bind",
            "spec.ingress.defaultEndpoint",
            "spec.ingress.connectionPool.**",
            "spec.inboundConnectionPool.**",
        }
    ),
    # Part "telemetry" (compile/telemetry.py, telemetry_filters.py). Not implemented:
    # tracing.disableContextPropagation (no such switch in this Envoy's HCM tracing) and the
    # metrics overrides and reportingInterval (they configure Istio's stats filter, which
    # upstream Envoy does not have): listed here so that validation reports them with that
    # reason (api/telemetry.py) rather than the generic one.
    "Telemetry": frozenset(
        {
            "spec.selector.**",
            "spec.targetRef.**",
            "spec.targetRefs.**",
            "spec.accessLogging",
            "spec.accessLogging.match.**",
            "spec.accessLogging.providers.**",
            "spec.accessLogging.disabled",
            "spec.accessLogging.filter.**",
            "spec.tracing",
            "spec.tracing.match.**",
            "spec.tracing.providers.**",
            "spec.tracing.randomSamplingPercentage",
            "spec.tracing.disableSpanReporting",
            "spec.tracing.customTags.**",
            "spec.tracing.useRequestIdForTraceSampling",
            "spec.tracing.enableIstioTags",
            "spec.tracing.disableContextPropagation",
            "spec.metrics",
            "spec.metrics.providers.**",
            "spec.metrics.overrides.**",
            "spec.metrics.reportingInterval",
        }
    ),
}


# Merged in after the table so that the kinds' own entries stay as they were written.
SUPPORTED["VirtualService"] = SUPPORTED["VirtualService"] | _HTTP_ROUTE_FIELDS
SUPPORTED["DestinationRule"] = SUPPORTED["DestinationRule"] | _policy_paths()


def is_supported(kind: str, generic_path: str) -> bool:
    """True when the compiler implements the field at ``generic_path`` (no indexes)."""
    supported = SUPPORTED.get(kind)
    if supported is None:
        return True
    if generic_path in supported or generic_path + ".**" in supported:
        return True
    parts = generic_path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:end]) + ".**" in supported:
            return True
    return False
