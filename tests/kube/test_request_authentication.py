"""RequestAuthentication in cluster mode: watched from the apiserver, its jwksUri fetched by
the control plane, and what came of it written to its status."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from controlplane.testing.ports import free_port
from tests.cluster.cluster import LocalCluster
from tests.kube.operator import OperatorProcess

KEYS = json.dumps({"keys": [{"kty": "RSA", "kid": "1", "n": "AQAB", "e": "AQAB"}]}).encode()


class _Keys(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(KEYS)))
        self.end_headers()
        self.wfile.write(KEYS)


def status_of(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.get_json("requestauthentication", name, "-n", ns)
    return found.get("status") or {}


def reconciled(status: dict[str, Any]) -> dict[str, Any] | None:
    """The status once it has its Reconciled condition."""
    return status if any(c["type"] == "Reconciled" for c in status.get("conditions", [])) else None


def messages(status: dict[str, Any]) -> list[str]:
    return [m["type"]["code"] for m in status.get("validationMessages", [])]


def test_request_authentication_status_says_whether_its_keys_were_fetched(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
) -> None:
    ns = kube_namespace
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead = f"http://127.0.0.1:{free_port()}/jwks.json"  # nothing listens there
    try:
        kube_cluster.apply(
            f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: good, namespace: {ns}}}
spec:
  jwtRules: [{{issuer: good.test, jwksUri: "http://127.0.0.1:{server.server_address[1]}/k"}}]
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {{name: unreachable, namespace: {ns}}}
spec:
  jwtRules: [{{issuer: dead.test, jwksUri: "{dead}"}}]
"""
        )
        # Its first status may be written before the first fetch finished (CP0442 "never
        # fetched", true then); once fetched, the status says nothing more.
        good = operator.wait_for(
            lambda: (
                s
                if reconciled(s := status_of(kube_cluster, ns, "good")) and not messages(s)
                else None
            ),
            what="status of the good RequestAuthentication, its keys fetched",
        )
        assert {c["type"]: c["status"] for c in good["conditions"]} == {
            "Accepted": "True",
            "Reconciled": "True",
        }
        assert messages(good) == []
        bad = operator.wait_for(
            lambda: (
                s if "CP0442" in messages(s := status_of(kube_cluster, ns, "unreachable")) else None
            ),
            what="status of the unreachable RequestAuthentication",
        )
        [message] = bad["validationMessages"]
        assert message["description"].startswith("spec.jwtRules[0].jwksUri: the key set at")
        assert "tokens of issuer 'dead.test' are refused" in message["description"]
        accepted = {c["type"]: c["status"] for c in bad["conditions"]}
        assert accepted["Accepted"] == "True"  # valid; only its issuer's tokens fail
    finally:
        server.shutdown()
        server.server_close()
