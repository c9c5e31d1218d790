"""`controlplane diff FILE...`: on the bookinfo mesh, a weight change changes exactly the RDS
of the clients that see the host (counts by workload), a readable diff for a chosen proxy,
and a broken file gives analyze's findings and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.analyze.diff import counts_by_workload, diff
from controlplane.analyze.loading import load_paths
from controlplane.cli.main import main
from tests.support.meshes import bookinfo, jason_to_v2, join, pod, resource, split

# ratings calls nobody: its Sidecar imports only its own namespace's details service, so a
# change of reviews' routing must not reach it.
RATINGS_SIDECAR = resource(
    "Sidecar",
    "ratings",
    {
        "workloadSelector": {"labels": {"app": "ratings"}},
        "egress": [{"hosts": ["./details.default.svc.cluster.local"]}],
    },
)


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    root = tmp_path / "mesh"
    root.mkdir()
    (root / "bookinfo.yaml").write_text(bookinfo())
    (root / "reviews-vs.yaml").write_text(
        split("reviews", {"v1": 90, "v2": 10}, first=[jason_to_v2()])
    )
    (root / "ratings-sidecar.yaml").write_text(RATINGS_SIDECAR)
    return root


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    path = tmp_path / "canary.yaml"
    path.write_text(split("reviews", {"v1": 50, "v2": 50}, first=[jason_to_v2()]))
    return path


def test_a_weight_change_changes_exactly_the_rds_of_the_clients_that_see_the_host(
    mesh: Path, canary: Path
) -> None:
    report = diff(load_paths([mesh]), [canary])
    assert report.total_proxies == 6
    clients = ["productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3"]
    assert counts_by_workload(report) == {f"default/{c}": {"rds": 1} for c in clients}
    for change in report.proxies:
        assert change.changed == {"rds": ["9080"]} and not change.added and not change.removed
    # The mesh had one warning before (ratings' Sidecar hides the reviews VirtualService:
    # CP0561); the change adds none.
    assert [i.code.id for i in report.findings] == ["CP0561"]
    assert report.new_findings == set()
    assert report.exit_status() == 0


def test_the_chosen_proxy_gets_a_readable_diff_of_the_weights(
    mesh: Path, canary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["diff", str(canary), "-d", str(mesh), "--proxy", "default/productpage-v1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "5 of 6 proxies would change:" in out
    assert "default/ratings-v1" not in out
    assert "   total: 5 RDS" in out
    assert "--- before rds 9080\n+++ after rds 9080\n" in out
    assert '"name": "outbound|9080|v1|reviews.default.svc.cluster.local",\n-' in out
    assert '-                  "weight": 90\n+                  "weight": 50\n' in out
    assert '-                  "weight": 10\n+                  "weight": 50\n' in out


def test_no_change_changes_nothing(mesh: Path, tmp_path: Path) -> None:
    same = tmp_path / "same.yaml"
    same.write_text((mesh / "reviews-vs.yaml").read_text())
    report = diff(load_paths([mesh]), [same])
    assert report.proxies == [] and report.total_proxies == 6


def test_a_new_subset_route_adds_clusters_only_where_seen(mesh: Path, tmp_path: Path) -> None:
    # A DestinationRule for ratings with a subset: new CDS (and EDS) for every proxy that sees
    # ratings; ratings' own Sidecar does not import it.
    dr = tmp_path / "ratings-dr.yaml"
    dr.write_text(
        resource(
            "DestinationRule",
            "ratings",
            {"host": "ratings", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
        )
    )
    report = diff(load_paths([mesh]), [dr])
    counts = counts_by_workload(report)
    assert "default/ratings-v1" not in counts
    name = "outbound|9080|v1|ratings.default.svc.cluster.local"
    for change in report.proxies:
        assert change.added["cds"] == [name] and change.added["eds"] == [name]


BROKEN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -5
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: default}
spec:
  hosts: [details]
  http:
  - route:
    - destination: {host: details, subset: v9}
"""


