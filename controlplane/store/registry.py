"""The service registry as the compiler sees it: services, ports, endpoints.

Built from Kubernetes Services plus EndpointSlices (when present) or Pods (selected by the
Service's selector). Pure functions of the store's resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controlplane.api.kube import EndpointSlice, Pod, Service

DOMAIN_SUFFIX = "cluster.local"

# Port-name prefixes and appProtocol values Istio reads as a protocol.
_HTTP_PROTOCOLS = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "HTTP"}
_TCP_PROTOCOLS = {"tcp", "mongo", "mysql", "redis"}
# TLS that the sidecar passes through (routed by SNI with a VirtualService's tls section).
_TLS_PROTOCOLS = {"tls", "https"}


def port_protocol(name: str | None, app_protocol: str | None, protocol: str = "TCP") -> str:
    """HTTP, HTTP2, GRPC, TCP, TLS, UDP or UNKNOWN (not declared: treated as HTTP by the
    compiler)."""
    if protocol.upper() == "UDP":
        return "UDP"
    for declared in (app_protocol, (name or "").split("-", 1)[0] if name else None):
        if not declared:
            continue
        declared = declared.lower()
        if declared in _HTTP_PROTOCOLS:
            return _HTTP_PROTOCOLS[declared]
        if declared.startswith("kubernetes.io/h2c"):
            return "HTTP2"
        if declared in _TCP_PROTOCOLS:
            return "TCP"
        if declared in _TLS_PROTOCOLS:
            return "TLS"
    return "UNKNOWN"


@dataclass(frozen=True)
class MeshPort:
    port: int
    name: str | None
    protocol: str  # HTTP, HTTP2, GRPC, TCP, TLS, UDP, UNKNOWN
    target_port: int | str | None

    @property
    def is_http(self) -> bool:
        return self.protocol in ("HTTP", "HTTP2", "GRPC", "UNKNOWN")


@dataclass(frozen=True)
class MeshService:
    name: str
    namespace: str
    hostname: str
    ports: tuple[MeshPort, ...]
    selector: Mapping[str, str] | None
    cluster_ip: str | None
    export_to: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    # "Kubernetes" (a Service) or "ServiceEntry" (one host of an entry).
    registry: str = "Kubernetes"
    # How the proxy finds endpoints: STATIC (EDS), DNS, DNS_ROUND_ROBIN, NONE (original dst).
    resolution: str = "STATIC"
    mesh_external: bool = False
    addresses: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    # (namespace, name) of the ServiceEntry a host comes from.
    source: tuple[str, str] | None = None

    @property
    def from_service_entry(self) -> bool:
        return self.registry != "Kubernetes"

    def port(self, number: int) -> MeshPort | None:
        for p in self.ports:
            if p.port == number:
                return p
        return None


@dataclass(frozen=True)
class MeshEndpoint:
    address: str
    port: int  # the workload's port (targetPort resolved)
    service_port: int
    labels: Mapping[str, str]
    namespace: str
    workload: str  # pod name, or the address when unknown
    service_account: str | None
    ready: bool = True
    locality: str = ""
    tls_mode: str = "disabled"  # "istio" when the workload runs our sidecar
    weight: int = 1  # a WorkloadEntry's weight


def fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.{DOMAIN_SUFFIX}"


def mesh_service(service: Service) -> MeshService:
    meta = service.metadata
    export = meta.annotations.get("networking.istio.io/exportTo", "")
    ports = tuple(
        MeshPort(p.port, p.name, port_protocol(p.name, p.app_protocol, p.protocol), p.target_port)
        for p in service.spec.ports
    )
    cluster_ip = service.spec.cluster_ip
    if cluster_ip in ("None", ""):
        cluster_ip = None
    return MeshService(
        name=meta.name,
        namespace=meta.namespace,
        hostname=fqdn(meta.name, meta.namespace),
        ports=ports,
        selector=service.spec.selector,
        cluster_ip=cluster_ip,
        export_to=tuple(x.strip() for x in export.split(",") if x.strip()),
        labels=meta.labels,
    )


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ip(pod: Pod) -> str | None:
    if pod.status.pod_ip:
        return pod.status.pod_ip
    if pod.status.pod_ips:
        return pod.status.pod_ips[0].ip
    return None


def pod_tls_mode(pod: Pod) -> str:
    labels = pod.metadata.labels
    annotations = pod.metadata.annotations
    if (
        labels.get("security.istio.io/tlsMode") == "istio"
        or "sidecar.istio.io/status" in annotations
    ):
        return "istio"
    return "disabled"


def format_locality(region: str, zone: str = "", subzone: str = "") -> str:
    """``region/zone/subzone`` as Istio writes a locality, trailing empty parts dropped
    (a zone without a region keeps its place: ``/zone``)."""
    parts = [region, zone, subzone]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def pod_locality(pod: Pod, zone_hint: str = "") -> str:
    """A pod's locality: Istio's ``istio-locality`` label (``region.zone.subzone``), else the
    topology labels (which Kubernetes puts on nodes; file mode puts them on pods), else the
    zone an EndpointSlice reports."""
    labels = pod.metadata.labels
    explicit = labels.get("istio-locality")
    if explicit:
        return format_locality(*(explicit.split(".", 2) + ["", ""])[:3])
    return format_locality(
        labels.get("topology.kubernetes.io/region", ""),
        labels.get("topology.kubernetes.io/zone", "") or zone_hint,
        labels.get("topology.istio.io/subzone", ""),
    )


def _resolve_target_port(port: MeshPort, pod: Pod | None) -> int | None:
    target = port.target_port
    if target is None:
        return port.port
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    if pod is None:
        return None
    for container in pod.spec.containers:
        for cport in container.ports:
            if cport.name == target:
                return cport.container_port
    return None


def _pod_endpoint(
    service: MeshService, port: MeshPort, pod: Pod, address: str
) -> MeshEndpoint | None:
    target = _resolve_target_port(port, pod)
    if target is None:
        return None
    labels = pod.metadata.labels
    locality = pod_locality(pod)
    return MeshEndpoint(
        address=address,
        port=target,
        service_port=port.port,
        labels=labels,
        namespace=pod.metadata.namespace,
        workload=pod.metadata.name,
        service_account=pod.spec.service_account_name or "default",
        ready=pod.status.phase not in ("Failed", "Succeeded")
        and pod.metadata.annotations.get("controlplane.dev/ready", "true") != "false",
        locality=locality,
        tls_mode=pod_tls_mode(pod),
    )


def endpoints_from_pods(service: MeshService, pods: Iterable[Pod]) -> tuple[MeshEndpoint, ...]:
    """Endpoints of every port of ``service`` from the Pods its selector picks."""
    if not service.selector:
        return ()
    found: list[MeshEndpoint] = []
    for pod in pods:
        if pod.metadata.namespace != service.namespace or not selects(
            service.selector, pod.metadata.labels
        ):
            continue
        address = pod_ip(pod)
        if not address:
            continue
        for port in service.ports:
            endpoint = _pod_endpoint(service, port, pod, address)
            if endpoint is not None:
                found.append(endpoint)
    return tuple(sorted(found, key=lambda e: (e.service_port, e.address, e.port)))


def endpoints_from_slices(
    service: MeshService, slices: Iterable[EndpointSlice], pods_by_name: Mapping[str, Pod]
) -> tuple[MeshEndpoint, ...]:
    """Endpoints from EndpointSlices, labelled from the Pods they reference."""
    found: list[MeshEndpoint] = []
    for eps in slices:
        for sport in service.ports:
            slice_port = _slice_port(eps, sport)
            if slice_port is None:
                continue
            for ep in eps.endpoints:
                pod = None
                if ep.target_ref is not None and ep.target_ref.kind == "Pod" and ep.target_ref.name:
                    pod = pods_by_name.get(ep.target_ref.name)
                labels = pod.metadata.labels if pod else {}
                ready = ep.conditions.ready is not False
                for address in ep.addresses:
                    found.append(
                        MeshEndpoint(
                            address=address,
                            port=slice_port,
                            service_port=sport.port,
                            labels=labels,
                            namespace=service.namespace,
                            workload=pod.metadata.name if pod else address,
                            service_account=(pod.spec.service_account_name or "default")
                            if pod
                            else None,
                            ready=ready,
                            locality=pod_locality(pod, ep.zone or "")
                            if pod
                            else format_locality("", ep.zone or ""),
                            tls_mode=pod_tls_mode(pod) if pod else "disabled",
                        )
                    )
    return tuple(sorted(found, key=lambda e: (e.service_port, e.address, e.port)))


def _slice_port(eps: EndpointSlice, sport: MeshPort) -> int | None:
    for p in eps.ports:
        if p.name == sport.name or (len(eps.ports) == 1 and not p.name):
            return p.port
    if not eps.ports:
        return sport.port
    return None
