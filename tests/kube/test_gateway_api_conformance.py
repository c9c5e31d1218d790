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


@pytest.mark.slow
def test_core_conformance_tests_status(kube_cluster: LocalCluster, operator) -> None:
    root = gateway_api.conformance_dir()
    tests = conformance.core_tests(root)
    assert len(tests) >= 30, [t.short_name for t in tests]
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
    results = []
    for test in tests:
        verdict, detail = conformance.run_test(
            kube_cluster, test, CLASS, CONTROLLER_NAME, timeout=5.0
        )
        results.append((test, verdict, detail))
    text = conformance.table(results)
    passed = sum(1 for _, v, _ in results if v == "pass")
    summary = f"core conformance tests (status): {passed} pass, {len(results) - passed} fail"
    print("\n" + text + "\n" + summary)
    out = os.environ.get("CONTROLPLANE_CONFORMANCE_TABLE")
    if out:
        Path(out).write_text(text + "\n\n" + summary + "\n")
    assert len(results) == len(tests)
