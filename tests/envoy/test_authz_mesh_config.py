"""The mesh config's trust-domain aliases and root namespace, enforced by a real Envoy.

The control plane process of the other Envoy tests reads the mesh config only once part
meshcfg is merged (``mesh.yaml``), so here the compiler is given a store holding a
``MeshConfig`` directly (as the shared MeshConfig model allows) and its output runs in a real
Envoy as static resources: one workload, ``payment``, behind a STRICT mTLS inbound port, and
TLS clients holding mesh certificates issued in the test for the identities that call it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from controlplane.api import validate
from controlplane.api.base import ObjectMeta
from controlplane.api.mesh import MeshConfig, MeshConfigSpec
from controlplane.api.resources import parse_resource
from controlplane.ca import CertificateAuthority, Identity
from controlplane.ca.root import create_root_bundle
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import proxy_from_node
from controlplane.compile.sds import certificate_secret, root_secret
from controlplane.store import Store, Submission
from controlplane.testing.backends import Backend
from controlplane.testing.envoy import EnvoyProcess
from controlplane.testing.ports import free_port
from tests.envoy.validate import static_bootstrap
from tests.support import meshes

POD, APP = "127.0.7.41", "127.0.7.141"


@dataclasses.dataclass
class Workload:
    ca: CertificateAuthority
    app_port: int
    workdir: Path
    certs: dict[str, tuple[Path, Path]]

    def client(self, account: str) -> tuple[Path, Path]:
        if account not in self.certs:
            issued = self.ca.issue(Identity("cluster.local", "default", account))
            chain = self.workdir / f"{account}.pem"
            key = self.workdir / f"{account}-key.pem"
            chain.write_text(issued.cert_chain_pem)
            key.write_text(issued.private_key_pem)
            self.certs[account] = (chain, key)
        return self.certs[account]

    @property
    def root(self) -> Path:
        path = self.workdir / "root.pem"
        path.write_text(self.ca.root_certs_pem)
        return path


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    now = datetime.now(UTC)
    ca = CertificateAuthority(create_root_bundle(now), now=now)
    app_port = free_port(APP)
    backend = Backend("payment", APP, app_port).start()
    try:
        yield Workload(ca, app_port, tmp_path_factory.mktemp("authz-mesh"), {})
    finally:
        backend.stop()


def mesh_yaml(app_port: int, policy_namespace: str, principal: str) -> list[Any]:
    text = meshes.join(
        meshes.resource(
            "Service",
            "payment",
            {
                "selector": {"app": "payment"},
                "ports": [{"name": "http", "port": 9080, "targetPort": app_port}],
            },
            api_version="v1",
        ),
        meshes.pod("payment-1", POD, app="payment", service_account="payment"),
        meshes.resource("PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}),
        meshes.resource(
            "AuthorizationPolicy",
            "payment",
            {
                "selector": {"matchLabels": {"app": "payment"}},
                "rules": [{"from": [{"source": {"principals": [principal]}}]}],
            },
            namespace=policy_namespace,
        ),
    )
    return [parse_resource(d) for d in yaml.safe_load_all(text) if d]


@dataclasses.dataclass
class Running:
    envoy: EnvoyProcess
    workload: Workload

    def status(self, account: str) -> int:
        """The HTTP status a client with ``account``'s mesh certificate gets (0: refused)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cafile=str(self.workload.root))
        chain, key = self.workload.client(account)
        context.load_cert_chain(str(chain), str(key))
        try:
            with socket.create_connection((POD, self.workload.app_port), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: payment\r\nConnection: close\r\n\r\n")
                    head = tls.recv(64)
        except (OSError, ssl.SSLError):
            return 0
        return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture
def run(workload: Workload) -> Iterator[Any]:
    started: list[EnvoyProcess] = []
    names = itertools.count()

    def start(mesh: MeshConfigSpec, policy_namespace: str, principal: str) -> Running:
        store = Store()
        resources = mesh_yaml(workload.app_port, policy_namespace, principal)
        config = MeshConfig(metadata=ObjectMeta(name="istio", namespace="istio-system"), spec=mesh)
        store.apply(
            upserts=[Submission(r, tuple(validate(r))) for r in resources]
            + [Submission(config, ())]
        )
        proxy = dataclasses.replace(
            proxy_from_node(
                f"sidecar~{POD}~payment-1.default~default.svc.cluster.local",
                {
                    "NAMESPACE": "default",
                    "LABELS": {"app": "payment"},
                    "LOCAL_OUTBOUND_PORT": str(free_port()),
                    "LOCAL_APP_ADDRESS": APP,
                    "INTERCEPTION_MODE": "NONE",
                },
            ),
            service_account="payment",
            identity="spiffe://cluster.local/ns/default/sa/payment",
        )
        bootstrap = static_bootstrap(SnapshotCompiler(store.snapshot).compile(proxy))
        issued = workload.ca.issue(Identity("cluster.local", "default", "payment"))
        bootstrap["staticResources"]["secrets"] = [
            json_format.MessageToDict(
                certificate_secret(issued.cert_chain_pem, issued.private_key_pem)
            ),
            json_format.MessageToDict(root_secret(workload.ca.root_certs_pem)),
        ]
        bootstrap["admin"] = {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}
        }
        bootstrap = json.loads(json.dumps(bootstrap))  # plain dicts for the YAML writer
        # One payment Envoy at a time: they bind the same listener address, and Envoy's
        # listeners share a port (SO_REUSEPORT), so an earlier one would take some requests.
        while started:
            started.pop().stop()
        envoy = EnvoyProcess(bootstrap, workload.workdir, name=f"payment-{next(names)}")
        started.append(envoy.start())
        envoy.wait_live()
        return Running(envoy, workload)

    yield start
    for envoy in started:
        envoy.stop()


def test_a_principal_of_the_new_trust_domain_admits_peers_of_its_aliases(run: Any) -> None:
    # The certificates say cluster.local; the mesh moved to td-new and keeps cluster.local
    # as an alias: a policy written for td-new admits the order service (istiod's bundle).
    aliased = run(
        MeshConfigSpec(trust_domain="td-new", trust_domain_aliases=["cluster.local"]),
        "default",
        "td-new/ns/default/sa/order-service",
    )
    assert aliased.status("order-service") == 200
    assert aliased.status("web") == 403


def test_without_the_alias_the_same_policy_admits_nobody_here(run: Any) -> None:
    plain = run(
        MeshConfigSpec(trust_domain="td-new"), "default", "td-new/ns/default/sa/order-service"
    )
    assert plain.status("order-service") == 403


def test_a_policy_in_the_mesh_config_root_namespace_applies_to_the_workload(run: Any) -> None:
    root = MeshConfigSpec(root_namespace="mesh-root")
    mesh_wide = run(root, "mesh-root", "cluster.local/ns/default/sa/order-service")
    assert mesh_wide.status("web") == 403  # the mesh-wide ALLOW applies here
    assert mesh_wide.status("order-service") == 200
    # istio-system is not the root any more: a policy there applies to istio-system only.
    elsewhere = run(root, "istio-system", "cluster.local/ns/default/sa/order-service")
    assert elsewhere.status("web") == 200
