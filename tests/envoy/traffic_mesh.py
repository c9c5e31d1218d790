"""A module-wide mesh for the HTTP traffic tests: one control plane and one sidecar serve many
checks, with services whose pods are loopback backends in the http range (127.0.4.0/24)."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.testing.backends import Backend, Behaviour
from controlplane.testing.mesh import LocalMesh, Sidecar
from controlplane.testing.ports import free_port

CLIENT = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"


@dataclass
class Pod:
    name: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    behaviour: Behaviour | None = None


def service_yaml(name: str, port: int, target_port: int, pods: Sequence[Pod]) -> str:
    """A Service selecting ``app: name`` and its Pods (labels include ``app``)."""
    docs = [
        f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: default}}
        spec:
          selector: {{app: {name}}}
          ports: [{{name: http, port: {port}, targetPort: {target_port}}}]
        """
    ]
    for pod in pods:
        labels = {"app": name, **pod.labels}
        rendered = ", ".join(f"{k}: {v}" for k, v in labels.items())
        docs.append(
            f"""
            apiVersion: v1
            kind: Pod
            metadata: {{name: {pod.name}, namespace: default, labels: {{{rendered}}}}}
            status: {{podIP: {pod.ip}}}
            """
        )
    return "---".join(textwrap.dedent(d) for d in docs)


@dataclass
class TrafficMesh:
    mesh: LocalMesh
    sidecar: Sidecar
    backends: dict[str, Backend]

    @property
    def port(self) -> int:
        return self.sidecar.outbound_port

    def stat(self, name: str) -> int:
        return self.sidecar.envoy.stat(name)


@contextmanager
def traffic_mesh(
    workdir: Path, services: dict[str, Sequence[Pod]], config: dict[str, str], port: int = 8080
) -> Iterator[TrafficMesh]:
    """Start backends for every pod, write the services and ``config`` files, start the control
    plane and one client sidecar; stop everything on exit."""
    mesh = LocalMesh(workdir)
    try:
        backends: dict[str, Backend] = {}
        for service, pods in services.items():
            target = free_port()
            for pod in pods:
                backends[pod.name] = mesh.backend(pod.name, pod.ip, target, pod.behaviour)
            mesh.write(f"svc-{service}.yaml", service_yaml(service, port, target, pods))
        for name, text in config.items():
            mesh.write(name, text)
        mesh.start()
        sidecar = mesh.sidecar(CLIENT, labels={"app": "client"}, service_account="client")
        yield TrafficMesh(mesh, sidecar, backends)
    finally:
        mesh.stop()


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def located_sidecar(mesh: LocalMesh, node_id: str, region: str, zone: str) -> Sidecar:
    """A client sidecar whose Envoy node reports a locality (the harness has no option for
    it, so the bootstrap is amended here)."""
    from controlplane.inject.bootstrap import render_bootstrap
    from controlplane.testing.envoy import EnvoyProcess

    outbound, admin = free_port(), free_port()
    bootstrap = render_bootstrap(
        node_id=node_id,
        namespace="default",
        labels={"app": "located-client"},
        service_account="located-client",
        xds_port=mesh.xds_port,
        outbound_port=outbound,
        admin_port=admin,
    )
    bootstrap["node"]["locality"] = {"region": region, "zone": zone}
    envoy = EnvoyProcess(bootstrap, mesh.workdir, name=f"envoy-located-{len(mesh.sidecars)}")
    sidecar = Sidecar(node_id, envoy, outbound, admin)
    mesh.sidecars.append(sidecar)
    envoy.start()
    mesh.debug.wait_synced(node_id, timeout=30)
    envoy.wait_live()
    return sidecar
