"""The Kubernetes inputs the mesh reads: Services, Pods, EndpointSlices, Namespaces.

Only the fields the control plane uses are declared; the rest of each object is ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.api.base import KubeModel, ObjectMeta


class ServicePort(KubeModel):
    name: str | None = None
    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


class ServiceSpec(KubeModel):
    selector: dict[str, str] | None = None
    ports: list[ServicePort] = Field(default_factory=list)
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    type: str = "ClusterIP"


class Service(KubeModel):
    api_version: str = "v1"
    kind: Literal["Service"] = "Service"
    metadata: ObjectMeta
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


class ContainerPort(KubeModel):
    name: str | None = None
    container_port: int
    protocol: str = "TCP"


class Container(KubeModel):
    name: str
    image: str | None = None
    ports: list[ContainerPort] = Field(default_factory=list)


class PodSpec(KubeModel):
    service_account_name: str | None = None
    containers: list[Container] = Field(default_factory=list)
    node_name: str | None = None


class PodIP(KubeModel):
    ip: str


class PodStatus(KubeModel):
    phase: str | None = None
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIP] = Field(default_factory=list, alias="podIPs")


class Pod(KubeModel):
    api_version: str = "v1"
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)


class EndpointConditions(KubeModel):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ObjectReference(KubeModel):
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None


class Endpoint(KubeModel):
    addresses: list[str] = Field(default_factory=list)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    target_ref: ObjectReference | None = None
    zone: str | None = None
    node_name: str | None = None


class EndpointPort(KubeModel):
    name: str | None = None
    port: int | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


class EndpointSlice(KubeModel):
    api_version: str = "discovery.k8s.io/v1"
    kind: Literal["EndpointSlice"] = "EndpointSlice"
    metadata: ObjectMeta
    address_type: str = "IPv4"
    endpoints: list[Endpoint] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)


class Namespace(KubeModel):
    api_version: str = "v1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta
