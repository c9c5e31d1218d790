"""Certificate rotation under steady traffic: with 4-second workload certificates every sidecar
gets a renewed `default` secret about every 2 seconds, and no request fails."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from tests.envoy.zero_trust import (
    PAYMENT_POLICY,
    WORKLOADS,
    peer_authentication,
    served_certificate,
    spiffe_ids,
    start_zero_trust_mesh,
)

TTL = 4.0
DURATION = 9.0
CLUSTER = "cluster.outbound|9080||payment.default.svc.cluster.local"


def test_certificates_rotate_under_steady_traffic_without_a_failed_request(
    tmp_path: Path,
) -> None:
    zt = start_zero_trust_mesh(tmp_path, ["--workload-cert-ttl", str(TTL)])
    try:
        zt.write("peer-authentication.yaml", peer_authentication("STRICT"))
        zt.write("payment-policy.yaml", PAYMENT_POLICY)
        client_cert = zt.client_certificate(tmp_path)
        pod = WORKLOADS["payment"][0]
        order = zt.sidecars["order-service"]
        connections_before = order.envoy.stat(f"{CLUSTER}.upstream_cx_total")

        serials: set[int] = set()
        statuses: dict[int, int] = {}
        errors: list[str] = []
        conn = http.client.HTTPConnection("127.0.0.1", order.outbound_port, timeout=5)
        started = time.time()
        last_probe = 0.0
        while time.time() - started < DURATION:
            try:
                conn.request("POST", "/api/v1/charge", headers={"Host": "payment:9080"})
                response = conn.getresponse()
                response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", order.outbound_port, timeout=5)
            if time.time() - last_probe > 0.5:
                # What the payment sidecar serves right now, read from a real handshake.
                cert = served_certificate(pod, zt.app_port, zt.root_cert, client_cert)
                assert spiffe_ids(cert) == ["spiffe://cluster.local/ns/default/sa/payment"]
                serials.add(cert.serial_number)
                last_probe = time.time()
            time.sleep(0.01)
        conn.close()

        total = sum(statuses.values())
        print(  # the figures of the run, shown with `pytest -s`
            f"rotation: {total} requests in {DURATION:.0f}s, {len(errors)} failed, "
            f"statuses {statuses}, {len(serials)} certificates served, "
            f"{order.envoy.stat(f'{CLUSTER}.upstream_cx_total') - connections_before} new "
            "upstream connections"
        )
        assert not errors, errors[:5]
        assert statuses == {200: total}, statuses
        assert total > 100
        # Renewed about every TTL/2: at least three certificates served over the run.
        assert len(serials) >= 3, serials
        # Rotation did not cut the client sidecar's pooled connection to payment.
        assert order.envoy.stat(f"{CLUSTER}.upstream_cx_total") - connections_before <= 1
        log = zt.mesh.control_plane.log_text()
        assert log.count("renewed") >= 2
    finally:
        zt.mesh.stop()
