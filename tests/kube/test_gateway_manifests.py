"""The ingress-gateway kustomize component with the base, checked by the real apiserver (a
module of its own: no operator here, so no webhook configurations of a running one)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cluster.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]


def test_the_ingress_gateway_component_passes_a_server_side_dry_run(
    kube_cluster: LocalCluster, tmp_path: Path
) -> None:
    kube_cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}
    )
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize takes relative paths only: as a user's overlay would name the base.
    manifests = Path(os.path.relpath(ROOT / "manifests", overlay))
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{manifests}]\ncomponents: [{manifests / 'components' / 'ingress-gateway'}]\n"
    )
    proc = kube_cluster.kubectl("apply", "-k", str(overlay), "--dry-run=server")
    for expected in (
        "deployment.apps/istio-ingressgateway",
        "service/istio-ingressgateway",
        "serviceaccount/istio-ingressgateway",
        "customresourcedefinition.apiextensions.k8s.io/gateways.networking.istio.io",
    ):
        assert expected in proc.stdout, proc.stdout
    assert not proc.stderr.strip(), proc.stderr
