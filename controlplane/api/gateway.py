"""networking.istio.io Gateway: the servers a gateway proxy (Envoy in router mode) exposes.

One schema serves v1, v1beta1 and v1alpha3, as in Istio. Every field Istio defines is
declared, TLS included, so that a resource is type-checked whole; which fields the compiler
implements is listed in ``controlplane.api.support``. Validation (istiod's rules) is in
``api/gateway_validation.py``; compilation in ``compile/gateway.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from controlplane.api.base import IstioModel, ObjectMeta, UInt32

ServerTLSMode = Literal[
    "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
]
TLSProtocolVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class GatewayPort(IstioModel):
    """A server's port: ``number``, ``protocol`` (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS)
    and a ``name`` unique within the Gateway."""

    number: UInt32 = 0
    protocol: str = ""
    name: str = ""
    target_port: UInt32 | None = None  # deprecated in Istio; rejected by validation


class TLSCertificate(IstioModel):
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


class ServerTLSSettings(IstioModel):
    https_redirect: bool | None = None
    mode: ServerTLSMode = "PASSTHROUGH"  # Istio's enum default (value 0)
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] = Field(default_factory=list)
    ca_cert_credential_name: str | None = None
    tls_certificates: list[TLSCertificate] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)
    verify_certificate_spki: list[str] = Field(default_factory=list)
    verify_certificate_hash: list[str] = Field(default_factory=list)
    min_protocol_version: TLSProtocolVersion | None = None
    max_protocol_version: TLSProtocolVersion | None = None
    cipher_suites: list[str] = Field(default_factory=list)
    insecure_skip_verify: bool | None = None


class Server(IstioModel):
    port: GatewayPort | None = None
    bind: str | None = None
    hosts: list[str] = Field(default_factory=list)
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None


class GatewaySpec(IstioModel):
    servers: list[Server] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)


class Gateway(IstioModel):
    api_version: str = "networking.istio.io/v1"
    kind: Literal["Gateway"] = "Gateway"
    metadata: ObjectMeta
    spec: GatewaySpec


# ---- protocols, as istiod parses a port's protocol (pkg/config/protocol) -------------------

HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
KNOWN_PROTOCOLS = HTTP_PROTOCOLS | TLS_PROTOCOLS | {"TCP", "MONGO", "REDIS", "MYSQL", "UDP"}


def server_protocol(port: GatewayPort) -> str:
    """The protocol as istiod reads it: case-insensitive; anything else is "UNSUPPORTED"."""
    found = port.protocol.upper()
    return found if found in KNOWN_PROTOCOLS else "UNSUPPORTED"


def is_http_server(server: Server) -> bool:
    """A server whose traffic the gateway handles as HTTP (plain HTTP, or HTTPS terminated)."""
    if server.port is None:
        return False
    protocol = server_protocol(server.port)
    if protocol in HTTP_PROTOCOLS:
        return True
    return protocol == "HTTPS" and not is_passthrough(server)


def is_tls_server(server: Server) -> bool:
    """A server with TLS settings on an HTTPS/TLS port (terminated or passed through)."""
    return (
        server.port is not None
        and server_protocol(server.port) in TLS_PROTOCOLS
        and server.tls is not None
    )


def is_passthrough(server: Server) -> bool:
    return server.tls is not None and server.tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")


MESH = "mesh"


def resolve_gateway_name(name: str, namespace: str) -> str:
    """A VirtualService's gateway reference as istiod resolves it: ``mesh`` stays; ``ns/gw``
    as written; ``./gw`` and a bare ``gw`` in the VirtualService's ``namespace``; the legacy
    ``gw.ns.svc.cluster.local`` (or ``gw.ns``) -> ``ns/gw``."""
    if name == MESH:
        return name
    ns, slash, short = name.partition("/")
    if slash:
        return f"{namespace}/{short}" if ns == "." else name
    if "." not in name:
        return f"{namespace}/{name}"
    short, _, rest = name.partition(".")
    return f"{rest.split('.', 1)[0]}/{short}"


# ---- server hosts ---------------------------------------------------------------------------


def sanitize_hosts(hosts: Iterable[str], namespace: str) -> tuple[str, ...]:
    """A server's hosts as istiod merges them (``sanitizeServerHostNamespace``): ``./host``
    -> ``<namespace>/host``; ``*/host`` -> ``host``; ``*/*`` -> ``*`` alone."""
    out: list[str] = []
    for host in hosts:
        ns, slash, name = host.partition("/")
        if not slash:
            out.append(host)
        elif ns == ".":
            out.append(f"{namespace}/{name}")
        elif ns == "*":
            if name == "*":
                return ("*",)
            out.append(name)
        else:
            out.append(host)
    return tuple(out)


def hosts_for_namespace(server_hosts: Iterable[str], namespace: str) -> list[str]:
    """The sanitized server hosts a VirtualService of ``namespace`` may use: ``ns/host``
    only when ``ns`` is its namespace; a host without namespace for everyone."""
    out: list[str] = []
    for host in server_hosts:
        ns, slash, name = host.partition("/")
        if slash:
            if ns != namespace:
                continue
            host = name
        out.append(host.lower())
    return out


def host_covers(pattern: str, host: str) -> bool:
    """``pattern`` (``*``, ``*.suffix`` or a name) matches ``host`` (itself possibly a
    wildcard: ``*.example.com`` covers ``*.a.example.com``)."""
    if pattern == host or pattern == "*":
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def intersect_hosts(server_hosts: Iterable[str], vs_hosts: Iterable[str]) -> list[str]:
    """The hosts both sides name, the more specific of each matching pair (istiod's
    ``Names.Intersection``): ``*.example.com`` and ``a.example.com`` share ``a.example.com``."""
    wanted = list(server_hosts)
    out: list[str] = []
    for vs_host in vs_hosts:
        for host in wanted:
            if host_covers(host, vs_host):
                picked = vs_host
            elif host_covers(vs_host, host):
                picked = host
            else:
                continue
            if picked not in out:
                out.append(picked)
    return out
