"""The Gateway API conformance suite's core tests, status half, on the real apiserver (slow).

See tests/kube/conformance.py for what is checked. The test prints the table the README
carries (and writes it to $CONTROLPLANE_CONFORMANCE_TABLE when set). It fails when the
suite's core tests cannot be found or parsed, or their manifests are refused by the apiserver;
a core test whose status is not as expected is a row marked "fail" in the table, not a failure
of this test (the table is the yardstick: the README says how many pass).
"""

from __future__ import annotations

import os
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
