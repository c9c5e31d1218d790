"""Incremental recompilation: a change recompiles only what read the changed inputs.

The next SnapshotCompiler inherits every memoized build whose recorded dependencies the change
did not touch; what is inherited is the very same object (same message, same bytes).
"""

from __future__ import annotations

import textwrap

from controlplane.api.issues import ResourceKey
from controlplane.compile import SnapshotCompiler
from controlplane.compile.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.store import ChangeSet, Snapshot, Store
from tests.documents import submissions
from tests.support import meshes
from tests.unit.compile.helpers import local_proxy
from tests.xds.mesh import MESH as XDS_MESH
from tests.xds.mesh import RATINGS, REVIEWS, REVIEWS_V1, REVIEWS_V2, ROUND_ROBIN_RULE, canary

MESH = XDS_MESH + "---\n" + canary(90, 10)


class Mesh:
    """A store and the compiler chain that follows it incrementally."""

    def __init__(self, text: str = MESH) -> None:
        self.store = Store()
        self.changes: list[ChangeSet] = []
        self.store.subscribe(lambda snapshot, change: self.changes.append(change))
        self.store.apply(upserts=submissions(text))
        self.compiler = SnapshotCompiler(self.store.snapshot)
        self.proxy = local_proxy()
        self.before = self.compiler.compile(self.proxy)

    def change(self, upserts: str = "", deletes: tuple[ResourceKey, ...] = ()) -> SnapshotCompiler:
        old: Snapshot = self.compiler.snapshot
        self.changes.clear()
        self.store.apply(upserts=submissions(upserts) if upserts else (), deletes=deletes)
        keys = set().union(*(c.changed for c in self.changes))
        self.compiler, _ = SnapshotCompiler.following(self.compiler, self.store.snapshot, keys)
        assert self.compiler.snapshot is not old
        return self.compiler

    def rebuilt(self) -> dict[str, set[str]]:
        """Compile again; the names of the resources that are new objects, by type."""
        after = self.compiler.compile(self.proxy)
        out: dict[str, set[str]] = {}
        for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            new, old = after.of(type_url), self.before.of(type_url)
            out[type_url] = {n for n, r in new.items() if old.get(n) is not r}
        self.before = after
        return out


def pod(name: str, ip: str, labels: str) -> str:
    return f"""
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}, namespace: default, labels: {labels}}}
    status: {{podIP: {ip}}}
    """


def test_endpoint_only_change_rebuilds_only_the_affected_clusters_endpoints() -> None:
    mesh = Mesh()
    compiler = mesh.change(pod("ratings-2", "127.0.6.4", "{app: ratings}"))
    assert mesh.rebuilt() == {CLUSTER: set(), ENDPOINT: {RATINGS}, LISTENER: set(), ROUTE: set()}
    assert compiler.builds == 1  # one ClusterLoadAssignment, nothing else


def test_pod_changing_subset_labels_rebuilds_that_services_assignments() -> None:
    mesh = Mesh()
    mesh.change(pod("reviews-v2", "127.0.6.2", "{app: reviews, version: v1}"))
    rebuilt = mesh.rebuilt()
    assert rebuilt[ENDPOINT] == {REVIEWS, REVIEWS_V1, REVIEWS_V2}
    assert rebuilt[CLUSTER] == set() and rebuilt[ROUTE] == set()


def test_virtual_service_change_rebuilds_only_its_virtual_host_and_the_route_table() -> None:
    mesh = Mesh()
    compiler = mesh.change(canary(50, 50))
    assert mesh.rebuilt() == {
        CLUSTER: set(),
        ENDPOINT: set(),
        LISTENER: set(),
        ROUTE: {"local_15001"},
    }
    assert compiler.builds == 2  # the reviews virtual host and the route configuration


def test_destination_rule_change_rebuilds_that_hosts_clusters_only() -> None:
    mesh = Mesh()
    mesh.change(ROUND_ROBIN_RULE)
    rebuilt = mesh.rebuilt()
    assert rebuilt[CLUSTER] == {REVIEWS, REVIEWS_V1, REVIEWS_V2}
    # (The first build of each family in a compile also counts every rule read before it as
    # an input, so one endpoint assignment and the route table may be rebuilt too:
    # over-approximate, never stale.)


