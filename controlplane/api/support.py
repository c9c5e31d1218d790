"""Which fields of each Istio kind the compiler implements.

A field that is set in a resource but not listed here is reported as "not supported yet"
(a warning): accepted, kept, and visible in logs, `analyze` and status, never silently
dropped. A path ending in ``.**`` covers the whole subtree below it. Map keys (e.g. header
names) appear as ``*`` in paths.
"""

from __future__ import annotations

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
}


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
