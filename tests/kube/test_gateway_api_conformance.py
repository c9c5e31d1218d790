"""The Gateway API conformance suite's core tests, status half, on the real apiserver (slow).

See tests/kube/conformance.py for what is checked. The test prints the table the README
carries (and writes it to $CONTROLPLANE_CONFORMANCE_TABLE when set). It fails when the
suite's core tests cannot be found or parsed, or their manifests are refused by the apiserver;
a core test whose status is not as expected is a row marked "fail" in the table, not a failure
of this test (the table is the yardstick: the README says how many pass).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from controlplane.api.gatewayapi import CONTROLLER_NAME
from tests.cluster import gateway_api
from tests.cluster.cluster import LocalCluster
from tests.kube import conformance

CLASS = "controlplane"


def _setup(kube_cluster: LocalCluster, root: Path) -> None:
    kube_cluster.apply(
        f"apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n"
        f"metadata: {{name: {CLASS}}}\nspec: {{controllerName: {CONTROLLER_NAME}}}\n"
    )
    base = conformance.render(root / "base" / "manifests.yaml", CLASS, CONTROLLER_NAME)
    kube_cluster.kubectl("apply", "-f", "-", input=base)
    # What the suite's setup creates before any test (suite.go).
    kube_cluster.apply(
        [
            conformance.self_signed_secret("gateway-conformance-web-backend", "certificate", ["*"]),
            conformance.self_signed_secret(
                "gateway-conformance-infra",
                "tls-validity-checks-certificate",
                ["*", "*.org", "*.wildcard.org"],
            ),
        ]
    )


def _run_all(
    kube_cluster: LocalCluster, tests: list[conformance.ConformanceTest]
) -> list[tuple[conformance.ConformanceTest, str, str]]:
    results = []
    for test in tests:
        verdict, detail = conformance.run_test(
            kube_cluster, test, CLASS, CONTROLLER_NAME, timeout=5.0
        )
        results.append((test, verdict, detail))
    return results


@pytest.mark.slow
def test_core_conformance_tests_status(kube_cluster: LocalCluster, operator) -> None:
    root = gateway_api.conformance_dir()
    tests = conformance.core_tests(root)
    assert len(tests) >= 30, [t.short_name for t in tests]
    _setup(kube_cluster, root)
    results = _run_all(kube_cluster, tests)
    text = conformance.table(results)
    passed = sum(1 for _, v, _ in results if v == "pass")
    summary = f"core conformance tests (status): {passed} pass, {len(results) - passed} fail"
    print("\n" + text + "\n" + summary)
    out = os.environ.get("CONTROLPLANE_CONFORMANCE_TABLE")
    if out:
        Path(out).write_text(text + "\n\n" + summary + "\n")
    assert len(results) == len(tests)


@pytest.mark.slow
def test_tls_and_tcp_route_conformance_tests_status(kube_cluster: LocalCluster, operator) -> None:
    """Part "gwroutes": the suite's TLSRoute and TCPRoute tests (Extended), status half, as
    the core ones above: the TLSRoute and TCPRoute CRDs of the pinned release are installed
    (standard channel, v1), watched, and their status written by the leader. Its table goes
    to $CONTROLPLANE_CONFORMANCE_L4_TABLE."""
    root = gateway_api.conformance_dir()
    tests = conformance.l4_tests(root)
    assert len(tests) >= 15, [t.short_name for t in tests]
    _setup(kube_cluster, root)
    results = _run_all(kube_cluster, tests)
    text = conformance.table(results, "TLSRoute / TCPRoute conformance test")
    passed = sum(1 for _, v, _ in results if v == "pass")
    summary = f"TLSRoute/TCPRoute conformance tests (status): {passed} pass, "
    summary += f"{len(results) - passed} fail"
    print("\n" + text + "\n" + summary)
    out = os.environ.get("CONTROLPLANE_CONFORMANCE_L4_TABLE")
    if out:
        Path(out).write_text(text + "\n\n" + summary + "\n")
    # The TLSRoute tests this controller is built for pass: a passthrough route attached,
    # and a route whose hostname no listener allows refused.
    verdicts = {t.short_name: v for t, v, _ in results}
    assert verdicts.get("TLSRouteSimpleSameNamespace") == "pass", text
    assert verdicts.get("TLSRouteInvalidNoMatchingListenerHostname") == "pass", text


def _parents_accepted(cluster: LocalCluster, resource: str, name: str, ns: str) -> bool:
    proc = cluster.kubectl("get", resource, name, "-n", ns, "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    parents = (json.loads(proc.stdout).get("status") or {}).get("parents") or []
    return bool(parents) and all(
        {c["type"]: c["status"] for c in p.get("conditions") or []}.get("Accepted") == "True"
        for p in parents
    )


@pytest.mark.slow
def test_the_experimental_channels_alpha_tls_and_tcp_routes_are_read(
    kube_cluster: LocalCluster, operator, kube_namespace: str
) -> None:
    """With the experimental channel's TLSRoute and TCPRoute CRDs of the pinned release
    (they also serve v1alpha2, and TLSRoute v1alpha3), routes written at those versions are
    watched and get their status (the watch reads v1, which those CRDs serve too)."""
    crds = gateway_api.experimental_crd_dir()
    files = [crds / f"gateway.networking.k8s.io_{p}.yaml" for p in ("tlsroutes", "tcproutes")]
    args = [a for f in files for a in ("-f", str(f))]
    # Upstream's safe-upgrades admission policy refuses experimental CRDs over standard ones:
    # replace them (as its message tells users to do), and put the standard ones back after.
    kube_cluster.kubectl("delete", "--wait=true", *args)
    kube_cluster.kubectl("create", *args)
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *args)
    ns = kube_namespace
    try:
        kube_cluster.apply(
            [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "be", "namespace": ns},
                 "spec": {"ports": [{"port": 443}]}},
                {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                 "metadata": {"name": "l4", "namespace": ns},
                 "spec": {"gatewayClassName": "istio", "listeners": [
                     {"name": "tls", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
                     {"name": "tcp", "port": 9000, "protocol": "TCP"}]}},
                {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TLSRoute",
                 "metadata": {"name": "alpha2", "namespace": ns},
                 "spec": {"parentRefs": [{"name": "l4", "sectionName": "tls"}],
                          "hostnames": ["a.example.com"],
                          "rules": [{"backendRefs": [{"name": "be", "port": 443}]}]}},
                {"apiVersion": "gateway.networking.k8s.io/v1alpha3", "kind": "TLSRoute",
                 "metadata": {"name": "alpha3", "namespace": ns},
                 "spec": {"parentRefs": [{"name": "l4", "sectionName": "tls"}],
                          "hostnames": ["b.example.com"],
                          "rules": [{"backendRefs": [{"name": "be", "port": 443}]}]}},
                {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
                 "metadata": {"name": "alpha2", "namespace": ns},
                 "spec": {"parentRefs": [{"name": "l4", "sectionName": "tcp"}],
                          "rules": [{"backendRefs": [{"name": "be", "port": 443}]}]}},
            ]
        )  # fmt: skip
        deadline = time.time() + 30
        wanted = [
            ("tlsroutes.v1alpha2.gateway.networking.k8s.io", "alpha2"),
            ("tlsroutes.v1alpha3.gateway.networking.k8s.io", "alpha3"),
            ("tcproutes.v1alpha2.gateway.networking.k8s.io", "alpha2"),
        ]
        while time.time() < deadline:
            if all(_parents_accepted(kube_cluster, r, n, ns) for r, n in wanted):
                break
            time.sleep(0.5)
        missing = [(r, n) for r, n in wanted if not _parents_accepted(kube_cluster, r, n, ns)]
        assert not missing, missing
        gw = kube_cluster.get_json("gateways.gateway.networking.k8s.io", "l4", "-n", ns)
        attached = {entry["name"]: entry["attachedRoutes"] for entry in gw["status"]["listeners"]}
        assert attached == {"tls": 2, "tcp": 1}, gw["status"]
    finally:
        # Back to the standard channel, as the other tests of the session expect.
        from tests.kube.operator import install_crds

        kube_cluster.kubectl("delete", "--wait=true", "--ignore-not-found", *args)
        install_crds(kube_cluster)
