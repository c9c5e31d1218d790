"""The Sidecar kind scopes a proxy: which Sidecar applies (istiod's precedence), which hosts
and ports it imports, and that proxies of one scope share their compiled resources while
proxies of different scopes never do."""

from __future__ import annotations

from datetime import UTC, datetime

from controlplane.api.base import ObjectMeta
from controlplane.api.mesh import MESH_CONFIG_KEY, MeshConfig, MeshConfigSpec
from controlplane.api.sidecar import Sidecar
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CLUSTER, ROUTE
from controlplane.compile.scope import select_sidecar, sidecar_for
from controlplane.store import Snapshot, Store, Submission
from tests.unit.compile.helpers import compiled, snapshot_of

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: shop}
spec:
  selector: {app: billing}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: istiod, namespace: istio-system}
spec:
  selector: {app: istiod}
  ports: [{name: grpc, port: 15010}]
"""


def sidecar(
    name: str,
    namespace: str,
    hosts: list[str] | None = None,
    selector: dict[str, str] | None = None,
    second: int = 0,
) -> Sidecar:
    spec: dict[str, object] = {"egress": [{"hosts": hosts or ["./*"]}]}
    if selector is not None:
        spec["workloadSelector"] = {"labels": selector}
    created = datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
    meta = {"name": name, "namespace": namespace, "creationTimestamp": created}
    return Sidecar.model_validate({"metadata": meta, "spec": spec})


def proxy(namespace: str = "default", **labels: str) -> Proxy:
    return Proxy(
        node_id=f"sidecar~10.0.0.9~client.{namespace}~{namespace}.svc.cluster.local",
        namespace=namespace,
        labels=labels,
        mode="transparent",
    )


def with_sidecars(*sidecars: Sidecar, root: str | None = None) -> Snapshot:
    base = snapshot_of(SERVICES)
    subs = [Submission(r, ()) for kind in base.resources.values() for r in kind.values()]
    subs += [Submission(s, ()) for s in sidecars]
    if root is not None:
        mesh = MeshConfig(
            metadata=ObjectMeta(name=MESH_CONFIG_KEY.name, namespace=MESH_CONFIG_KEY.namespace),
            spec=MeshConfigSpec(root_namespace=root),
        )
        subs.append(Submission(mesh, ()))
    store = Store()
    store.apply(upserts=subs)
    return store.snapshot


def outbound_clusters(snapshot: Snapshot, p: Proxy) -> set[str]:
    return {n for n in compiled(snapshot, p)["cds"] if n.startswith("outbound|")}


# ---- precedence ---------------------------------------------------------------------------


def test_a_selector_sidecar_wins_over_the_namespace_default_and_the_root_default() -> None:
    selected = sidecar("selected", "default", selector={"app": "web"}, second=5)
    default = sidecar("default", "default", second=1)
    root = sidecar("mesh", "istio-system")
    found = select_sidecar([root, default, selected], "default", {"app": "web"}, "istio-system")
    assert found is selected
    assert select_sidecar([root, default, selected], "default", {"app": "db"}, "istio-system") is (
        default
    )
    assert select_sidecar([root, selected], "default", {"app": "db"}, "istio-system") is root
    assert select_sidecar([selected], "default", {"app": "db"}, "istio-system") is None


def test_the_oldest_sidecar_wins_among_several_that_select_a_workload() -> None:
    young = sidecar("a-young", "default", selector={"app": "web"}, second=9)
    old = sidecar("z-old", "default", selector={"app": "web"}, second=1)
    assert select_sidecar([young, old], "default", {"app": "web"}, "istio-system") is old
    young_default = sidecar("a", "default", second=9)
    old_default = sidecar("z", "default", second=1)
    assert select_sidecar([young_default, old_default], "default", {}, "istio-system") is (
        old_default
    )


def test_a_root_namespace_sidecar_with_a_selector_is_no_mesh_default() -> None:
    root_selected = sidecar("mesh", "istio-system", selector={"app": "web"})
    assert select_sidecar([root_selected], "default", {"app": "web"}, "istio-system") is None
    assert select_sidecar([root_selected], "istio-system", {"app": "web"}, "istio-system") is (
        root_selected
    )


def test_the_root_namespace_comes_from_the_mesh_config() -> None:
    root = sidecar("mesh", "mesh-root", hosts=["./*"])
    snapshot = with_sidecars(root, root="mesh-root")
    assert sidecar_for(snapshot, proxy()) == root
    assert sidecar_for(with_sidecars(root), proxy()) is None  # istio-system is the default root


# ---- what a scoped proxy gets -------------------------------------------------------------


def test_without_a_sidecar_a_proxy_gets_every_service() -> None:
    assert outbound_clusters(with_sidecars(), proxy()) == {
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9090||reviews.default.svc.cluster.local",
        "outbound|9080||ratings.default.svc.cluster.local",
        "outbound|8080||billing.shop.svc.cluster.local",
        "outbound|15010||istiod.istio-system.svc.cluster.local",
    }


def test_dot_and_namespace_imports_scope_clusters_and_routes() -> None:
    snapshot = with_sidecars(sidecar("default", "default", hosts=["./*", "istio-system/*"]))
    got = compiled(snapshot, proxy())
    assert {n for n in got["cds"] if n.startswith("outbound|")} == {
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9090||reviews.default.svc.cluster.local",
        "outbound|9080||ratings.default.svc.cluster.local",
        "outbound|15010||istiod.istio-system.svc.cluster.local",
    }
    hosts = [vh["name"] for vh in got["rds"]["9080"]["virtualHosts"]]
    assert "reviews.default.svc.cluster.local:9080" in hosts
    assert not any("billing" in h for h in hosts)
    assert "8080" not in got["rds"]
    assert set(got["eds"]) <= {n for n in got["cds"] if n.startswith("outbound|")}
    assert "outbound|8080||billing.shop.svc.cluster.local" not in got["eds"]


def test_a_wildcard_namespace_with_one_host_and_a_port_imports_only_that_port() -> None:
    scoped = Sidecar.model_validate(
        {
            "metadata": {"name": "default", "namespace": "shop"},
            "spec": {
                "egress": [
                    {
                        "port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                        "hosts": ["*/reviews.default.svc.cluster.local"],
                    },
                    {"hosts": ["./*"]},
                ]
            },
        }
    )
    assert outbound_clusters(with_sidecars(scoped), proxy("shop")) == {
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|8080||billing.shop.svc.cluster.local",
    }


def test_tilde_imports_nothing_and_excludes_hosts() -> None:
    nothing = sidecar("default", "default", hosts=["~/*"])
    assert outbound_clusters(with_sidecars(nothing), proxy()) == set()
    excluding = sidecar(
        "default", "default", hosts=["*/*", "~default/ratings.default.svc.cluster.local"]
    )
    assert "outbound|9080||ratings.default.svc.cluster.local" not in outbound_clusters(
        with_sidecars(excluding), proxy()
    )


def test_the_root_default_reads_dot_as_the_proxys_own_namespace() -> None:
    snapshot = with_sidecars(sidecar("mesh", "istio-system", hosts=["./*"]))
    assert outbound_clusters(snapshot, proxy("shop")) == {
        "outbound|8080||billing.shop.svc.cluster.local"
    }
    assert "outbound|9080||reviews.default.svc.cluster.local" in outbound_clusters(
        snapshot, proxy("default")
    )


def test_a_virtual_service_destination_is_imported_with_the_virtual_service() -> None:
    routes_to_billing = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: billing.shop.svc.cluster.local}}]}]
"""
    base = snapshot_of(SERVICES, routes_to_billing)
    store = Store()
    subs = [Submission(r, ()) for kind in base.resources.values() for r in kind.values()]
    store.apply(upserts=[*subs, Submission(sidecar("default", "default"), ())])
    clusters = outbound_clusters(store.snapshot, proxy())
    assert "outbound|8080||billing.shop.svc.cluster.local" in clusters  # inferred, as istiod


