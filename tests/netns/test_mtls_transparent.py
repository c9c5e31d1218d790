"""Zero trust with transparent interception for real: pods as network namespaces with the
injector's capture rules and real Envoys; the apps speak plain HTTP and know nothing about
certificates, yet sidecars talk mTLS, STRICT refuses a pod without a sidecar, and the payment
policy decides by the caller's service account."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.app import obtain_token
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.netns import NetnsLab, NetnsPod
from controlplane.testing.pod_apps import parse_counts
from controlplane.testing.ports import free_port
from tests.support import meshes

PAYMENT_VIP = "10.96.7.10"


@dataclass
class Mesh:
    lab: NetnsLab
    control_plane: ControlPlaneProcess
    config_dir: Path
    pods: dict[str, NetnsPod]
    node_ids: dict[str, str]

    def write(self, name: str, text: str) -> None:
        before = self.control_plane.debug.type_state(self.node_ids["payment"], "lds")
        tmp = self.config_dir / f".{name}.tmp"
        tmp.write_text(textwrap.dedent(text))
        tmp.rename(self.config_dir / name)
        self.control_plane.debug.wait_synced(
            self.node_ids["payment"],
            timeout=15,
            newer_than={"lds": before.get("acked_version", "")},
        )
        time.sleep(1.5)  # --drain-time-s 1: connections of replaced chains are gone

    def call(self, pod: str, url: str, count: int = 5) -> dict[str, int]:
        client = self.pods[pod]
        result = client.run(client.app("count-http", url, str(count)), timeout=120)
        assert result.returncode == 0, result.stderr
        return parse_counts(result.stdout)


def registry(payment: NetnsPod) -> str:
    return meshes.join(
        meshes.service("payment", cluster_ip=PAYMENT_VIP),
        meshes.pod(
            "payment-1",
            payment.ip,
            app="payment",
            annotations=meshes.INJECTED,
            service_account="payment",
        ),
    )


POLICY = meshes.resource(
    "AuthorizationPolicy",
    "payment",
    """
  selector: {matchLabels: {app: payment}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/order-service]}}]
    to: [{operation: {paths: [/api/*]}}]
""",
)
STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("netns-mtls")
    config_dir = workdir / "config"
    config_dir.mkdir()
    ca_dir = workdir / "ca"
    lab = NetnsLab(prefix="sec").start()
    control_plane: ControlPlaneProcess | None = None
    try:
        pods = {name: lab.pod(name) for name in ("order", "web", "payment", "external")}
        (config_dir / "payment.yaml").write_text(textwrap.dedent(registry(pods["payment"])))
        xds_port, debug_port = free_port(), free_port()
        control_plane = ControlPlaneProcess(
            config_dir,
            xds_port,
            debug_port,
            workdir / "cp.log",
            extra_args=["--host", "0.0.0.0", "--ca-dir", str(ca_dir), "--require-token"],
        ).start()
        node_ids = {}
        for name, account in (("order", "order-service"), ("web", "web"), ("payment", "payment")):
            pod = pods[name]
            pod.redirect()
            pod.set_hosts(
                {"payment payment.default payment.default.svc.cluster.local": PAYMENT_VIP}
            )
            node_ids[name] = pod.start_envoy(
                xds_port,
                labels={"app": "payment" if name == "payment" else name},
                service_account=account,
                xds_token=obtain_token(ca_dir, "default", account),
            )
        pods["payment"].start_app(pods["payment"].app("serve-http", "payment", "9080"))
        for name in node_ids:
            pods[name].wait_envoy_live()
            control_plane.debug.wait_synced(
                node_ids[name], types=("cds", "eds", "lds", "sds"), timeout=30
            )
        yield Mesh(lab, control_plane, config_dir, pods, node_ids)
    finally:
        lab.stop()
        if control_plane is not None:
            control_plane.stop()


def test_sidecars_speak_mtls_while_the_apps_speak_plain_http(mesh: Mesh) -> None:
    assert mesh.call("order", "http://payment:9080/") == {"payment": 5}
    handshakes = mesh.pods["order"].stat(
        "cluster.outbound|9080||payment.default.svc.cluster.local.ssl.handshake"
    )
    assert handshakes >= 1
    assert mesh.pods["payment"].stat("listener.0.0.0.0_15006.ssl.handshake") >= 1


def test_strict_refuses_a_pod_without_a_sidecar_and_permissive_lets_it_in(mesh: Mesh) -> None:
    direct = f"http://{mesh.pods['payment'].ip}:9080/"
    assert mesh.call("external", direct) == {"payment": 5}  # PERMISSIVE: plaintext accepted
    mesh.write("strict.yaml", STRICT)
    try:
        refused = mesh.call("external", direct)
        assert "payment" not in refused and sum(refused.values()) == 5, refused
        assert mesh.call("order", "http://payment:9080/") == {"payment": 5}
    finally:
        (mesh.config_dir / "strict.yaml").unlink()
        time.sleep(1.5)


def test_the_payment_policy_decides_by_the_callers_service_account(mesh: Mesh) -> None:
    mesh.write("policy.yaml", POLICY)
    try:
        assert mesh.call("order", "http://payment:9080/api/v1/charge") == {"payment": 5}
        assert mesh.call("web", "http://payment:9080/api/v1/charge") == {"403": 5}
        assert mesh.call("order", "http://payment:9080/admin") == {"403": 5}
        # Plaintext from outside the mesh has no principal.
        direct = f"http://{mesh.pods['payment'].ip}:9080/api/v1/charge"
        assert mesh.call("external", direct) == {"403": 5}
    finally:
        (mesh.config_dir / "policy.yaml").unlink()
        time.sleep(1.5)
