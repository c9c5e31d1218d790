"""`controlplane describe` and `controlplane diff` against a real kube-apiserver: the mesh is
listed once with the kube client (read only: nothing in the cluster changes), and the
answers are the ones file mode gives for the same objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cluster.cluster import LocalCluster
from tests.kube.mesh import set_pod_ip
from tests.kube.operator import install_crds
from tests.support.meshes import BOOKINFO_PODS, bookinfo, jason_to_v2, split

# About a minute on the real apiserver: in the slow tier (CI runs it), so that a warm
# `make test` stays under ten minutes.
pytestmark = pytest.mark.slow


def _objects(text: str) -> list[dict]:
    """The bookinfo documents as the apiserver takes them: Pods need a container, and
    their service accounts must exist."""
    out = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc["kind"] == "Pod":
            doc.pop("status", None)
            doc["spec"]["containers"] = [{"name": "app", "image": "example/app:1"}]
        out.append(doc)
    return out


def _controlplane(kube_cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "controlplane", *args, "--cluster", "--kubeconfig",
         kube_cluster.kubeconfig],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_describe_and_diff_read_the_cluster_without_changing_it(
    kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path
) -> None:
    install_crds(kube_cluster)
    ns = kube_namespace
    accounts = sorted({f"bookinfo-{app}" for _, app, _ in BOOKINFO_PODS})
    kube_cluster.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": a, "namespace": ns}}
            for a in accounts
        ]
    )
    vs = split("reviews", {"v1": 90, "v2": 10}, first=[jason_to_v2()], namespace=ns)
    kube_cluster.apply(_objects(bookinfo("10.77.0.", namespace=ns)) + _objects(vs))
    for n, (name, _, _) in enumerate(BOOKINFO_PODS, start=1):
        set_pod_ip(kube_cluster, ns, name, f"10.77.0.{n}")
    before = kube_cluster.kubectl("get", "virtualservices,destinationrules,pods", "-n", ns,
                                  "-o", "json").stdout  # fmt: skip
    before_versions = {
        i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in json.loads(before)["items"]
    }

    described = _controlplane(kube_cluster, "describe", "pod", f"reviews-v1.{ns}", "-o", "json")
    assert described.returncode == 0, described.stderr
    pod = json.loads(described.stdout)
    assert pod["pod"]["identity"] == f"spiffe://cluster.local/ns/{ns}/sa/bookinfo-reviews"
    [svc] = pod["services"]
    assert [s["name"] for s in svc["destinationRule"]["subsets"] if s["matchesPod"]] == ["v1"]
    default_route = svc["virtualService"]["routes"][1]
    assert [(d["subset"], d["weight"], d["thisPod"]) for d in default_route["destinations"]] == [
        ("v1", 90, True),
        ("v2", 10, False),
    ]

    canary = tmp_path / "canary.yaml"
    canary.write_text(split("reviews", {"v1": 50, "v2": 50}, first=[jason_to_v2()], namespace=ns))
    diffed = _controlplane(kube_cluster, "diff", str(canary), "-o", "json")
    assert diffed.returncode == 0, diffed.stderr
    report = json.loads(diffed.stdout)
    assert report["proxies"] == 6
    assert {a["proxy"]: a["counts"] for a in report["affected"]} == {
        f"{ns}/{name}": {"cds": 0, "eds": 0, "lds": 0, "rds": 1} for name, _, _ in BOOKINFO_PODS
    }

    after = kube_cluster.kubectl("get", "virtualservices,destinationrules,pods", "-n", ns,
                                 "-o", "json").stdout  # fmt: skip
    assert {
        i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in json.loads(after)["items"]
    } == before_versions  # read only