def test_a_broken_file_reports_the_findings_and_fails(
    mesh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    code = main(["diff", str(broken), "-d", str(mesh), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    found = {(f["code"], f["resource"], f["path"], f["new"]) for f in out["findings"]}
    # The refused VirtualService (its last good version stays) and the missing subset
    # (IST0101 ReferencedResourceNotFound in istioctl), as analyze reports them.
    assert (
        "CP0201",
        "VirtualService default/reviews",
        "spec.http[0].route[0].weight",
        True,
    ) in found
    assert any(c == "CP0301" and r == "VirtualService default/details" for c, r, _, _ in found)
    # Both are refused, as when serving: reviews keeps its last good routes, details gets
    # none of the broken one, so no proxy would change; the findings say why.
    assert out["affected"] == []
    assert out["proxies"] == 6


def test_findings_match_analyze_on_the_same_files(mesh: Path, tmp_path: Path) -> None:
    from controlplane.analyze import analyze

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN.split("---")[1])
    report = diff(load_paths([mesh]), [broken])
    alone = analyze([mesh, broken])
    assert {(i.code.id, str(i.resource), i.path) for i in report.findings} == {
        (i.code.id, str(i.resource), i.path) for i in alone.issues
    }


def _gateway_vs(v1: int, v2: int) -> str:
    return resource(
        "VirtualService",
        "reviews-ingress",
        {
            "hosts": ["reviews.example.com"],
            "gateways": ["reviews-gateway"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": v2},
                    ]
                }
            ],
        },
    )


GATEWAY = join(
    resource(
        "Gateway",
        "reviews-gateway",
        {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {
                    "port": {"number": 8080, "name": "http", "protocol": "HTTP"},
                    "hosts": ["reviews.example.com"],
                }
            ],
        },
    ),
    pod("ingressgateway-1", "10.0.0.100", labels={"istio": "ingressgateway"}),
)


def test_a_gateway_route_change_reaches_only_the_gateway_proxy(mesh: Path, tmp_path: Path) -> None:
    (mesh / "gateway.yaml").write_text(join(GATEWAY, _gateway_vs(90, 10)))
    changed = tmp_path / "ingress-canary.yaml"
    changed.write_text(_gateway_vs(50, 50))
    report = diff(load_paths([mesh]), [changed])
    assert report.total_proxies == 7
    assert counts_by_workload(report) == {"default/ingressgateway-1": {"rds": 1}}


def test_proxies_are_counted_by_workload_as_istiod_names_it(mesh: Path, canary: Path) -> None:
    # Two replicas of one Deployment (ReplicaSet pods: <deployment>-<pod-template-hash>-<x>)
    # and a pod named by the workload-name label.
    replicas = join(
        *(
            pod(
                f"productpage-v2-5d4f8b7c9-{suffix}",
                f"10.0.1.{n}",
                app="productpage",
                version="v2",
                labels={"pod-template-hash": "5d4f8b7c9"},
            )
            for n, suffix in enumerate(("x7k2p", "q9w4z"), start=1)
        ),
        pod(
            "batch-1",
            "10.0.1.9",
            app="batch",
            labels={"service.istio.io/workload-name": "nightly-report"},
        ),
    )
    (mesh / "replicas.yaml").write_text(replicas)
    report = diff(load_paths([mesh]), [canary])
    rows = report.by_workload()
    assert rows["default/productpage-v2"] == {"proxies": 2, "cds": 0, "eds": 0, "lds": 0, "rds": 2}
    assert rows["default/nightly-report"]["proxies"] == 1
    assert rows["default/productpage-v1"]["proxies"] == 1
    assert report.total_proxies == 9


def test_a_fixed_resource_loses_the_findings_of_its_old_version(mesh: Path, tmp_path: Path) -> None:
    # Istio's field the compiler does not implement yet (CP0202, a warning) in the current
    # reviews route; the change drops it.
    old = split("reviews", {"v1": 90, "v2": 10}).replace(
        "      weight: 10\n",
        "      weight: 10\n    retries: {attempts: 2, retryIgnorePreviousHosts: true}\n",
    )
    assert "retryIgnorePreviousHosts" in old
    (mesh / "reviews-vs.yaml").write_text(old)
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(split("reviews", {"v1": 90, "v2": 10}))
    loaded = load_paths([mesh])
    assert "CP0202" in {i.code.id for i in loaded.read.issues}
    report = diff(loaded, [fixed])
    assert "CP0202" not in {i.code.id for i in report.findings}
    # The field had no effect (not implemented), so dropping it changes no proxy.
    assert report.proxies == []


def test_deleting_the_canary_route_changes_the_clients_routes_back(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["diff", "--delete", "VirtualService/default/reviews", "-d", str(mesh), "-o", "json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    clients = ["details-v1", "productpage-v1", "reviews-v1", "reviews-v2", "reviews-v3"]
    assert {a["proxy"]: a["changed"] for a in out["affected"]} == {
        f"default/{c}": {"rds": ["9080"]} for c in clients
    }
    # The Sidecar's warning about hiding that VirtualService goes with it.
    assert [f["code"] for f in out["findings"]] == []
    assert main(["diff", "--delete", "VirtualService/reviews/x/y", "-d", str(mesh)]) == 2
