"""TLS contexts: the inbound side of mTLS, and the upstream side from DestinationRule
``trafficPolicy.tls`` or automatic mTLS.

Certificates never appear in the configuration: every mesh context names the SDS secrets
``default`` (the workload's chain and key) and ``ROOTCA`` (the mesh's roots), which the
proxy fetches over its ADS stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from controlplane.api.networking import ClientTLSSettings
from controlplane.api.security import PeerAuthentication
from controlplane.compile.authn import DISABLE, PERMISSIVE, resolve_mtls
from controlplane.compile.filters import RAW_BUFFER_SOCKET, TLS_SOCKET
from controlplane.compile.naming import parse_cluster_name, spiffe_id
from controlplane.compile.protos import ads_source, packed
from controlplane.store.registry import MeshEndpoint, MeshService
from controlplane.store.snapshot import MergedDestinationRule

SDS_DEFAULT = "default"
SDS_ROOT = "ROOTCA"
ALPN_IN_MESH = ("istio-peer-exchange", "istio")
ALPN_HTTP_INBOUND = ("h2", "http/1.1")
# The proxy's operating-system trust bundle (Debian's path, Istio's first choice).
SYSTEM_ROOTS = "/etc/ssl/certs/ca-certificates.crt"


# ---- shared pieces ------------------------------------------------------------------------


def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """A reference to a secret the proxy fetches over ADS."""
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_source())


def _san_matchers(sans: Iterable[str]) -> list[common_pb2.SubjectAltNameMatcher]:
    out = []
    for san in sans:
        san_type = (
            common_pb2.SubjectAltNameMatcher.URI
            if "://" in san
            else common_pb2.SubjectAltNameMatcher.DNS
        )
        out.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=san_type, matcher=string_pb2.StringMatcher(exact=san)
            )
        )
    return out


def mesh_common_tls_context(
    alpn: Sequence[str] = (), sans: Iterable[str] = ()
) -> tls_pb2.CommonTlsContext:
    """The workload's own certificate (``default``), peers checked against ``ROOTCA``."""
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2
        ),
        tls_certificate_sds_secret_configs=[sds_secret(SDS_DEFAULT)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=_san_matchers(sans)
            ),
            validation_context_sds_secret_config=sds_secret(SDS_ROOT),
        ),
        alpn_protocols=list(alpn),
    )


def transport_socket(
    context: tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext,
) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(context))


def raw_buffer_socket() -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(
        name=RAW_BUFFER_SOCKET, typed_config=packed(raw_buffer_pb2.RawBuffer())
    )


# ---- inbound ------------------------------------------------------------------------------


def inbound_tls_context(alpn: Sequence[str] = ALPN_HTTP_INBOUND) -> tls_pb2.DownstreamTlsContext:
    """What an inbound mTLS filter chain presents and demands: a client certificate is
    required and must chain to ``ROOTCA``; TLS 1.2 or newer."""
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=mesh_common_tls_context(alpn),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )


# ---- upstream -----------------------------------------------------------------------------


def outbound_sni(port: int, subset: str | None, host: str) -> str:
    """Istio's SNI for in-mesh mTLS: ``outbound_.9080_.v1_.reviews.default.svc.cluster.local``."""
    return f"outbound_.{port}_.{subset or ''}_.{host}"


def istio_mutual_context(sni: str, sans: Iterable[str]) -> tls_pb2.UpstreamTlsContext:
    return tls_pb2.UpstreamTlsContext(
        common_tls_context=mesh_common_tls_context(ALPN_IN_MESH, sorted(set(sans))),
        sni=sni,
    )


def _file_source(path: str) -> base_pb2.DataSource:
    return base_pb2.DataSource(filename=path)


def originate_tls_context(settings: ClientTLSSettings) -> tls_pb2.UpstreamTlsContext:
    """SIMPLE or MUTUAL: TLS to a server outside the mesh's identity system, from files."""
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2
        )
    )
    if not settings.insecure_skip_verify:
        # Without caCertificates the server is checked against the operating system's roots
        # (as Istio does since VERIFY_CERTIFICATE_AT_CLIENT), never accepted unverified.
        validation = common_pb2.CertificateValidationContext(
            match_typed_subject_alt_names=_san_matchers(settings.subject_alt_names),
            trusted_ca=_file_source(settings.ca_certificates or SYSTEM_ROOTS),
        )
        common.validation_context.CopyFrom(validation)
    if settings.mode == "MUTUAL" and settings.client_certificate and settings.private_key:
        common.tls_certificates.append(
            common_pb2.TlsCertificate(
                certificate_chain=_file_source(settings.client_certificate),
                private_key=_file_source(settings.private_key),
            )
        )
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=settings.sni or "")


