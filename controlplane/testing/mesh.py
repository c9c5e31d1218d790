"""A whole mesh on one machine, for tests and experiments: a config directory, the control
plane serving it (as its own process), loopback backends and real Envoy sidecars."""

from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.inject.bootstrap import render_bootstrap
from controlplane.testing.backends import Backend, Behaviour
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port


@dataclass
class Sidecar:
    node_id: str
    envoy: EnvoyProcess
    outbound_port: int
    admin_port: int


@dataclass
class GatewayProxy:
    """An Envoy in router mode (a gateway): its listeners are the Gateways' server ports."""

    node_id: str
    envoy: EnvoyProcess
    admin_port: int


# The labels of Istio's default ingress gateway pods (what bookinfo-gateway.yaml selects).
INGRESS_GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}


class LocalMesh:
    def __init__(self, workdir: Path, control_plane_args: list[str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.config_dir = self.workdir / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.xds_port = free_port()
        self.debug_port = free_port()
        self.control_plane = ControlPlaneProcess(
            self.config_dir,
            self.xds_port,
            self.debug_port,
            self.workdir / "controlplane.log",
            extra_args=control_plane_args,
        )
        self.debug = self.control_plane.debug
        self.sidecars: list[Sidecar] = []
        self.gateways: list[GatewayProxy] = []
        self.backends: list[Backend] = []

    # ---- configuration --------------------------------------------------------------------

    def write(self, name: str, text: str) -> float:
        """Write (atomically) one config file; return the wall-clock time of the write."""
        path = self.config_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(textwrap.dedent(text))
        written = time.time()
        os.replace(tmp, path)
        return written

    def remove(self, name: str) -> float:
        written = time.time()
        (self.config_dir / name).unlink()
        return written

    # ---- processes --------------------------------------------------------------------------

    def start(self) -> LocalMesh:
        self.control_plane.start()
        return self

    def backend(
        self, name: str, host: str, port: int, behaviour: Behaviour | None = None
    ) -> Backend:
        backend = Backend(name, host, port, behaviour).start()
        self.backends.append(backend)
        return backend

    def sidecar(
        self,
        node_id: str,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
        service_account: str = "default",
        wait: bool = True,
        **bootstrap_args: Any,
    ) -> Sidecar:
        outbound = free_port()
        admin = free_port()
        bootstrap = render_bootstrap(
            node_id=node_id,
            namespace=namespace,
            labels=labels or {},
            service_account=service_account,
            xds_port=self.xds_port,
            outbound_port=outbound,
            admin_port=admin,
            **bootstrap_args,
        )
        envoy = EnvoyProcess(bootstrap, self.workdir, name=f"envoy-{len(self.sidecars)}")
        sidecar = Sidecar(node_id, envoy, outbound, admin)
        self.sidecars.append(sidecar)
        envoy.start()
        if wait:
            self.debug.wait_synced(node_id, timeout=30)
            envoy.wait_live()
        return sidecar

    def gateway(
        self,
        name: str = "istio-ingressgateway",
        namespace: str = "istio-system",
        labels: dict[str, str] | None = None,
        address: str = "127.0.0.1",
        wait: bool = True,
    ) -> GatewayProxy:
        """A gateway Envoy (node id ``router~...``) with ``labels`` (Istio's ingress gateway
        labels by default): it serves the listeners of the Gateways that select it."""
        admin = free_port()
        node_id = f"router~{address}~{name}-0.{namespace}~{namespace}.svc.cluster.local"
        bootstrap = render_bootstrap(
            node_id=node_id,
            namespace=namespace,
            labels=labels if labels is not None else INGRESS_GATEWAY_LABELS,
            service_account=f"{name}-service-account",
            xds_port=self.xds_port,
            admin_port=admin,
            workload_name=name,
        )
        envoy = EnvoyProcess(bootstrap, self.workdir, name=f"gateway-{len(self.gateways)}")
        proxy = GatewayProxy(node_id, envoy, admin)
        self.gateways.append(proxy)
        envoy.start()
        if wait:
            self.debug.wait_synced(node_id, timeout=30)
            envoy.wait_live()
        return proxy

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.envoy.stop()
        for sidecar in self.sidecars:
            sidecar.envoy.stop()
        for backend in self.backends:
            backend.stop()
        self.control_plane.stop()

    def __enter__(self) -> LocalMesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
