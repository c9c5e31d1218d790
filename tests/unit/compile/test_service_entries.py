"""ServiceEntry hosts compiled as istiod compiles them: cluster types by resolution, literal
domains, SNI chains on 0.0.0.0_<port>, no automatic mTLS outside the mesh, WorkloadEntries as
endpoints; and the outbound traffic policy (ALLOW_ANY / REGISTRY_ONLY) from the mesh config."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from controlplane.api import load
from controlplane.api.base import ObjectMeta
from controlplane.api.mesh import MESH_CONFIG_KEY, MeshConfig, MeshConfigSpec, OutboundTrafficPolicy
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.store import Snapshot, Store, Submission
from tests.unit.compile.helpers import compiled, local_proxy

ENTRIES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr, namespace: default}
spec:
  hosts: [rr.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [any.example.com]
  addresses: [240.1.0.1]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: default}
spec:
  hosts: [vm.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: vm}}
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/legacy"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: default}
spec:
  address: 10.5.0.1
  ports: {http: 9090}
  labels: {app: vm, security.istio.io/tlsMode: istio}
  locality: eu-west1/eu-west1-a
  weight: 3
  serviceAccount: vm-sa
"""


def snapshot(*documents: str, mode: str | None = None) -> Snapshot:
    subs = []
    for text in documents:
        for doc in yaml.safe_load_all(textwrap.dedent(text)):
            if doc:
                resource, issues = load(doc)
                subs.append(Submission(resource, tuple(issues)))
    if mode is not None:
        mesh = MeshConfig(
            metadata=ObjectMeta(name=MESH_CONFIG_KEY.name, namespace=MESH_CONFIG_KEY.namespace),
            spec=MeshConfigSpec(outbound_traffic_policy=OutboundTrafficPolicy(mode=mode)),  # type: ignore[arg-type]
        )
        subs.append(Submission(mesh, ()))
    store = Store()
    store.apply(upserts=subs)
    return store.snapshot


def transparent(trust: bool = True) -> Proxy:
    proxy = proxy_from_node("sidecar~10.1.0.5~client.default~default.svc.cluster.local", {})
    if trust:
        from dataclasses import replace

        proxy = replace(proxy, identity="spiffe://cluster.local/ns/default/sa/default")
    return proxy


