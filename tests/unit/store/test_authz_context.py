"""AuthorizationPolicy in context (part authz): a policy whose selector matches no workload is
reported (CP0400, istioctl's IST0127) in its status, and the finding follows the pods: it
goes when a matching pod appears and comes back when the pod goes."""

from __future__ import annotations

import yaml

from controlplane.api import validate
from controlplane.api.base import ObjectMeta
from controlplane.api.issues import ResourceKey
from controlplane.api.mesh import MESH_CONFIG_KEY, MeshConfig, MeshConfigSpec
from controlplane.api.resources import parse_resource
from controlplane.store import Store, Submission
from tests.support import meshes

POLICY = ResourceKey("AuthorizationPolicy", "default", "payments")


def submission(text: str) -> Submission:
    resource = parse_resource(yaml.safe_load(text))
    return Submission(resource, tuple(validate(resource)))


def policy(namespace: str = "default") -> Submission:
    return submission(
        meshes.resource(
            "AuthorizationPolicy",
            "payments",
            "selector: {matchLabels: {app: payment}}\nrules: [{}]",
            namespace=namespace,
        )
    )


def pod(namespace: str = "default") -> Submission:
    return submission(meshes.pod("payment-1", "10.0.0.10", app="payment", namespace=namespace))


def findings(store: Store, key: ResourceKey = POLICY) -> list[str]:
    status = store.snapshot.status[key]
    return [f"{i.code.id} {i.field_message}" for i in status.issues]


def test_a_policy_selecting_no_pod_says_so_until_one_appears() -> None:
    store = Store()
    store.apply(upserts=[policy()])
    assert findings(store) == [
        "CP0400 spec.selector.matchLabels: no workload in namespace default has the labels "
        "app=payment: the policy applies to nothing yet (istioctl analyze: IST0127 "
        "NoMatchingWorkloadsFound)"
    ]
    assert store.snapshot.status[POLICY].accepted  # a warning: the policy is in effect
    store.apply(upserts=[pod()])
    assert findings(store) == []
    store.apply(deletes=[ResourceKey("Pod", "default", "payment-1")])
    assert [f[:6] for f in findings(store)] == ["CP0400"]


def test_a_pod_of_another_namespace_counts_only_for_the_root_namespace() -> None:
    store = Store()
    store.apply(upserts=[policy(), pod("shop")])
    assert [f[:6] for f in findings(store)] == ["CP0400"]
    mesh_wide = ResourceKey("AuthorizationPolicy", "mesh-root", "payments")
    store.apply(upserts=[policy("mesh-root")])
    assert [f[:6] for f in findings(store, mesh_wide)] == ["CP0400"]
    # The mesh's root namespace is mesh-root: its policies apply in every namespace.
    mesh = MeshConfig(
        metadata=ObjectMeta(name="istio", namespace="istio-system"),
        spec=MeshConfigSpec(root_namespace="mesh-root"),
    )
    store.apply(upserts=[Submission(mesh, ())])
    assert store.snapshot.get(MESH_CONFIG_KEY) is not None
    assert findings(store, mesh_wide) == []
