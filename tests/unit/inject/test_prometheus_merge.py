"""Istio's metrics merge at injection: the Pod's prometheus.io annotations point at the merged
endpoint (15020), the application's own move into the proxy's ISTIO_PROMETHEUS_ANNOTATIONS,
and the proxy exposes Envoy's statistics as the ``http-envoy-prom`` port (as istiod's
pkg/kube/inject testdata: hello.yaml.injected, prometheus-scrape.yaml.injected)."""

from __future__ import annotations

import copy
import json
import re

import jsonpatch
import pytest

from controlplane.inject.bootstrap import STATS_TAGS
from controlplane.inject.injector import InjectionConfig, injection_patch
from controlplane.inject.prometheus import (
    SCRAPE_ENV,
    ScrapeConfigurationError,
    ScrapeTarget,
    scrape_target,
)


def pod(annotations: dict[str, str] | None = None) -> dict:
    meta: dict = {"name": "reviews-v1", "namespace": "shop"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "reviews", "image": "reviews:1"}]},
    }


def inject(body: dict, config: InjectionConfig | None = None) -> dict:
    ops = injection_patch(body, config or InjectionConfig())
    return jsonpatch.apply_patch(copy.deepcopy(body), ops)


def proxy(out: dict) -> dict:
    everything = out["spec"].get("initContainers", []) + out["spec"]["containers"]
    return next(c for c in everything if c["name"] == "istio-proxy")


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


MERGED = {
    "prometheus.io/port": "15020",
    "prometheus.io/path": "/stats/prometheus",
    "prometheus.io/scrape": "true",
}


def test_an_annotated_app_is_scraped_through_the_merged_endpoint():
    out = inject(
        pod(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9100",
                "prometheus.io/path": "/app-metrics",
                "team": "books",
            }
        )
    )
    annotations = out["metadata"]["annotations"]
    assert {k: annotations[k] for k in MERGED} == MERGED
    assert annotations["team"] == "books"
    moved = json.loads(env(proxy(out))[SCRAPE_ENV])
    assert moved == {"scrape": "true", "path": "/app-metrics", "port": "9100"}
    assert scrape_target(env(proxy(out))[SCRAPE_ENV]) == ScrapeTarget(9100, "/app-metrics")


def test_a_pod_without_scrape_annotations_is_annotated_for_envoys_metrics_alone():
    out = inject(pod())
    assert {k: out["metadata"]["annotations"][k] for k in MERGED} == MERGED
    assert SCRAPE_ENV not in env(proxy(out))


def test_the_proxy_exposes_envoys_statistics_as_http_envoy_prom():
    container = proxy(inject(pod()))
    assert container["ports"] == [
        {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}
    ]
    assert container["command"][-2:] == ["--status-port", "15020"]


def test_every_spelling_prometheus_accepts_is_replaced_by_ours():
    # Prometheus reads prometheus.io.port and prometheus-io/port as prometheus.io/port.
    out = inject(pod({"prometheus.io.port": "8080", "prometheus-io/path": "/m"}))
    annotations = out["metadata"]["annotations"]
    assert "prometheus.io.port" not in annotations and "prometheus-io/path" not in annotations
    assert {k: annotations[k] for k in MERGED} == MERGED
    assert json.loads(env(proxy(out))[SCRAPE_ENV]) == {"scrape": "", "path": "/m", "port": "8080"}


@pytest.mark.parametrize(
    "annotations",
    [
        {"prometheus.io/scrape": "false"},
        {"prometheus.io.scrape": "false", "prometheus.io/port": "9100"},
        {"prometheus.istio.io/merge-metrics": "false", "prometheus.io/port": "9100"},
    ],
)
def test_a_pod_that_opts_out_keeps_its_annotations(annotations):
    out = inject(pod(dict(annotations)))
    for key, value in annotations.items():
        assert out["metadata"]["annotations"][key] == value
    assert "prometheus.io/path" not in out["metadata"]["annotations"]
    assert SCRAPE_ENV not in env(proxy(out))


