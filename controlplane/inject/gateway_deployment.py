"""Automated deployment of Gateway API gateways: a Gateway -> its ServiceAccount, Deployment
and Service (pure; the controller that applies them is ``sources/kube/gateway_deployer``).

What istiod's deployment controller does (pilot/pkg/config/kube/gateway/deploymentcontroller.go
and its ``kube-gateway`` template), with this project's proxy: every object is named
``<gateway>-<class>``, labelled with the Gateway's name
(``gateway.networking.k8s.io/gateway-name``) and as managed by the controller
(``gateway.istio.io/managed``), and owned by the Gateway (``ownerReferences``: deleting the
Gateway deletes them, through the cluster's garbage collector). The Pod runs the sidecar
injector's proxy image with ``controlplane gateway`` (the bootstrap of the Istio Gateway's
kustomize component, manifests/components/ingress-gateway). The Service has istiod's status
port 15021 and one port per distinct listener port, named after the listener, with the
listener's protocol as ``appProtocol``; the Pod binds the listener ports itself (istiod's
template lowers ``net.ipv4.ip_unprivileged_port_start``), so target ports equal the ports.

A Gateway with a single address of type IPAddress or none is deployed; one that names a
Hostname address or several addresses points at a gateway deployed by hand, and istiod
leaves it alone (``IsManaged``), as this does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane.api.gatewayapi import ISTIO_CLASS, ISTIO_CONTROLLER
from controlplane.inject.bootstrap import ENVOY_PROMETHEUS_PORT, PROMETHEUS_PATH
from controlplane.inject.injector import InjectionConfig

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_VALUE = "istio.io-gateway-controller"  # istiod's value (the controller name, '/' -> '-')
STATUS_PORT = 15021
# A GatewayClass whose controllerName is one of api.gatewayapi.CONTROLLER_NAMES (ours and
# Istio's) has its Gateways deployed here; `istio` counts even before its GatewayClass exists
# (istiod creates that class itself).
BUILTIN_CLASSES = {ISTIO_CLASS: ISTIO_CONTROLLER}
SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"
FIELD_MANAGER = "istio.io-gateway-controller"


def deployed_name(gateway: Mapping[str, Any]) -> str:
    """``<gateway>-<class>``: the name of the Deployment, Service and ServiceAccount."""
    meta = gateway.get("metadata") or {}
    spec = gateway.get("spec") or {}
    return f"{meta.get('name')}-{spec.get('gatewayClassName')}"


def is_managed(gateway: Mapping[str, Any]) -> bool:
    """Whether the Gateway asks for a deployment (no address, or one IP address)."""
    addresses = (gateway.get("spec") or {}).get("addresses") or []
    if not addresses:
        return True
    if len(addresses) > 1:
        return False
    kind = addresses[0].get("type")
    return kind is None or kind == "IPAddress"


def service_ports(gateway: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The status port, then one port per distinct listener port (the first listener names it)."""
    ports: list[dict[str, Any]] = [
        {
            "name": "status-port",
            "port": STATUS_PORT,
            "targetPort": STATUS_PORT,
            "appProtocol": "tcp",
        }
    ]
    seen: set[int] = set()
    for index, listener in enumerate((gateway.get("spec") or {}).get("listeners") or []):
        port = int(listener.get("port", 0))
        if port in seen or port <= 0:
            continue
        seen.add(port)
        protocol = str(listener.get("protocol", "TCP")).lower()
        name = str(listener.get("name") or f"{protocol}-{index}")
        ports.append(
            {
                "name": name,
                "port": port,
                "targetPort": port,
                "protocol": "UDP" if protocol == "udp" else "TCP",
                "appProtocol": protocol,
            }
        )
    return ports


def owner_reference(gateway: Mapping[str, Any]) -> dict[str, Any]:
    meta = gateway.get("metadata") or {}
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
        "kind": "Gateway",
        "name": meta.get("name"),
        "uid": meta.get("uid"),
    }


