"""Cluster mode, against the real kube-apiserver: a mesh root close to expiry in the
``cacerts`` Secret becomes a Warning Event on that Secret (and the log line and metric of file
mode); the watches of a quiet cluster are proved in step by listings, so /healthz stays ok
with a stall limit far below kopf's watch cycle."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlplane.ca.root import create_root_bundle
from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess, install_crds
from tests.support.prometheus import scrape, value

# About a minute on the real apiserver: in the slow tier (CI runs it), so that a warm
# `make test` stays under ten minutes.
pytestmark = pytest.mark.slow


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.kube
def test_a_root_near_expiry_is_a_warning_event_on_the_ca_secret_and_watches_stay_live(
    kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path
) -> None:
    install_crds(kube_cluster)
    bundle = create_root_bundle(datetime.now(UTC), lifetime=timedelta(days=12))
    kube_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": kube_namespace},
            "data": {
                "ca-cert.pem": _b64(bundle.ca_cert_pem),
                "ca-key.pem": _b64(bundle.ca_key_pem),
                "cert-chain.pem": _b64(bundle.cert_chain_pem),
                "root-cert.pem": _b64(bundle.root_cert_pem),
            },
        }
    )
    operator = OperatorProcess(
        kube_cluster,
        tmp_path,
        name="ops",
        webhooks=False,
        extra_args=[
            "--ca-namespace",
            kube_namespace,
            "--standalone",
            "--watch-stall-after",
            "6",
        ],
    )
    operator.start()
    try:
        deadline = time.time() + 20
        events: list[dict[str, object]] = []
        while time.time() < deadline and not events:
            out = kube_cluster.kubectl("get", "events", "-n", kube_namespace, "-o", "json")
            events = [
                e
                for e in json.loads(out.stdout)["items"]
                if e["involvedObject"].get("kind") == "Secret"
                and e["involvedObject"].get("name") == "cacerts"
            ]
            time.sleep(0.2)
        assert len(events) == 1, events
        event = events[0]
        assert event["type"] == "Warning"
        assert event["reason"] == "RootCertificateExpiresSoon"
        assert str(event["message"]).startswith("[CP0730] root-cert.pem: the mesh root ")
        assert "expires in 12.0 days" in str(event["message"])
        assert "CP0730" in operator.log_path.read_text()

        samples, _ = scrape(operator.debug.base)
        assert (
            11.9 * 86400 < value(samples, "citadel_server_root_cert_expiry_seconds") <= 12 * 86400
        )

        # Nine seconds of a quiet cluster with a 6 s stall limit: every watch is refreshed by
        # events or by listings that find nothing newer than what it delivered.
        time.sleep(9)
        with urllib.request.urlopen(f"{operator.debug.base}/healthz", timeout=5) as response:
            assert response.status == 200 and response.read() == b"ok\n"
        samples, _ = scrape(operator.debug.base)
        for plural in ("virtualservices", "pods", "secrets", "sidecars"):
            assert value(samples, "controlplane_watch_stalled", kind=plural) == 0
            assert value(samples, "controlplane_watch_last_refresh_age_seconds", kind=plural) < 6
    finally:
        operator.stop()