def test_the_mesh_can_turn_the_merge_off():
    out = inject(pod({"prometheus.io/port": "9100"}), InjectionConfig(prometheus_merge=False))
    assert out["metadata"]["annotations"]["prometheus.io/port"] == "9100"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {"prometheus.io/port": "15090"},
            r"metadata.annotations\[prometheus.io/port\]: 15090 is the proxy's port",
        ),
        (
            {"prometheus.io/port": "http"},
            r"metadata.annotations\[prometheus.io/port\]: 'http' is not a port number",
        ),
        (
            {"prometheus.istio.io/merge-metrics": "maybe"},
            r"metadata.annotations\[prometheus.istio.io/merge-metrics\]: 'maybe' is not a boolean",
        ),
    ],
)
def test_annotations_that_cannot_be_merged_refuse_injection_naming_the_annotation(
    annotations, message
):
    with pytest.raises(ScrapeConfigurationError, match=message):
        injection_patch(pod(annotations), InjectionConfig())


def test_a_pod_already_pointing_at_the_merged_endpoint_is_left_alone():
    out = inject(pod(dict(MERGED)))
    assert {k: out["metadata"]["annotations"][k] for k in MERGED} == MERGED
    assert SCRAPE_ENV not in env(proxy(out))


def _cluster_tag(stat: str) -> tuple[str, str] | None:
    """What Envoy's extractor does with the cluster_name tag: (name left, tag value)."""
    regex = next(t["regex"] for t in STATS_TAGS if t["tag_name"] == "cluster_name")
    match = re.search(regex, stat)
    if match is None:
        return None
    return stat[: match.start(1)] + stat[match.end(1) :], match.group(2)


@pytest.mark.parametrize(
    ("stat", "name", "cluster"),
    [
        (
            "cluster.outbound|9080|v1|reviews.default.svc.cluster.local.upstream_rq_total",
            "cluster.upstream_rq_total",
            "outbound|9080|v1|reviews.default.svc.cluster.local",
        ),
        (
            "cluster.outbound|9080||reviews.internal.svc.cluster.local.default.total_match_count",
            "cluster.default.total_match_count",
            "outbound|9080||reviews.internal.svc.cluster.local",
        ),
        (
            "cluster.outbound|443||api.example.com.ssl.handshake",
            "cluster.ssl.handshake",
            "outbound|443||api.example.com",
        ),
        (
            "cluster.outbound|443||api.example.com.circuit_breakers.default.cx_open",
            "cluster.circuit_breakers.default.cx_open",
            "outbound|443||api.example.com",
        ),
        ("cluster.inbound|9080||.upstream_cx_total", "cluster.upstream_cx_total", "inbound|9080||"),
        ("cluster.xds-grpc.upstream_rq_200", "cluster.upstream_rq_200", "xds-grpc"),
    ],
)
def test_the_cluster_name_tag_keeps_the_whole_cluster_name(stat, name, cluster):
    assert _cluster_tag(stat) == (name, cluster)


def _tag(tag_name: str, stat: str) -> tuple[str, str] | None:
    regex = next(t["regex"] for t in STATS_TAGS if t["tag_name"] == tag_name)
    match = re.search(regex, stat)
    if match is None:
        return None
    return stat[: match.start(1)] + stat[match.end(1) :], match.group(2)


@pytest.mark.parametrize(
    ("tag_name", "stat", "expected"),
    [
        (
            "http_conn_manager_prefix",
            "http.outbound_0.0.0.0_9080.downstream_rq_2xx",
            ("http.downstream_rq_2xx", "outbound_0.0.0.0_9080"),
        ),
        (
            "http_conn_manager_prefix",
            "http.inbound_10.1.2.3_9080.downstream_rq_total",
            ("http.downstream_rq_total", "inbound_10.1.2.3_9080"),
        ),
        (
            "http_conn_manager_prefix",
            "http.admin.downstream_rq_total",
            ("http.downstream_rq_total", "admin"),
        ),
        (
            "tcp_prefix",
            "tcp.outbound|9000|v1|tcp-echo.default.svc.cluster.local.downstream_cx_total",
            ("tcp.downstream_cx_total", "outbound|9000|v1|tcp-echo.default.svc.cluster.local"),
        ),
        ("response_code_class", "cluster.upstream_rq_5xx", ("cluster.upstream_rq", "5xx")),
    ],
)
def test_connection_manager_and_tcp_prefixes_are_labels_not_metric_names(tag_name, stat, expected):
    assert _tag(tag_name, stat) == expected
