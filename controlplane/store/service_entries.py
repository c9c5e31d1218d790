"""ServiceEntries and WorkloadEntries in the service registry, as istiod converts them
(pilot/pkg/serviceregistry/serviceentry/conversion.go): one service per host of an entry, with
the entry's ports, addresses, resolution and location; endpoints from the inline
``endpoints``, from the pods and WorkloadEntries its ``workloadSelector`` picks, or (DNS
without endpoints) the host itself. WorkloadEntries are also endpoints of the Kubernetes
Services whose selector picks them, like pods. Pure functions of the store's resources.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from controlplane.api.kube import Pod
from controlplane.api.serviceentry import (
    ServiceEntry,
    ServicePort,
    WorkloadEntry,
    WorkloadEntrySpec,
)
from controlplane.store.registry import (
    MeshEndpoint,
    MeshPort,
    MeshService,
    format_locality,
    pod_ip,
    pod_locality,
    pod_tls_mode,
    selects,
)

SERVICE_ENTRY_REGISTRY = "ServiceEntry"
TLS_MODE_LABEL = "security.istio.io/tlsMode"

# ServicePort.protocol -> the registry's protocol. HTTPS is TLS to the sidecar: it is
# routed by SNI and passed through, as istiod does for outbound HTTPS ports.
_PROTOCOLS = {
    "HTTP": "HTTP",
    "HTTP_PROXY": "HTTP",
    "GRPC-WEB": "HTTP",
    "HTTP2": "HTTP2",
    "GRPC": "GRPC",
    "HTTPS": "TLS",
    "TLS": "TLS",
    "UDP": "UDP",
    "": "UNKNOWN",
}


def entry_port(port: ServicePort) -> MeshPort:
    protocol = _PROTOCOLS.get(port.protocol.upper(), "TCP")
    return MeshPort(port.number, port.name or None, protocol, port.target_port or None)


def _vip(addresses: Sequence[str]) -> str | None:
    """The entry's VIP: its only address when that is one IP (a /32 or /128 included). CIDR
    blocks and several addresses are matched by destination prefix instead
    (``compile/tcp.py``, ``wildcard_port_chains``)."""
    if len(addresses) != 1:
        return None
    try:
        network = ipaddress.ip_network(addresses[0], strict=False)
    except ValueError:
        return None
    return str(network.network_address) if network.num_addresses == 1 else None


def entry_services(entry: ServiceEntry) -> list[MeshService]:
    """One service per host of ``entry``."""
    spec = entry.spec
    meta = entry.metadata
    selector = spec.workload_selector.labels if spec.workload_selector else None
    ports = tuple(entry_port(p) for p in spec.ports)
    return [
        MeshService(
            name=host,
            namespace=meta.namespace,
            hostname=host,
            ports=ports,
            selector=selector,
            cluster_ip=_vip(spec.addresses),
            export_to=tuple(spec.export_to),
            labels=meta.labels,
            registry=SERVICE_ENTRY_REGISTRY,
            resolution=spec.resolution,
            mesh_external=spec.location != "MESH_INTERNAL",
            addresses=tuple(spec.addresses),
            subject_alt_names=tuple(spec.subject_alt_names),
            source=(meta.namespace, meta.name),
        )
        for host in spec.hosts
    ]


def _endpoint_port(port: MeshPort, declared: Mapping[str, int]) -> int:
    """The workload's port for a service port: its own ``ports`` entry by the port's name,
    else the port's targetPort, else the port's number."""
    if port.name and port.name in declared:
        return declared[port.name]
    if isinstance(port.target_port, int):
        return port.target_port
    if isinstance(port.target_port, str) and port.target_port.isdigit():
        return int(port.target_port)
    return port.port


def _locality(text: str) -> str:
    """A WorkloadEntry's ``locality`` (``region/zone/subzone``) as the registry writes it."""
    return format_locality(*(text.split("/", 2) + ["", ""])[:3]) if text else ""


def workload_endpoints(
    service: MeshService,
    spec: WorkloadEntrySpec,
    namespace: str,
    workload: str,
    address: str | None = None,
) -> list[MeshEndpoint]:
    """The endpoints one workload entry gives every port of ``service``."""
    labels = spec.labels
    return [
        MeshEndpoint(
            address=address or spec.address,
            port=_endpoint_port(port, spec.ports),
            service_port=port.port,
            labels=labels,
            namespace=namespace,
            workload=workload,
            service_account=spec.service_account or None,
            locality=_locality(spec.locality),
            tls_mode="istio" if labels.get(TLS_MODE_LABEL) == "istio" else "disabled",
            weight=spec.weight or 1,
        )
        for port in service.ports
    ]


def _pod_endpoints(service: MeshService, pod: Pod, address: str) -> list[MeshEndpoint]:
    """A pod picked by a ServiceEntry's workloadSelector: the entry's ports on the pod's IP
    (a named targetPort is not resolved against the pod: entries number their ports)."""
    return [
        MeshEndpoint(
            address=address,
            port=_endpoint_port(port, {}),
            service_port=port.port,
            labels=pod.metadata.labels,
            namespace=pod.metadata.namespace,
            workload=pod.metadata.name,
            service_account=pod.spec.service_account_name or "default",
            locality=pod_locality(pod),
            tls_mode=pod_tls_mode(pod),
        )
        for port in service.ports
    ]


def entry_endpoints(
    service: MeshService,
    entry: ServiceEntry,
    pods: Iterable[Pod],
    workload_entries: Iterable[WorkloadEntry],
) -> tuple[MeshEndpoint, ...]:
    """Every endpoint of every port of one host of ``entry``.

    NONE has none (the original destination is used); DNS without endpoints has the host
    itself, resolved by the proxy; otherwise the inline endpoints, or the pods and
    WorkloadEntries of the entry's namespace that its workloadSelector picks.
    """
    spec = entry.spec
    namespace = entry.metadata.namespace
    found: list[MeshEndpoint] = []
    if spec.resolution == "NONE":
        return ()
    if spec.workload_selector is not None:
        selector = spec.workload_selector.labels
        for pod in pods:
            address = pod_ip(pod)
            if (
                pod.metadata.namespace == namespace
                and address
                and selects(selector, pod.metadata.labels)
            ):
                found += _pod_endpoints(service, pod, address)
        for we in workload_entries:
            if we.metadata.namespace == namespace and selects(selector, we.spec.labels):
                found += workload_endpoints(service, we.spec, namespace, we.metadata.name)
    elif spec.endpoints:
        for ep in spec.endpoints:
            found += workload_endpoints(service, ep, namespace, ep.address)
    elif spec.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        host_entry = WorkloadEntrySpec(address=service.hostname)
        found += workload_endpoints(service, host_entry, namespace, service.hostname)
    return tuple(sorted(found, key=lambda e: (e.service_port, e.address, e.port)))


def selected_workload_entries(
    service: MeshService, workload_entries: Iterable[WorkloadEntry]
) -> tuple[MeshEndpoint, ...]:
    """A Kubernetes Service's endpoints on the WorkloadEntries its selector picks."""
    if not service.selector:
        return ()
    found: list[MeshEndpoint] = []
    for we in workload_entries:
        if we.metadata.namespace == service.namespace and selects(service.selector, we.spec.labels):
            if we.spec.address:
                found += workload_endpoints(service, we.spec, service.namespace, we.metadata.name)
    return tuple(found)