def test_dns_resolutions_become_strict_and_logical_dns_clusters_with_inline_endpoints() -> None:
    out = compiled(snapshot(ENTRIES), transparent())
    strict = out["cds"]["outbound|80||api.example.com"]
    assert strict["type"] == "STRICT_DNS"
    assert strict["dnsLookupFamily"] == "V4_ONLY"
    endpoint = strict["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]
    assert endpoint["address"]["socketAddress"] == {"address": "api.example.com", "portValue": 80}
    assert out["cds"]["outbound|80||rr.example.com"]["type"] == "LOGICAL_DNS"
    # Their endpoints travel in the cluster: EDS has no assignment for them.
    assert "outbound|80||api.example.com" not in out.get("eds", {})


def test_resolution_none_is_an_original_destination_cluster() -> None:
    out = compiled(snapshot(ENTRIES), transparent())
    cluster = out["cds"]["outbound|5432||any.example.com"]
    assert cluster["type"] == "ORIGINAL_DST"
    assert cluster["lbPolicy"] == "CLUSTER_PROVIDED"
    assert "edsClusterConfig" not in cluster
    # Its address is a VIP: the TCP port gets a listener of its own.
    assert "240.1.0.1_5432" in out["lds"]


def test_entry_hosts_are_literal_domains() -> None:
    out = compiled(snapshot(ENTRIES), transparent())
    hosts = {vh["name"]: vh["domains"] for vh in out["rds"]["80"]["virtualHosts"]}
    assert hosts["api.example.com:80"] == ["api.example.com"]


def test_https_hosts_without_addresses_are_routed_by_sni_on_the_wildcard_listener() -> None:
    out = compiled(snapshot(ENTRIES), transparent())
    listener = out["lds"]["0.0.0.0_443"]
    matches = [c.get("filterChainMatch", {}) for c in listener["filterChains"]]
    assert {"serverNames": ["api.example.com"], "transportProtocol": "tls"} in matches
    # What no host claims passes through (ALLOW_ANY, the default).
    assert "PassthroughCluster" in str(listener["filterChains"][-1])


def test_workload_entry_is_an_endpoint_with_its_port_weight_locality_and_identity() -> None:
    out = compiled(snapshot(ENTRIES), transparent())
    cla = out["eds"]["outbound|8080||vm.internal"]
    group = cla["endpoints"][0]
    assert group["locality"] == {"region": "eu-west1", "zone": "eu-west1-a"}
    lb = group["lbEndpoints"][0]
    assert lb["endpoint"]["address"]["socketAddress"] == {"address": "10.5.0.1", "portValue": 9090}
    assert lb["loadBalancingWeight"] == 3
    # In the mesh (MESH_INTERNAL, tlsMode istio): auto mTLS, checked against the workload's
    # identity and the entry's subjectAltNames.
    cluster = out["cds"]["outbound|8080||vm.internal"]
    sans = str(cluster["transportSocketMatches"][0])
    assert "spiffe://cluster.local/ns/default/sa/vm-sa" in sans
    assert "spiffe://cluster.local/ns/default/sa/legacy" in sans


def test_mesh_external_hosts_get_no_automatic_mtls() -> None:
    out = compiled(snapshot(ENTRIES), transparent())
    cluster = out["cds"]["outbound|80||api.example.com"]
    assert "transportSocketMatches" not in cluster and "transportSocket" not in cluster


def test_workload_entry_is_an_endpoint_of_a_kubernetes_service() -> None:
    service = """
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: default}
spec:
  selector: {app: vm}
  ports: [{name: http, port: 8080, targetPort: 8000}]
"""
    out = compiled(snapshot(service, ENTRIES), local_proxy())
    lb = out["eds"]["outbound|8080||legacy.default.svc.cluster.local"]["endpoints"][0]
    address = lb["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"]
    # The WorkloadEntry's own port for the port's name wins over the targetPort.
    assert address == {"address": "10.5.0.1", "portValue": 9090}


@pytest.mark.parametrize(
    ("mode", "cluster", "vhost"),
    [
        (None, "PassthroughCluster", "allow_any"),
        ("ALLOW_ANY", "PassthroughCluster", "allow_any"),
        ("REGISTRY_ONLY", "BlackHoleCluster", "block_all"),
    ],
)
def test_outbound_traffic_policy_decides_where_unknown_destinations_go(
    mode: str | None, cluster: str, vhost: str
) -> None:
    out = compiled(snapshot(ENTRIES, mode=mode), transparent())
    catch_all: dict[str, Any] = out["lds"]["virtualOutbound"]["filterChains"][-1]
    assert catch_all["name"] == "virtualOutbound-catchall-tcp"
    assert catch_all["filters"][0]["typedConfig"]["cluster"] == cluster
    fallback = out["rds"]["80"]["virtualHosts"][-1]
    assert fallback["name"] == vhost and fallback["domains"] == ["*"]
    if vhost == "block_all":
        assert fallback["routes"][0]["directResponse"]["status"] == 502
    # Registered hosts route as before.
    names = [vh["name"] for vh in out["rds"]["80"]["virtualHosts"]]
    assert "api.example.com:80" in names


@pytest.mark.parametrize(
    ("mesh_mode", "sidecar_mode", "cluster"),
    [
        ("ALLOW_ANY", "REGISTRY_ONLY", "BlackHoleCluster"),
        ("REGISTRY_ONLY", "ALLOW_ANY", "PassthroughCluster"),
        ("REGISTRY_ONLY", None, "BlackHoleCluster"),
    ],
)
def test_a_sidecars_outbound_traffic_policy_overrides_the_mesh_config(
    mesh_mode: str, sidecar_mode: str | None, cluster: str
) -> None:
    policy = f"outboundTrafficPolicy: {{mode: {sidecar_mode}}}" if sidecar_mode else ""
    sidecar = f"""
    apiVersion: networking.istio.io/v1
    kind: Sidecar
    metadata: {{name: default, namespace: default}}
    spec:
      egress: [{{hosts: ["*/*"]}}]
      {policy}
    """
    out = compiled(snapshot(ENTRIES, sidecar, mode=mesh_mode), transparent())
    catch_all: dict[str, Any] = out["lds"]["virtualOutbound"]["filterChains"][-1]
    assert catch_all["filters"][0]["typedConfig"]["cluster"] == cluster
    fallback = out["rds"]["80"]["virtualHosts"][-1]
    assert fallback["name"] == ("block_all" if cluster == "BlackHoleCluster" else "allow_any")


def test_export_to_hides_an_entry_from_other_namespaces() -> None:
    private = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: team-a}
