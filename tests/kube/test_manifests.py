"""The generated CRDs and the kustomize base, checked by the real apiserver."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.cluster import LocalCluster
from tests.kube.operator import install_crds

ROOT = Path(__file__).resolve().parents[2]


def test_the_crds_apply_and_kubectl_explain_shows_their_schema(kube_cluster: LocalCluster):
    install_crds(kube_cluster)
    for name in (
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "peerauthentications.security.istio.io",
        "authorizationpolicies.security.istio.io",
    ):
        crd = kube_cluster.get_json("crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True"
        assert conditions.get("NonStructuralSchema") is None  # the apiserver found it structural
    deadline = time.monotonic() + 30
    while True:  # the OpenAPI of a new CRD is published a moment after it is established
        proc = kube_cluster.kubectl("explain", "virtualservices.spec.http.route", check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr
    assert "weight\t<integer>" in proc.stdout and "destination\t<Object>" in proc.stdout
    assert "relative share of traffic" in proc.stdout
    older = kube_cluster.kubectl(
        "explain", "destinationrules.spec.subsets", "--api-version=networking.istio.io/v1alpha3"
    ).stdout
    assert "labels\t<map[string]string>" in older


def test_the_kustomize_base_passes_a_server_side_dry_run(kube_cluster: LocalCluster):
    # The namespace must exist for a dry run of the objects in it (nothing else is created).
    kube_cluster.kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    proc = kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests"), "--dry-run=server")
    out = proc.stdout
    for expected in (
        "serviceaccount/controlplane",
        "clusterrole.rbac.authorization.k8s.io/controlplane",
        "clusterrolebinding.rbac.authorization.k8s.io/controlplane",
        "deployment.apps/controlplane",
        "service/controlplane",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/controlplane-validation",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/controlplane-sidecar-injector",
        "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io",
    ):
        assert expected in out, out
    assert "(server dry run)" in out and not proc.stderr.strip()
    assert (
        kube_cluster.kubectl("get", "deployment", "-n", "istio-system", "-o", "name").stdout == ""
    )
    secret = subprocess.run(
        [sys.executable, "-m", "controlplane", "webhook-cert"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=secret).stdout
    assert "secret/controlplane-webhook-tls created (server dry run)" in out