def client_tls_for(
    rule: MergedDestinationRule | None, port: int, subset: str | None
) -> ClientTLSSettings | None:
    """The DestinationRule ``tls`` for one cluster: subset port-level, subset, top port-level,
    top-level, the first that sets it (each ``tls`` applies whole)."""
    if rule is None:
        return None
    policies = []
    chosen = rule.subset(subset) if subset else None
    if chosen is not None and chosen.traffic_policy is not None:
        policies.append(chosen.traffic_policy)
    if rule.traffic_policy is not None:
        policies.append(rule.traffic_policy)
    for policy in policies:
        for port_policy in policy.port_level_settings:
            if (
                port_policy.port is not None
                and port_policy.port.number == port
                and port_policy.tls is not None
            ):
                return port_policy.tls
        if policy.tls is not None:
            return policy.tls
    return None


def apply_upstream_tls(
    cluster: cluster_pb2.Cluster,
    *,
    host: str,
    port: int,
    subset: str | None,
    settings: ClientTLSSettings | None,
    sans: Sequence[str],
    destination_mode: str,
) -> None:
    """Give ``cluster`` its transport socket(s).

    With a DestinationRule ``tls``, its mode decides. Without one (auto mTLS), endpoints whose
    metadata says ``tlsMode: istio`` get ISTIO_MUTUAL and the rest plaintext, unless the
    destination's PeerAuthentication is DISABLE.
    """
    sni = outbound_sni(port, subset, host)
    if settings is not None:
        if settings.mode == "DISABLE":
            return
        if settings.mode == "ISTIO_MUTUAL":
            context = istio_mutual_context(settings.sni or sni, settings.subject_alt_names or sans)
        else:
            context = originate_tls_context(settings)
        cluster.transport_socket.CopyFrom(transport_socket(context))
        return
    if destination_mode == DISABLE:
        return
    if cluster.type == cluster_pb2.Cluster.ORIGINAL_DST:
        # A passthrough cluster (loadBalancer PASSTHROUGH) has no endpoints, so no endpoint
        # metadata to match on: auto mTLS cannot decide, so it stays plaintext.
        # (Envoy 1.40 also crashes on transport_socket_matches in an ORIGINAL_DST cluster.)
        return
    istio = struct_pb2.Struct()
    istio.update({"tlsMode": "istio"})
    cluster.transport_socket_matches.extend(
        [
            cluster_pb2.Cluster.TransportSocketMatch(
                name="tlsMode-istio",
                match=istio,
                transport_socket=transport_socket(istio_mutual_context(sni, sans)),
            ),
            cluster_pb2.Cluster.TransportSocketMatch(
                name="tlsMode-disabled",
                match=struct_pb2.Struct(),
                transport_socket=raw_buffer_socket(),
            ),
        ]
    )


# ---- what a cluster's TLS depends on ---------------------------------------------------------


@dataclass(frozen=True)
class UpstreamSecurity:
    """The inputs of a service's upstream TLS besides its DestinationRule: the SPIFFE ids its
    endpoints run as, and the PeerAuthentication mode of each service port's workloads."""

    sans: tuple[str, ...] = ()
    port_modes: tuple[tuple[int, str], ...] = ()
    # False for a client without a certificate: automatic mTLS would reference secrets it
    # never gets, so it speaks plaintext unless a DestinationRule asks otherwise.
    auto_mtls: bool = True

    def mode_for(self, service_port: int) -> str:
        for port, mode in self.port_modes:
            if port == service_port:
                return mode
        return PERMISSIVE


def upstream_security(
    service: MeshService,
    endpoints: Iterable[MeshEndpoint],
    peer_authentications: Iterable[PeerAuthentication],
    trust_domain: str,
) -> UpstreamSecurity:
    """Best effort, like Istio: the service's workloads are judged by its selector labels."""
    endpoints = tuple(endpoints)
    sans = sorted(
        {
            spiffe_id(trust_domain, ep.namespace, ep.service_account)
            for ep in endpoints
            if ep.service_account
        }
    )
    mtls = resolve_mtls(peer_authentications, service.namespace, service.selector or {})
    modes = []
    for port in service.ports:
        target = port.target_port if isinstance(port.target_port, int) else None
        if target is None:
            target = next((ep.port for ep in endpoints if ep.service_port == port.port), port.port)
        modes.append((port.port, mtls.for_port(target)))
    return UpstreamSecurity(tuple(sans), tuple(modes))


def secure_cluster(
    cluster: cluster_pb2.Cluster,
    rule: MergedDestinationRule | None,
    security: UpstreamSecurity,
) -> cluster_pb2.Cluster:
    """Add the transport socket(s) an outbound cluster needs (the cluster name says which)."""
    parsed = parse_cluster_name(cluster.name)
    if parsed is None or parsed.direction != "outbound":
        return cluster
    apply_upstream_tls(
        cluster,
        host=parsed.host,
        port=parsed.port,
        subset=parsed.subset or None,
        settings=client_tls_for(rule, parsed.port, parsed.subset or None),
        sans=security.sans,
        destination_mode=security.mode_for(parsed.port) if security.auto_mtls else DISABLE,
    )
    return cluster
