"""RDS per port in transparent mode: virtual hosts, Istio's domains, the allow_any fallback."""

from __future__ import annotations

from controlplane.compile.proxy import Proxy, proxy_from_node
from tests.support import meshes
from tests.unit.compile.helpers import compiled, snapshot_of
from tests.unit.compile.test_listeners_transparent import MESH

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
  - route: [{destination: {host: reviews}}]
"""


def proxy_in(namespace: str) -> Proxy:
    return proxy_from_node(
        f"sidecar~10.1.0.5~client.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace},
    )


def vhosts(namespace: str, *docs: str) -> dict[str, dict]:
    config = compiled(snapshot_of(MESH, *docs), proxy_in(namespace))["rds"]["9080"]
    assert config["name"] == "9080"
    return {v["name"]: v for v in config["virtualHosts"]}


def test_port_route_config_has_a_virtual_host_per_service_and_allow_any_last() -> None:
    config = compiled(snapshot_of(MESH), proxy_in("default"))["rds"]["9080"]
    names = [v["name"] for v in config["virtualHosts"]]
    assert names == [
        "details.other.svc.cluster.local:9080",
        "reviews.default.svc.cluster.local:9080",
        "allow_any",
    ]
    allow_any = config["virtualHosts"][-1]
    assert allow_any["domains"] == ["*"]
    [route] = allow_any["routes"]
    assert route["route"]["cluster"] == "PassthroughCluster"


def test_domains_include_short_name_only_in_the_clients_namespace() -> None:
    same = vhosts("default")["reviews.default.svc.cluster.local:9080"]["domains"]
    assert same == [
        "reviews.default.svc.cluster.local",
        "reviews.default.svc",
        "reviews.default",
        "reviews",
        "10.96.0.8",
    ]
    other = vhosts("other")["reviews.default.svc.cluster.local:9080"]["domains"]
    assert "reviews" not in other
    assert "reviews.default" in other


def test_port_route_config_ignores_the_host_port_as_istiod_does_for_sidecars() -> None:
    """Every service in RDS "9080" has port 9080, so the domains carry no port and Envoy
    matches ``reviews:9080`` and ``reviews`` alike."""
    config = compiled(snapshot_of(MESH), proxy_in("default"))["rds"]["9080"]
    assert config["ignorePortInHostMatching"] is True
    domains = [d for v in config["virtualHosts"] for d in v["domains"]]
    assert not [d for d in domains if ":" in d]


def test_service_without_virtual_service_gets_the_default_route_to_its_cluster() -> None:
    [route] = vhosts("default")["reviews.default.svc.cluster.local:9080"]["routes"]
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["cluster"] == "outbound|9080||reviews.default.svc.cluster.local"


def test_virtual_service_routes_fill_the_virtual_host_of_its_host() -> None:
    routes = vhosts("default", VS)["reviews.default.svc.cluster.local:9080"]["routes"]
    assert len(routes) == 2
    assert routes[0]["match"]["headers"][0]["name"] == "end-user"


def test_exported_to_own_namespace_hides_the_service_from_others() -> None:
    hidden = MESH.replace(
        "metadata: {name: details, namespace: other}",
        "metadata: {name: details, namespace: other, annotations: {networking.istio.io/exportTo: '.'}}",
    )
    config = compiled(snapshot_of(hidden), proxy_in("default"))["rds"]["9080"]
    assert "details.other.svc.cluster.local:9080" not in [v["name"] for v in config["virtualHosts"]]
    config = compiled(snapshot_of(hidden), proxy_in("other"))["rds"]["9080"]
    assert "details.other.svc.cluster.local:9080" in [v["name"] for v in config["virtualHosts"]]


def test_a_virtual_service_with_no_route_for_this_proxy_leaves_the_default_route() -> None:
    only_admins = VS.replace(
        "  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, port: {number: 9080}}}]\n  - route: [{destination: {host: reviews}}]\n",
        "  - match: [{sourceLabels: {role: admin}}]\n    route: [{destination: {host: reviews, port: {number: 9080}}}]\n",
    )
    assert "sourceLabels" in only_admins
    [route] = vhosts("default", only_admins)["reviews.default.svc.cluster.local:9080"]["routes"]
    assert route["name"] == "default"
    assert route["route"]["cluster"] == "outbound|9080||reviews.default.svc.cluster.local"


def test_a_tcp_only_virtual_service_does_not_blank_the_http_port() -> None:
    tcp_only = meshes.resource(
        "VirtualService",
        "reviews-tcp",
        """
  hosts: [reviews]
  tcp:
  - route: [{destination: {host: reviews}}]
""",
    )
    [route] = vhosts("default", tcp_only)["reviews.default.svc.cluster.local:9080"]["routes"]
    assert route["route"]["cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
