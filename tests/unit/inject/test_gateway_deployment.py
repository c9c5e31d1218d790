"""A Gateway -> its ServiceAccount, Deployment and Service (istiod's automated deployment)."""

from __future__ import annotations

from controlplane.inject.gateway_deployment import (
    deployment,
    gateway_addresses,
    is_managed,
    rendered,
    service_ports,
)
from controlplane.inject.injector import InjectionConfig


def gw(**spec):
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop", "uid": "u-1"},
        "spec": {"gatewayClassName": "istio", **spec},
    }


def test_service_ports_have_the_status_port_and_one_port_per_distinct_listener_port():
    listeners = [
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "http-b", "port": 80, "protocol": "HTTP", "hostname": "b.example.com"},
        {"name": "https", "port": 443, "protocol": "HTTPS"},
    ]
    ports = service_ports(gw(listeners=listeners))
    assert [(p["name"], p["port"], p["appProtocol"]) for p in ports] == [
        ("status-port", 15021, "tcp"),
        ("http", 80, "http"),
        ("https", 443, "https"),
    ]


def test_a_hostname_address_or_several_addresses_mean_a_gateway_deployed_by_hand():
    assert is_managed(gw())
    assert is_managed(gw(addresses=[{"type": "IPAddress", "value": "10.0.0.1"}]))
    assert not is_managed(gw(addresses=[{"type": "Hostname", "value": "lb.example.com"}]))
    assert not is_managed(gw(addresses=[{"value": "10.0.0.1"}, {"value": "10.0.0.2"}]))


def test_every_object_is_owned_by_the_gateway_and_runs_the_injectors_image():
    config = InjectionConfig(image="registry.example/proxy:9")
    objs = rendered(gw(listeners=[{"name": "http", "port": 80, "protocol": "HTTP"}]), config)
    assert [o["kind"] for o in objs] == ["ServiceAccount", "Deployment", "Service"]
    for obj in objs:
        assert obj["metadata"]["name"] == "edge-istio"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    [proxy] = deployment(gw(), config)["spec"]["template"]["spec"]["containers"]
    assert proxy["image"] == "registry.example/proxy:9"
    assert proxy["command"][:2] == ["controlplane", "gateway"]


def test_status_addresses_prefer_the_load_balancer_then_the_cluster_ip():
    svc = {"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"]}}
    assert gateway_addresses(svc) == [{"type": "IPAddress", "value": "10.96.0.5"}]
    svc["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
    assert gateway_addresses(svc) == [{"type": "Hostname", "value": "lb.example.com"}]


def test_the_gateway_pod_exposes_envoys_statistics_and_is_annotated_for_scraping():
    # As istiod's kube-gateway template: http-envoy-prom on the proxy, the scrape
    # annotations on the pod pointing at the merged endpoint (Envoy's statistics alone).
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP"}]
    template = deployment(gw(listeners=listeners), InjectionConfig())["spec"]["template"]
    [proxy] = template["spec"]["containers"]
    assert proxy["ports"][-1] == {
        "name": "http-envoy-prom",
        "containerPort": 15090,
        "protocol": "TCP",
    }
    assert "--status-port=15020" in proxy["command"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/path": "/stats/prometheus",
        "prometheus.io/port": "15020",
        "prometheus.io/scrape": "true",
    }
