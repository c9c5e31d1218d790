"""networking.istio.io Sidecar: which part of the mesh a workload's proxy sees.

One schema serves v1, v1beta1 and v1alpha3, as in Istio. Every field Istio's proto defines is
declared; what the compiler implements is listed in ``controlplane.api.support``. The scope a
Sidecar gives a proxy is computed in ``controlplane.compile.scope``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.api.base import IstioModel, ObjectMeta, UInt32
from controlplane.api.networking import ConnectionPoolSettings, Destination

CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]


class SidecarWorkloadSelector(IstioModel):
    """Sidecar's selector: ``labels`` (not ``matchLabels``, unlike DestinationRule's)."""

    labels: dict[str, str] = Field(default_factory=dict)


class SidecarPort(IstioModel):
    number: UInt32 = 0
    protocol: str = ""
    name: str = ""
    target_port: UInt32 = 0  # deprecated: no effect on Sidecars


class ServerTLSSettings(IstioModel):
    """Istio's ServerTLSSettings (shared with Gateway servers)."""

    https_redirect: bool = False
    mode: Literal[
        "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
    ] = "PASSTHROUGH"
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: list[str] = Field(default_factory=list)
    tls_certificates: list[dict[str, str]] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)
    verify_certificate_spki: list[str] = Field(default_factory=list)
    verify_certificate_hash: list[str] = Field(default_factory=list)
    min_protocol_version: str = ""
    max_protocol_version: str = ""
    cipher_suites: list[str] = Field(default_factory=list)


class IstioIngressListener(IstioModel):
    port: SidecarPort | None = None
    bind: str = ""
    capture_mode: CaptureMode = "DEFAULT"
    default_endpoint: str = ""
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


class IstioEgressListener(IstioModel):
    port: SidecarPort | None = None
    bind: str = ""
    capture_mode: CaptureMode = "DEFAULT"
    hosts: list[str] = Field(default_factory=list)


class SidecarOutboundTrafficPolicy(IstioModel):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY", "ALLOW_ANY_DYNAMIC_DNS"] = "REGISTRY_ONLY"
    egress_proxy: Destination | None = None


class SidecarSpec(IstioModel):
    workload_selector: SidecarWorkloadSelector | None = None
    ingress: list[IstioIngressListener] = Field(default_factory=list)
    egress: list[IstioEgressListener] = Field(default_factory=list)
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: SidecarOutboundTrafficPolicy | None = None


class Sidecar(IstioModel):
    api_version: str = "networking.istio.io/v1"
    kind: Literal["Sidecar"] = "Sidecar"
    metadata: ObjectMeta
    spec: SidecarSpec