def _metadata(gateway: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = gateway.get("metadata") or {}
    infrastructure = (gateway.get("spec") or {}).get("infrastructure") or {}
    labels = {
        **dict(infrastructure.get("labels") or {}),
        GATEWAY_NAME_LABEL: str(meta.get("name")),
        MANAGED_LABEL: MANAGED_VALUE,
    }
    out: dict[str, Any] = {
        "name": name,
        "namespace": meta.get("namespace"),
        "labels": labels,
        "ownerReferences": [owner_reference(gateway)],
    }
    annotations = dict(infrastructure.get("annotations") or {})
    if annotations:
        out["annotations"] = annotations
    return out


def service_account(gateway: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(gateway, deployed_name(gateway)),
        # The proxy proves itself with a projected token of the mesh's audience.
        "automountServiceAccountToken": False,
    }


def service(gateway: Mapping[str, Any]) -> dict[str, Any]:
    name = deployed_name(gateway)
    meta = gateway.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    service_type = annotations.get(SERVICE_TYPE_ANNOTATION, "LoadBalancer")
    spec: dict[str, Any] = {
        "type": service_type,
        "selector": {GATEWAY_NAME_LABEL: str(meta.get("name"))},
        "ports": service_ports(gateway),
    }
    addresses = (gateway.get("spec") or {}).get("addresses") or []
    if addresses and service_type == "LoadBalancer":
        spec["loadBalancerIP"] = addresses[0].get("value")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(gateway, name),
        "spec": spec,
    }


def deployment(gateway: Mapping[str, Any], config: InjectionConfig) -> dict[str, Any]:
    name = deployed_name(gateway)
    gateway_name = str((gateway.get("metadata") or {}).get("name"))
    pod_labels = {
        GATEWAY_NAME_LABEL: gateway_name,
        MANAGED_LABEL: MANAGED_VALUE,
        "service.istio.io/canonical-name": name,
        # The gateway is a proxy itself: never inject a sidecar into it.
        "sidecar.istio.io/inject": "false",
    }
    ports = [
        {"name": p["name"], "containerPort": p["targetPort"], "protocol": p.get("protocol", "TCP")}
        for p in service_ports(gateway)[1:]
    ]
    # Envoy's statistics, and the scrape annotations pointing at the merged endpoint (Envoy's
    # alone for a gateway), as istiod's gateway template sets them.
    ports.append(
        {"name": "http-envoy-prom", "containerPort": ENVOY_PROMETHEUS_PORT, "protocol": "TCP"}
    )
    pod_annotations = {
        "prometheus.io/path": PROMETHEUS_PATH,
        "prometheus.io/port": str(config.status_port),
        "prometheus.io/scrape": "true",
    }
    uid = config.proxy_uid
    container = {
        "name": "istio-proxy",
        "image": config.image,
        "command": [
            "controlplane",
            "gateway",
            f"--xds-address={config.xds_address}",
            f"--xds-port={config.xds_port}",
            "--token-path=/var/run/secrets/tokens/istio-token",
            "--labels-path=/etc/istio/pod/labels",
            "--bootstrap-path=/etc/istio/proxy/envoy.yaml",
            f"--status-port={config.status_port}",
        ],
        "ports": ports,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": "SERVICE_ACCOUNT",
                "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}},
            },
        ],
        "resources": dict(config.proxy_resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
            {"name": "istio-podinfo", "mountPath": "/etc/istio/pod", "readOnly": True},
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
        ],
    }
    pod_spec = {
        "serviceAccountName": name,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
            # Listener ports below 1024 bound by a non-root Envoy, as istiod's template allows.
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "containers": [container],
        "volumes": [
            {
                "name": "istio-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": config.token_audience,
                                "expirationSeconds": config.token_seconds,
                                "path": "istio-token",
                            }
                        }
                    ]
                },
            },
            {
                "name": "istio-podinfo",
                "downwardAPI": {
                    "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
                },
            },
            {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(gateway, name),
        "spec": {
            "selector": {"matchLabels": {GATEWAY_NAME_LABEL: gateway_name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def rendered(gateway: Mapping[str, Any], config: InjectionConfig) -> list[dict[str, Any]]:
    """The objects a managed Gateway gets, in the order to apply them."""
    return [service_account(gateway), deployment(gateway, config), service(gateway)]


def gateway_addresses(svc: Mapping[str, Any]) -> list[dict[str, str]]:
    """``status.addresses`` from the gateway's Service, as istiod reports them: the load
    balancer's ingress (IP or hostname) for a LoadBalancer Service, else its cluster IPs."""
    spec = svc.get("spec") or {}
    out: list[dict[str, str]] = []
    if spec.get("type", "ClusterIP") == "LoadBalancer":
        for ingress in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if ingress.get("ip"):
                out.append({"type": "IPAddress", "value": str(ingress["ip"])})
            elif ingress.get("hostname"):
                out.append({"type": "Hostname", "value": str(ingress["hostname"])})
        if out:
            return out
    for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
        if ip and ip != "None":
            out.append({"type": "IPAddress", "value": str(ip)})
    return out
