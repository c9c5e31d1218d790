"""networking.istio.io models: ServiceEntry and WorkloadEntry.

A ServiceEntry adds hosts to the mesh's service registry (external APIs, VMs, anything that
is not a Kubernetes Service); a WorkloadEntry is one non-Kubernetes workload (a VM) that
Services (by their selector) and ServiceEntries (by ``workloadSelector``) pick like a pod.
One schema serves v1, v1beta1 and v1alpha3, as in Istio; every field Istio defines is
declared. How the registry reads them: ``store/service_entries.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.api.base import IstioModel, ObjectMeta, UInt32

LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")
RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS")
# ServicePort.protocol values istiod knows (pkg/config/protocol), upper-cased as it parses them.
PROTOCOLS = frozenset(
    {
        "HTTP",
        "HTTPS",
        "HTTP2",
        "HTTP_PROXY",
        "GRPC",
        "GRPC-WEB",
        "TCP",
        "TLS",
        "MONGO",
        "REDIS",
        "MYSQL",
        "THRIFT",
        "UDP",
        "UNSUPPORTED",
    }
)


class WorkloadSelector(IstioModel):
    """networking's own selector (``labels``; not the ``matchLabels`` of type.v1beta1)."""

    labels: dict[str, str] = Field(default_factory=dict)


class WorkloadEntrySpec(IstioModel):
    """One workload: its address and, per named service port, the port it serves on."""

    address: str = ""
    ports: dict[str, UInt32] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str = ""
    locality: str = ""
    weight: UInt32 | None = None
    service_account: str = ""


class ServicePort(IstioModel):
    number: UInt32 = 0
    protocol: str = ""
    name: str = ""
    target_port: UInt32 | None = None


class ServiceEntrySpec(IstioModel):
    hosts: list[str] = Field(default_factory=list)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] = "NONE"
    endpoints: list[WorkloadEntrySpec] | None = None
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)


class ServiceEntry(IstioModel):
    api_version: str = "networking.istio.io/v1"
    kind: Literal["ServiceEntry"] = "ServiceEntry"
    metadata: ObjectMeta
    spec: ServiceEntrySpec


class WorkloadEntry(IstioModel):
    api_version: str = "networking.istio.io/v1"
    kind: Literal["WorkloadEntry"] = "WorkloadEntry"
    metadata: ObjectMeta
    spec: WorkloadEntrySpec