def test_service_port_change_rebuilds_its_clusters_even_though_they_were_passed_the_service() -> (
    None
):
    mesh = Mesh()
    mesh.change(meshes.service("ratings", target_port=8080, port_name="grpc"))
    after = mesh.compiler.compile(mesh.proxy)
    ratings = after.of(CLUSTER)[RATINGS].message
    assert ratings.typed_extension_protocol_options  # now HTTP/2: rebuilt, not inherited
    assert after.of(CLUSTER)[REVIEWS] is mesh.before.of(CLUSTER)[REVIEWS]


def test_deleting_a_service_removes_its_resources_and_keeps_the_others() -> None:
    mesh = Mesh()
    mesh.change(deletes=(ResourceKey("Service", "default", "ratings"),))
    after = mesh.compiler.compile(mesh.proxy)
    assert RATINGS not in after.of(CLUSTER) and RATINGS not in after.of(ENDPOINT)
    assert after.of(ENDPOINT)[REVIEWS_V1] is mesh.before.of(ENDPOINT)[REVIEWS_V1]


def test_an_unrelated_change_inherits_every_build() -> None:
    mesh = Mesh()
    compiler = mesh.change(pod("stray", "127.0.6.9", "{app: nobody}"))
    assert mesh.rebuilt() == {CLUSTER: set(), ENDPOINT: set(), LISTENER: set(), ROUTE: set()}
    assert compiler.builds == 0


def test_a_rule_read_before_another_build_still_counts_for_the_build_it_feeds() -> None:
    """The pattern ``rule = destination_rule(...); other cached build; cached("cds", ...)``:
    the cds build must still depend on the rule, or a changed rule would leave it stale."""
    mesh = Mesh()
    snapshot = mesh.compiler.reads  # the read-tracking view builds read through
    compiler = mesh.compiler
    snapshot.forget_reads()
    rule = snapshot.destination_rule("reviews.default.svc.cluster.local", "default")
    compiler._cached(("unrelated", 1), lambda: "x")
    compiler._cached(("cds-test", 1), lambda: rule)
    deps = compiler.memo_dependencies()[("cds-test", 1)]
    assert ("DestinationRule@host", "reviews.default.svc.cluster.local") in deps
    # ...and a sibling of the same family does not inherit it.
    compiler._cached(("cds-test", 2), lambda: None)
    assert not compiler.memo_dependencies()[("cds-test", 2)]


def test_recorded_dependencies_name_the_inputs_a_build_read() -> None:
    mesh = Mesh()
    deps = mesh.compiler.memo_dependencies()
    eds = next(d for k, d in deps.items() if k[:2] == ("eds", RATINGS))
    assert ("endpoints", "ratings.default.svc.cluster.local") in eds
    assert not any(t[0] == "VirtualService@host" for t in eds)


SLICES = """
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: details-1, namespace: default, labels: {app: details, version: v1}}
status: {podIP: 127.0.6.11}
"""


def details_slice(*addresses: str) -> str:
    endpoints = ", ".join(
        f"{{addresses: [{a}], targetRef: {{kind: Pod, name: details-1}}}}" for a in addresses
    )
    return f"""
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: details-abc
      namespace: default
      labels: {{kubernetes.io/service-name: details}}
    addressType: IPv4
    ports: [{{name: http, port: 8080}}]
    endpoints: [{endpoints}]
    """


def test_endpoint_slice_change_rebuilds_only_its_services_assignment() -> None:
    mesh = Mesh(MESH + "---" + SLICES + "---" + textwrap.dedent(details_slice("127.0.6.11")))
    details = "outbound|9080||details.default.svc.cluster.local"
    compiler = mesh.change(details_slice("127.0.6.11", "127.0.6.12"))
    rebuilt = mesh.rebuilt()
    assert rebuilt == {CLUSTER: set(), ENDPOINT: {details}, LISTENER: set(), ROUTE: set()}
    assert compiler.builds == 1
    cla = mesh.before.of(ENDPOINT)[details].message
    assert len(cla.endpoints[0].lb_endpoints) == 2


def test_relabelling_a_pod_behind_a_slice_rebuilds_that_services_assignment() -> None:
    mesh = Mesh(MESH + "---" + SLICES + "---" + textwrap.dedent(details_slice("127.0.6.11")))
    details = "outbound|9080||details.default.svc.cluster.local"
    mesh.change(pod("details-1", "127.0.6.11", "{app: details, version: v2}"))
    assert mesh.rebuilt()[ENDPOINT] == {details}
