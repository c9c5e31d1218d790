"""TLS on a gateway server: what a Gateway's ``servers[].tls`` becomes on the listener's filter
chain (``gateway.py`` builds the chains and calls these), as istiod builds it
(pilot/pkg/networking/core/listener.go ``BuildListenerTLSContext``,
pilot/pkg/security/model/authentication.go ``ApplyCredentialSDSToServerCommonTLSContext``,
pilot/pkg/model/gateway.go ``gatewayRDSRouteName`` and ``GetSNIHostsForServer``).

- SIMPLE / MUTUAL / OPTIONAL_MUTUAL with ``credentialName`` (or ``credentialNames``): the
  certificate is the SDS secret ``kubernetes://<name>``; client certificates (MUTUAL) are
  checked against ``kubernetes://<name>-cacert`` (or ``caCertCredentialName``), with
  ``subjectAltNames``, ``verifyCertificateSpki``/``Hash`` on top. The control plane serves
  those secrets from Kubernetes Secrets (``cache/credentials.py``).
- SIMPLE / MUTUAL with file paths (``serverCertificate``, ``privateKey``,
  ``caCertificates``): Envoy reads the files itself (istiod hands them to its agent).
- ISTIO_MUTUAL: the gateway's own workload certificate (``default``) and the mesh roots
  (``ROOTCA``), a client certificate required: a gateway inside the mesh.
- PASSTHROUGH: no TLS context; the chain matches SNI and forwards the bytes.
  AUTO_PASSTHROUGH is not implemented (reported by ``api/support.py``).

Certificates never appear in the configuration, only names and paths.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from controlplane.api.credentials import (
    SDS_KUBERNETES_GATEWAY_PREFIX,
    SDS_KUBERNETES_PREFIX,
    ca_credential_name,
    credential_names,
)
from controlplane.api.gateway import (
    Server,
    ServerTLSSettings,
    is_passthrough,
    resolve_gateway_name,
    server_protocol,
)
from controlplane.api.networking import TLSMatchAttributes, VirtualService
from controlplane.compile.network import TLS_TRANSPORT, tcp_proxy
from controlplane.compile.tcp import weighted_destinations
from controlplane.compile.tls import (
    ALPN_IN_MESH,
    mesh_common_tls_context,
    sds_secret,
    transport_socket,
)
from controlplane.store.reads import SnapshotReader

ALPN_HTTP = ("h2", "http/1.1")
# A TCP server terminating ISTIO_MUTUAL also speaks Istio's metadata exchange.
ALPN_TCP_ISTIO_MUTUAL = ("istio-peer-exchange", "h2", "http/1.1")

_TLS_VERSIONS = {
    "TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO,
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}
_TERMINATING = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"})


def credential_resource_name(name: str) -> str:
    """The SDS name for a credential name as istiod writes it (``ToResourceName``): names
    that already carry a ``kubernetes://`` or ``kubernetes-gateway://`` scheme are kept."""
    if name.startswith((SDS_KUBERNETES_PREFIX, SDS_KUBERNETES_GATEWAY_PREFIX)):
        return name
    return SDS_KUBERNETES_PREFIX + name


def terminates_tls(server: Server) -> bool:
    """A server whose TLS the gateway terminates (not passthrough, not plaintext)."""
    return server.tls is not None and server.tls.mode in _TERMINATING


def sni_hosts(server: Server) -> list[str]:
    """The SNI names a TLS server's filter chain matches: its hosts without namespace
    qualifiers, deduplicated and sorted; none when a host is ``*`` (matches every name)."""
    if server.tls is None:
        return []
    hosts = sorted({h.split("/", 1)[1] if "/" in h else h for h in server.hosts})
    return [] if "*" in hosts else hosts


def is_https_terminated(server: Server) -> bool:
    """An HTTPS server the gateway terminates: its HTTP goes through its own route config."""
    return (
        server.port is not None
        and server.tls is not None
        and server_protocol(server.port) == "HTTPS"
        and not is_passthrough(server)
    )


def downstream_tls_context(server: Server) -> tls_pb2.DownstreamTlsContext | None:
    """The TLS context of a server's filter chain; None for passthrough or no TLS."""
    settings = server.tls
    if settings is None or settings.mode not in _TERMINATING or server.port is None:
        return None
    mutual = settings.mode in ("MUTUAL", "ISTIO_MUTUAL")
    tcp_server = server_protocol(server.port) not in ("HTTPS", "HTTP", "HTTP2", "GRPC")
    if settings.mode == "ISTIO_MUTUAL":
        alpn = ALPN_TCP_ISTIO_MUTUAL if tcp_server else ALPN_HTTP
        common = mesh_common_tls_context(alpn, settings.subject_alt_names)
    elif credential_names(settings):
        common = _credential_context(settings)
    else:
        common = _file_context(settings)
    if settings.mode != "ISTIO_MUTUAL":
        _apply_server_tls_settings(settings, common)
        common.alpn_protocols[:] = list(ALPN_HTTP)
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=common,
        require_client_certificate=wrappers_pb2.BoolValue(value=mutual),
    )


def _exact(values: list[str]) -> list[string_pb2.StringMatcher]:
    return [string_pb2.StringMatcher(exact=v) for v in values]


