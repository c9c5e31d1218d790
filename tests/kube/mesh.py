"""A small mesh in a test namespace: Services and Pods applied with kubectl, Pod IPs written
by the test (nothing schedules Pods here), loopback backends and a real Envoy sidecar."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.backends import Backend
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port
from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess
from tests.support import meshes

IPS = {"v1": "127.0.3.11", "v2": "127.0.3.12"}
CLIENT_IP = "127.0.3.10"


def set_pod_ip(cluster: LocalCluster, namespace: str, name: str, ip: str) -> None:
    """What the kubelet would report: the Pod is running at ``ip``."""
    status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    cluster.kubectl(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip


def service_and_pods(namespace: str, port: int, versions: dict[str, str]) -> str:
    """The reviews Service, one Pod per version, and a productpage client Pod."""
    docs = [
        f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: reviews, namespace: {namespace}}}
        spec:
          selector: {{app: reviews}}
          ports: [{{name: http, port: 9080, targetPort: {port}}}]
        """,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: productpage, namespace: {namespace}, labels: {{app: productpage}}}}
        spec:
          serviceAccountName: default
          containers: [{{name: app, image: example.invalid/productpage:1}}]
        """,
    ]
    for version in versions:
        docs.append(
            f"""
            apiVersion: v1
            kind: Pod
            metadata:
              name: reviews-{version}
              namespace: {namespace}
              labels: {{app: reviews, version: {version}}}
            spec:
              serviceAccountName: default
              containers: [{{name: app, image: example.invalid/reviews:1, ports: [{{containerPort: {port}}}]}}]
            """
        )
    return "---".join(textwrap.dedent(d) for d in docs)


def destination_rule(namespace: str, *subsets: str) -> str:
    return meshes.subsets("reviews", subsets, namespace=namespace)


def virtual_service(namespace: str, w1: int, w2: int, subset2: str = "v2", api: str = "v1") -> str:
    weights = {"v1": w1, subset2: w2}
    return meshes.split(
        "reviews", weights, namespace=namespace, api_version=f"networking.istio.io/{api}"
    )


@dataclass
class Sidecar:
    node_id: str
    envoy: EnvoyProcess
    outbound_port: int


def start_sidecar(
    operator: OperatorProcess, namespace: str, pod: str, ip: str, labels: dict, workdir: Path
) -> Sidecar:
    """A real Envoy bootstrapped as ``pod``'s sidecar (local mode: no interception)."""
    node_id = f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"
    outbound = free_port()
    bootstrap = render_bootstrap(
        node_id=node_id,
        namespace=namespace,
        labels=labels,
        service_account="default",
        xds_port=operator.xds_port,
        outbound_port=outbound,
        admin_port=free_port(),
        workload_name=pod,
        instance_ips=ip,
    )
    envoy = EnvoyProcess(bootstrap, workdir, name=f"envoy-{pod}").start()
    operator.debug.wait_synced(node_id, timeout=30)
    envoy.wait_live()
    return Sidecar(node_id, envoy, outbound)


def start_backends(port: int, ips: dict[str, str]) -> list[Backend]:
    return [Backend(f"reviews-{v}", ip, port).start() for v, ip in ips.items()]


def route_clusters(sidecar, host: str) -> list[str]:
    """The clusters Envoy's route for ``host`` sends to (from its own config dump)."""
    dump = sidecar.envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    for config in dump["configs"]:
        for vhost in config["route_config"].get("virtual_hosts", []):
            if host in vhost["domains"]:
                action = vhost["routes"][0]["route"]
                if "weighted_clusters" in action:
                    return [c["name"] for c in action["weighted_clusters"]["clusters"]]
                return [action["cluster"]]
    return []