spec:
  hosts: [private.example.com]
  exportTo: ["."]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"""
    inside = compiled(snapshot(private), local_proxy(namespace="team-a"))
    outside = compiled(snapshot(private), local_proxy(namespace="team-b"))
    assert "outbound|80||private.example.com" in inside["cds"]
    assert "outbound|80||private.example.com" not in outside["cds"]


def test_workload_selector_picks_pods_of_the_entry_namespace() -> None:
    pods = """
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default, labels: {app: vm}}
status: {podIP: 10.0.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: db-elsewhere, namespace: other, labels: {app: vm}}
status: {podIP: 10.0.0.10}
"""
    out = compiled(snapshot(ENTRIES, pods), local_proxy())
    endpoints = out["eds"]["outbound|8080||vm.internal"]["endpoints"]
    addresses = {
        lb["endpoint"]["address"]["socketAddress"]["address"]
        for group in endpoints
        for lb in group["lbEndpoints"]
    }
    assert addresses == {"10.5.0.1", "10.0.0.9"}


def test_a_virtual_service_tls_route_on_an_entry_host_picks_its_sni_chain() -> None:
    route = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-tls, namespace: default}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{port: 443, sniHosts: [api.example.com]}]
    route: [{destination: {host: rr.example.com, port: {number: 80}}}]
"""
    out = compiled(snapshot(ENTRIES, route), transparent())
    chains = out["lds"]["0.0.0.0_443"]["filterChains"]
    sni = next(c for c in chains if c.get("filterChainMatch", {}).get("serverNames"))
    assert sni["filters"][0]["typedConfig"]["cluster"] == "outbound|80||rr.example.com"


def test_cidr_addresses_are_matched_by_destination_prefix_and_the_rest_falls_back() -> None:
    cidr = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: databases, namespace: default}
spec:
  hosts: [db.example.com]
  addresses: [192.168.10.0/24, 10.8.0.0/16]
  ports: [{number: 3306, name: tcp-mysql, protocol: TCP}]
  resolution: NONE
"""
    out = compiled(snapshot(cidr, mode="REGISTRY_ONLY"), transparent())
    chains = out["lds"]["0.0.0.0_3306"]["filterChains"]
    first = chains[0]
    assert first["filterChainMatch"]["prefixRanges"] == [
        {"addressPrefix": "192.168.10.0", "prefixLen": 24},
        {"addressPrefix": "10.8.0.0", "prefixLen": 16},
    ]
    assert first["filters"][0]["typedConfig"]["cluster"] == "outbound|3306||db.example.com"
    # Other destinations on the port are not the entry's: refused under REGISTRY_ONLY.
    assert chains[-1]["filters"][0]["typedConfig"]["cluster"] == "BlackHoleCluster"
    assert out["cds"]["outbound|3306||db.example.com"]["type"] == "ORIGINAL_DST"