def _client_validation(settings: ServerTLSSettings) -> common_pb2.CertificateValidationContext:
    context = common_pb2.CertificateValidationContext(
        match_subject_alt_names=_exact(settings.subject_alt_names),
        verify_certificate_spki=list(settings.verify_certificate_spki),
        verify_certificate_hash=list(settings.verify_certificate_hash),
    )
    if settings.insecure_skip_verify:
        context.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    return context


def _credential_context(settings: ServerTLSSettings) -> tls_pb2.CommonTlsContext:
    common = tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[
            sds_secret(credential_resource_name(n)) for n in credential_names(settings)
        ]
    )
    ca = ca_credential_name(settings)
    if settings.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and ca:
        common.combined_validation_context.CopyFrom(
            tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=_client_validation(settings),
                validation_context_sds_secret_config=sds_secret(credential_resource_name(ca)),
            )
        )
    elif settings.subject_alt_names:
        common.validation_context.CopyFrom(
            common_pb2.CertificateValidationContext(
                match_subject_alt_names=_exact(settings.subject_alt_names)
            )
        )
    return common


def _file_context(settings: ServerTLSSettings) -> tls_pb2.CommonTlsContext:
    common = tls_pb2.CommonTlsContext()
    pairs = [(c.server_certificate, c.private_key) for c in settings.tls_certificates] or [
        (settings.server_certificate, settings.private_key)
    ]
    for cert, key in pairs:
        if cert and key:
            common.tls_certificates.append(
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(filename=cert),
                    private_key=base_pb2.DataSource(filename=key),
                )
            )
    if settings.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and settings.ca_certificates:
        validation = _client_validation(settings)
        validation.trusted_ca.CopyFrom(base_pb2.DataSource(filename=settings.ca_certificates))
        if settings.ca_crl:
            validation.crl.CopyFrom(base_pb2.DataSource(filename=settings.ca_crl))
        common.validation_context.CopyFrom(validation)
    return common


def _apply_server_tls_settings(
    settings: ServerTLSSettings, common: tls_pb2.CommonTlsContext
) -> None:
    params = common.tls_params
    if settings.min_protocol_version and settings.min_protocol_version != "TLS_AUTO":
        params.tls_minimum_protocol_version = _TLS_VERSIONS[settings.min_protocol_version]
    if settings.max_protocol_version and settings.max_protocol_version != "TLS_AUTO":
        params.tls_maximum_protocol_version = _TLS_VERSIONS[settings.max_protocol_version]
    if settings.cipher_suites:
        params.cipher_suites[:] = list(settings.cipher_suites)


# ---- filter chains ----------------------------------------------------------------------


def secure_chain(chain: lc.FilterChain, server: Server) -> lc.FilterChain:
    """``chain`` (the server's HTTP connection manager, or a TCP proxy) behind TLS
    termination: matched on TLS and the server's SNI names, with its DownstreamTlsContext."""
    context = downstream_tls_context(server)
    out = lc.FilterChain()
    out.CopyFrom(chain)
    out.filter_chain_match.transport_protocol = TLS_TRANSPORT
    out.filter_chain_match.server_names[:] = sni_hosts(server)
    if context is not None:
        out.transport_socket.CopyFrom(transport_socket(context))
    return out


def passthrough_chains(
    snapshot: SnapshotReader,
    server: Server,
    gateway: str,
    number: int,
    bound: Sequence[tuple[VirtualService, list[str]]],
    known_sni: dict[str, str],
) -> list[lc.FilterChain]:
    """PASSTHROUGH: one chain per ``tls[].match[]`` of the VirtualServices bound to
    ``gateway`` (each with the hosts it shares with the server), matching its ``sniHosts``
    and forwarding the bytes untouched (``tcp_proxy``) to its destinations, as istiod's
    ``buildGatewayNetworkFiltersFromTLSRoutes``. An SNI name already taken on this port
    (``known_sni``: name -> bind) is skipped, as istiod skips it (Envoy would reject the
    listener)."""
    chains: list[lc.FilterChain] = []
    bind = server.bind or ""
    for vs, _shared in bound:
        for tls in vs.spec.tls:
            if not tls.route:
                continue
            for match in tls.match:
                if not _tls_match_applies(match, number, gateway, vs.metadata.namespace):
                    continue
                if any(known_sni.get(h) == bind for h in match.sni_hosts):
                    continue
                known_sni.update({h: bind for h in match.sni_hosts})
                clusters = weighted_destinations(snapshot, vs, tls.route, number)
                stat = clusters[0][0] if len(clusters) == 1 else f"outbound|{number}||"
                chain = lc.FilterChain(filters=[tcp_proxy(stat, clusters)])
                chain.filter_chain_match.transport_protocol = TLS_TRANSPORT
                chain.filter_chain_match.server_names[:] = list(match.sni_hosts)
                chains.append(chain)
    return chains


def _tls_match_applies(
    match: TLSMatchAttributes, number: int, gateway: str, namespace: str
) -> bool:
    """istiod's l4SingleMatch for a gateway: the match's port (if any) is the server's, and
    its ``gateways`` (if any) name this gateway."""
    if match.port is not None and match.port != number:
        return False
    if not match.gateways:
        return True
    return gateway in {resolve_gateway_name(g, namespace) for g in match.gateways}


__all__ = [
    "ALPN_HTTP",
    "ALPN_IN_MESH",
    "ca_credential_name",
    "credential_names",
    "credential_resource_name",
    "downstream_tls_context",
    "is_https_terminated",
    "passthrough_chains",
    "secure_chain",
    "sni_hosts",
    "terminates_tls",
]
