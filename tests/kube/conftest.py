"""Fixtures for tests against a real kube-apiserver + etcd (see tests/cluster/cluster.py).

* Every test under tests/kube is marked ``kube`` (so ``-m "not kube"`` skips them all).
* Binaries are built (first run only, several minutes) after collection and before any test
  runs, so the build does not count against a test's timeout; a cached run does not need Go.
* ``kube_cluster`` (session): one LocalCluster for the whole session, stopped at the end.
* ``kube_namespace`` (function): a fresh namespace (random name, with a ``default``
  ServiceAccount), deleted afterwards the way the namespace controller would.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.cluster.cluster import (
    ClusterError,
    LocalCluster,
    binaries_present,
    ensure_binaries,
)

KUBE_DIR = Path(__file__).resolve().parent
_build_error = pytest.StashKey[str]()
_start_seconds = pytest.StashKey[float]()


def _under_kube_dir(item: pytest.Item) -> bool:
    try:
        return Path(str(item.path)).resolve().is_relative_to(KUBE_DIR)
    except (OSError, ValueError):
        return False


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _under_kube_dir(item):
            item.add_marker(pytest.mark.kube)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any(_under_kube_dir(i) for i in session.items) or binaries_present():
        return
    capman = session.config.pluginmanager.getplugin("capturemanager")
    show = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
    try:
        with show:  # the first build takes minutes: let its progress through
            ensure_binaries()
    except ClusterError as e:
        session.config.stash[_build_error] = str(e)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    seconds = config.stash.get(_start_seconds, None)
    if seconds is not None:
        terminalreporter.write_line(f"kube cluster: started in {seconds:.2f}s (LocalCluster)")


@pytest.fixture(scope="session")
def kube_cluster(pytestconfig: pytest.Config):
    """A running LocalCluster (etcd + kube-apiserver on loopback), shared by the session."""
    error = pytestconfig.stash.get(_build_error, None)
    if error:
        pytest.fail(f"building the kube binaries failed: {error}", pytrace=False)
    cluster = LocalCluster()
    pytestconfig.stash[_start_seconds] = cluster.start_seconds or 0.0
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: LocalCluster):
    """Name of a fresh namespace (with a ``default`` ServiceAccount), deleted after the test."""
    name = kube_cluster.create_namespace()
    try:
        yield name
    finally:
        if kube_cluster.running:
            kube_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(kube_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory):
    """`controlplane run` (with its admission webhooks) against the session's cluster.

    Module-scoped: started once per test module. Its webhook configurations are removed
    afterwards so that tests elsewhere see a cluster without them.
    """
    from tests.kube.operator import OperatorProcess, install_crds, remove_webhook_configurations

    install_crds(kube_cluster)
    # As manifests/namespace.yaml: the control plane's namespace, where the mesh CA's Secret lives.
    kube_cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
    )
    process = OperatorProcess(kube_cluster, tmp_path_factory.mktemp("operator"))
    try:
        process.start()
        yield process
    finally:
        process.stop()
        if kube_cluster.running:
            remove_webhook_configurations(kube_cluster)


@pytest.fixture
def reviews(kube_cluster: LocalCluster, kube_namespace: str, operator, tmp_path: Path):
    """reviews v1/v2 (Service, Pods with IPs, DestinationRule, live backends) and a real Envoy
    as the productpage Pod's sidecar. Yields (namespace, sidecar)."""
    from controlplane.testing.ports import free_port
    from tests.kube.mesh import (
        CLIENT_IP,
        IPS,
        destination_rule,
        service_and_pods,
        set_pod_ip,
        start_backends,
        start_sidecar,
    )

    ns = kube_namespace
    port = free_port()
    backends = start_backends(port, IPS)
    kube_cluster.apply(service_and_pods(ns, port, IPS))
    for version, ip in IPS.items():
        set_pod_ip(kube_cluster, ns, f"reviews-{version}", ip)
    set_pod_ip(kube_cluster, ns, "productpage", CLIENT_IP)
    kube_cluster.apply(destination_rule(ns, "v1", "v2"))
    sidecar = start_sidecar(
        operator, ns, "productpage", CLIENT_IP, {"app": "productpage"}, tmp_path
    )
    try:
        yield ns, sidecar
    finally:
        sidecar.envoy.stop()
        for backend in backends:
            backend.stop()