def test_a_hidden_virtual_service_does_not_route_a_scoped_proxy() -> None:
    vs_in_shop = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-canary, namespace: shop}
spec:
  hosts: [ratings.default.svc.cluster.local]
  http: [{route: [{destination: {host: ratings.default.svc.cluster.local}, weight: 100}],
          timeout: 3s}]
"""
    base = snapshot_of(SERVICES, vs_in_shop)
    store = Store()
    subs = [Submission(r, ()) for kind in base.resources.values() for r in kind.values()]
    store.apply(upserts=[*subs, Submission(sidecar("default", "default"), ())])

    def ratings_timeout(p: Proxy) -> str | None:
        table = compiled(store.snapshot, p)["rds"]["9080"]
        (vh,) = [v for v in table["virtualHosts"] if v["name"].startswith("ratings.")]
        return vh["routes"][0]["route"].get("timeout")

    assert ratings_timeout(proxy()) == "0s"  # imports ./* only: the shop VS is hidden
    assert ratings_timeout(proxy("other")) == "3s"  # no Sidecar there: the VS applies


# ---- sharing ------------------------------------------------------------------------------


def test_proxies_of_one_scope_share_resources_and_of_two_scopes_do_not() -> None:
    snapshot = with_sidecars(
        sidecar(
            "narrow",
            "default",
            hosts=["./ratings.default.svc.cluster.local"],
            selector={"app": "web"},
        ),
        sidecar("default", "default", hosts=["./*"]),
    )
    compiler = SnapshotCompiler(snapshot)
    web1 = compiler.compile(proxy(app="web"))
    web2 = compiler.compile(proxy(app="web", version="v2"))
    db1 = compiler.compile(proxy(app="db"))
    db2 = compiler.compile(proxy(app="cache"))
    assert web1.of(ROUTE)["9080"] is web2.of(ROUTE)["9080"]
    assert db1.of(ROUTE)["9080"] is db2.of(ROUTE)["9080"]
    assert web1.of(ROUTE)["9080"] is not db1.of(ROUTE)["9080"]
    assert set(web1.of(CLUSTER)) != set(db1.of(CLUSTER))
    assert "outbound|9080||reviews.default.svc.cluster.local" not in web1.of(CLUSTER)
    assert "outbound|9080||reviews.default.svc.cluster.local" in db1.of(CLUSTER)


# ---- ingress ------------------------------------------------------------------------------


def test_ingress_listeners_give_a_transparent_proxy_its_inbound_ports_and_endpoints() -> None:
    ingress = Sidecar.model_validate(
        {
            "metadata": {"name": "ingress", "namespace": "default"},
            "spec": {
                "workloadSelector": {"labels": {"app": "reviews"}},
                "ingress": [
                    {
                        "port": {"number": 9080, "protocol": "HTTP"},
                        "defaultEndpoint": "127.0.0.1:8080",
                    },
                    {
                        "port": {"number": 9443, "protocol": "TCP"},
                        "defaultEndpoint": "0.0.0.0:8443",
                    },
                ],
            },
        }
    )
    got = compiled(with_sidecars(ingress), proxy(app="reviews"))
    inbound = {n: c for n, c in got["cds"].items() if n.startswith("inbound|")}
    assert set(inbound) == {"inbound|9080||", "inbound|9443||"}

    def endpoint(name: str) -> tuple[str, int]:
        lb = inbound[name]["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]
        address = lb["endpoint"]["address"]["socketAddress"]
        return address["address"], address["portValue"]

    assert endpoint("inbound|9080||") == ("127.0.0.1", 8080)
    assert endpoint("inbound|9443||") == ("127.0.0.1", 8443)  # the app's address, its port
    chains = got["lds"]["virtualInbound"]["filterChains"]
    ports = {c.get("filterChainMatch", {}).get("destinationPort") for c in chains}
    assert {9080, 9443} <= ports
    # A workload the Sidecar does not select keeps the ports its Services give it (none here).
    other = compiled(with_sidecars(ingress), proxy(app="ratings"))
    assert not [n for n in other["cds"] if n.startswith("inbound|9")]


def test_sidecar_for_gives_the_outbound_traffic_policy_that_overrides_the_mesh_config() -> None:
    registry_only = Sidecar.model_validate(
        {
            "metadata": {"name": "default", "namespace": "default"},
            "spec": {"outboundTrafficPolicy": {}},  # proto3: an empty policy is REGISTRY_ONLY
        }
    )
    found = sidecar_for(with_sidecars(registry_only), proxy())
    assert found is not None and found.spec.outbound_traffic_policy is not None
    assert found.spec.outbound_traffic_policy.mode == "REGISTRY_ONLY"
    assert sidecar_for(with_sidecars(registry_only), proxy("shop")) is None
    # No egress listeners: the Sidecar imports */* (istiod's default listener).
    assert len(outbound_clusters(with_sidecars(registry_only), proxy())) == 5


def test_the_xds_cache_gives_one_shape_per_scope() -> None:
    from dataclasses import replace as with_fields

    from controlplane.cache.shapes import ShapeCache

    snapshot = with_sidecars(
        sidecar(
            "narrow",
            "default",
            hosts=["./ratings.default.svc.cluster.local"],
            selector={"app": "web"},
        ),
        sidecar("default", "default", hosts=["./*"]),
    )
    compiler = SnapshotCompiler(snapshot)
    shapes = ShapeCache()

    def shape_of(p: Proxy):  # type: ignore[no-untyped-def]
        return shapes.lookup(p, snapshot) or shapes.build(p, compiler)

    web = proxy(app="web")
    web_elsewhere = with_fields(
        web, node_id=web.node_id.replace("10.0.0.9", "10.0.0.10"), ips=("10.0.0.10",)
    )
    db = proxy(app="db")
    assert shape_of(web) is shape_of(web_elsewhere)  # one scope, one shape
    assert shape_of(web) is not shape_of(db)
    web_routes = shape_of(web).resources.of(ROUTE)["9080"]
    db_routes = shape_of(db).resources.of(ROUTE)["9080"]
    assert web_routes is not db_routes and web_routes.version != db_routes.version


def test_a_sidecars_connection_pools_size_the_inbound_clusters() -> None:
    pod = """
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: default, labels: {app: reviews}}
status: {podIP: 10.0.0.9}
"""
    pools = Sidecar.model_validate(
        {
            "metadata": {"name": "pools", "namespace": "default"},
            "spec": {
                "inboundConnectionPool": {"tcp": {"maxConnections": 7, "connectTimeout": "3s"}},
                "ingress": [
                    {
                        "port": {"number": 9080, "protocol": "HTTP"},
                        "connectionPool": {"http": {"http2MaxRequests": 11}},
                    },
                    {"port": {"number": 9090, "protocol": "HTTP"}},
                ],
            },
        }
    )
    without_ingress = pools.model_copy(
        update={"spec": pools.spec.model_copy(update={"ingress": []})}
    )
    base = snapshot_of(SERVICES, pod)
    subs = [Submission(r, ()) for kind in base.resources.values() for r in kind.values()]

    def inbound(sidecar_resource: Sidecar) -> dict[str, dict[str, object]]:
        store = Store()
        store.apply(upserts=[*subs, Submission(sidecar_resource, ())])
        p = Proxy(
            node_id="sidecar~10.0.0.9~reviews-1.default~default.svc.cluster.local",
            namespace="default",
            labels={"app": "reviews"},
            ips=("10.0.0.9",),
            mode="transparent",
        )
        return {
            n: c for n, c in compiled(store.snapshot, p)["cds"].items() if n.startswith("inbound|")
        }

    # The Service's ports, sized by inboundConnectionPool.
    by_service = inbound(without_ingress)
    assert set(by_service) == {"inbound|9080||", "inbound|9090||"}
    for cluster in by_service.values():
        assert cluster["circuitBreakers"]["thresholds"][0]["maxConnections"] == 7
        assert cluster["connectTimeout"] == "3s"
    # An ingress listener's own pool wins for its port; the others take inboundConnectionPool.
    by_ingress = inbound(pools)
    assert by_ingress["inbound|9080||"]["circuitBreakers"]["thresholds"][0]["maxRequests"] == 11
    assert by_ingress["inbound|9080||"]["connectTimeout"] == "10s"
    assert by_ingress["inbound|9090||"]["circuitBreakers"]["thresholds"][0]["maxConnections"] == 7
