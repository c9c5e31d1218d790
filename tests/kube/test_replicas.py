"""Two replicas: each serves xDS from its own watch; kopf peering lets one write status."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess, install_crds

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{name}]
  http:
  - route: [{{destination: {{host: {name}, subset: missing}}}}]
"""


def identity(replica: OperatorProcess) -> str:
    match = re.search(r"operator (\S+): xDS on", replica.log_text())
    assert match, replica.log_tail()
    return match.group(1)


LEADS, FOLLOWS = "this replica now writes status", "another replica writes status now"


def writers(replicas: list[OperatorProcess]) -> list[OperatorProcess]:
    """The replicas whose latest leadership change made them the status writer."""
    out = []
    for replica in replicas:
        text = replica.log_text()
        if text.rfind(LEADS) > text.rfind(FOLLOWS):
            out.append(replica)
    return out


def test_every_replica_serves_but_only_the_peering_leader_writes_status(
    kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path
):
    install_crds(kube_cluster)
    ns = kube_namespace
    replicas = [
        OperatorProcess(kube_cluster, tmp_path / name, name=name, webhooks=False)
        for name in ("replica-a", "replica-b")
    ]
    try:
        for replica in replicas:
            replica.start()
        kube_cluster.apply(VS.format(name="reviews", ns=ns))
        key = f"VirtualService {ns}/reviews"
        for replica in replicas:  # each has the resource from its own watch
            replica.wait_for(
                lambda r=replica: any(s["resource"] == key for s in r.status()),
                what=f"{replica.name} sees {key}",
            )

        # The first replica may lead until it sees the second one's keep-alive; then exactly
        # one of them (the higher kopf priority) writes.
        # Once both keep-alives are in kopf's peering object, the writer is its leader: the
        # live peer with the highest priority. (Before, the first replica led alone.)
        identities = {identity(r): r for r in replicas}

        def peering_leader() -> OperatorProcess | None:
            peers = kube_cluster.get_json("clusterkopfpeering", "controlplane").get("status", {})
            if not set(identities) <= set(peers):
                return None
            best = max(identities, key=lambda i: peers[i]["priority"])
            found = writers(replicas)
            return identities[best] if found == [identities[best]] else None

        leader = [replicas[0].wait_for(peering_leader, what="the peering leader writes status")]
        kube_cluster_status = replicas[0].wait_for(
            lambda: kube_cluster.get_json("vs", "reviews", "-n", ns).get("status"),
            what="status written",
        )
        assert kube_cluster_status["conditions"][1]["reason"] == "ReferencedSubsetNotFound"
        assert len(writers(replicas)) == 1

        # The leader goes away: the other replica takes over writing status.
        (first,) = leader
        (other,) = [r for r in replicas if r is not first]
        first.stop()
        kube_cluster.apply(VS.format(name="ratings", ns=ns))
        other.wait_for(lambda: writers([other]), timeout=40, what="the other replica takes over")
        other.wait_for(
            lambda: kube_cluster.get_json("vs", "ratings", "-n", ns).get("status"),
            timeout=20,
            what="status of a resource created after the takeover",
        )
    finally:
        for replica in replicas:
            replica.stop()
