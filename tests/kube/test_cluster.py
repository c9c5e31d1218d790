"""Smoke tests of the real test cluster (tests/cluster): it starts, serves kubectl, keeps data
across an API server restart, runs admission webhooks and binds only to loopback."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cluster.cluster import KubectlError, LocalCluster


def test_cluster_is_ready(kube_cluster: LocalCluster):
    assert kube_cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == kube_cluster.version
    assert version["clientVersion"]["gitVersion"] == kube_cluster.version
    names = kube_cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in names
    assert kube_cluster.server.startswith("https://127.0.0.1:")
    assert Path(kube_cluster.kubeconfig).is_file() and Path(kube_cluster.ca_cert_path).is_file()
    # The Python client works with the generated kubeconfig (EC client certificate).
    from kubernetes import client

    with kube_cluster.api_client() as api:
        assert client.CoreV1Api(api).read_namespace("default").metadata.name == "default"
    # The kubectl in use is the one the build script made, not whatever is on PATH.
    assert kube_cluster.kubectl_path.startswith(str(kube_cluster.bin_dir))


def test_apply_namespace_service_pod(kube_cluster: LocalCluster):
    ns = f"smoke-{secrets.token_hex(4)}"
    manifest = f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels: {{istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: {ns}, labels: {{app: reviews}}}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1, namespace: {ns}, labels: {{app: reviews, version: v1}}}}
spec:
  initContainers:
  - name: sidecar          # a native sidecar (restartPolicy: Always), supported since 1.29
    image: example.invalid/proxy:1
    restartPolicy: Always
  containers:
  - name: reviews
    image: example.invalid/reviews:1
    ports: [{{containerPort: 9080}}]
"""
    out = kube_cluster.kubectl("apply", "-f", "-", input=manifest).stdout
    assert f"namespace/{ns} created" in out
    assert "service/reviews created" in out
    assert "pod/reviews-v1 created" in out
    try:
        svc = kube_cluster.get_json("service", "reviews", "-n", ns)
        assert svc["spec"]["ports"][0]["port"] == 9080
        assert svc["spec"]["clusterIP"]  # allocated from the service CIDR
        pod = kube_cluster.get_json("pod", "reviews-v1", "-n", ns)
        assert pod["metadata"]["labels"] == {"app": "reviews", "version": "v1"}
        assert pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"
        assert "nodeName" not in pod["spec"]  # nothing schedules pods
        names = kube_cluster.kubectl("get", "svc,pods", "-n", ns, "-o", "name").stdout.split()
        assert names == ["service/reviews", "pod/reviews-v1"]
        # Re-applying is a no-op.
        out = kube_cluster.kubectl("apply", "-f", "-", input=manifest).stdout
        assert "pod/reviews-v1 unchanged" in out
    finally:
        assert kube_cluster.delete_namespace(ns)
    gone = kube_cluster.kubectl("get", "namespace", ns, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.controlplane.test
spec:
  group: smoke.controlplane.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""


def test_crd_apply_and_create(kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path):
    crd_file = tmp_path / "crd.yaml"
    crd_file.write_text(CRD)
    kube_cluster.kubectl("apply", "-f", str(crd_file))
    try:
        kube_cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/widgets.smoke.controlplane.test",
        )
        widget = {
            "apiVersion": "smoke.controlplane.test/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        kube_cluster.apply(widget, namespace=kube_namespace)
        got = kube_cluster.get_json("widgets", "w1", "-n", kube_namespace)
        assert got["spec"] == {"size": 3}
        assert got["metadata"]["generation"] == 1
        # The schema is enforced.
        bad = dict(widget, metadata={"name": "w2"}, spec={"size": 0})
        with pytest.raises(KubectlError) as err:
            kube_cluster.apply(bad, namespace=kube_namespace)
        assert "spec.size" in err.value.stderr
        # Status subresource works (what a controller's status writer uses).
        kube_cluster.kubectl(
            "patch",
            "widget",
            "w1",
            "-n",
            kube_namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"ok": true}}',
        )
        assert kube_cluster.get_json("widget", "w1", "-n", kube_namespace)["status"] == {"ok": True}
    finally:
        kube_cluster.delete_namespace(kube_namespace)
        kube_cluster.kubectl("delete", "-f", str(crd_file), "--wait=false")


class _WebhookHandler(BaseHTTPRequestHandler):
    """Denies ConfigMaps named deny-me; labels every other ConfigMap webhook=seen."""

    calls: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        path = self.path.split("?")[0]  # the API server appends ?timeout=5s
        type(self).calls.append(f"{path} {req['name']}")
        resp = {"uid": req["uid"], "allowed": True}
        if path == "/validate" and req["name"] == "deny-me":
            resp = {"uid": req["uid"], "allowed": False, "status": {"message": "denied by test"}}
        elif path == "/mutate":
            import base64

            patch = [{"op": "add", "path": "/metadata/labels", "value": {"webhook": "seen"}}]
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_admission_webhooks_are_called(kube_cluster: LocalCluster, kube_namespace: str):
    cert, key = kube_cluster.issue_server_cert("smoke-webhook", ["127.0.0.1", "localhost"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebhookHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    kube_cluster.kubectl("label", "namespace", kube_namespace, "smoke-webhook=on")

    def hook(path: str) -> dict:
        return {
            "name": f"{path}.smoke.controlplane.test",
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}/{path}",
                "caBundle": kube_cluster.ca_bundle(),
            },
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["configmaps"],
                }
            ],
            "namespaceSelector": {"matchLabels": {"smoke-webhook": "on"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }

    configs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "smoke-mutate"},
            "webhooks": [hook("mutate")],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "smoke-validate"},
            "webhooks": [hook("validate")],
        },
    ]
    try:
        kube_cluster.apply(configs)
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}
        # Webhook configurations take effect asynchronously: retry the first create briefly.
        import time

        deadline = time.monotonic() + 15
        while True:
            kube_cluster.apply(dict(cm, metadata={"name": "probe"}), namespace=kube_namespace)
            labels = kube_cluster.get_json("cm", "probe", "-n", kube_namespace)["metadata"].get(
                "labels", {}
            )
            if labels.get("webhook") == "seen" or time.monotonic() > deadline:
                break
            kube_cluster.kubectl("delete", "cm", "probe", "-n", kube_namespace)
            time.sleep(0.2)
        assert labels == {"webhook": "seen"}
        with pytest.raises(KubectlError) as err:
            kube_cluster.apply(dict(cm, metadata={"name": "deny-me"}), namespace=kube_namespace)
        assert "denied by test" in err.value.stderr
        assert "/validate deny-me" in _WebhookHandler.calls
    finally:
        kube_cluster.kubectl(
            "delete",
            "mutatingwebhookconfiguration/smoke-mutate",
            "validatingwebhookconfiguration/smoke-validate",
            "--ignore-not-found",
        )
        server.shutdown()
        server.server_close()


def _listening_addresses(pid: int) -> set[str]:
    """host:port (hex, as in /proc/net/tcp*) of the TCP sockets ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                found.add(fields[1])
    return found


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_binds_only_to_loopback(kube_cluster: LocalCluster):
    loopback_v4 = "0100007F"  # 127.0.0.1, little-endian hex
    pids = kube_cluster.pids
    assert set(pids) == {"etcd", "kube-apiserver"}
    for name, pid in pids.items():
        addrs = _listening_addresses(pid)
        assert addrs, name
        assert all(a.split(":")[0] == loopback_v4 for a in addrs), (name, addrs)
    ports = {int(a.split(":")[1], 16) for a in _listening_addresses(pids["kube-apiserver"])}
    assert ports == {kube_cluster.apiserver_port}


def test_restart_apiserver_keeps_data(kube_cluster: LocalCluster, kube_namespace: str):
    kube_cluster.kubectl(
        "create", "configmap", "survivor", "-n", kube_namespace, "--from-literal=k=v"
    )
    server, pid = kube_cluster.server, kube_cluster.pids["kube-apiserver"]
    downtime = kube_cluster.restart_apiserver()
    assert downtime < 120
    assert kube_cluster.server == server
    assert kube_cluster.pids["kube-apiserver"] != pid
    cm = kube_cluster.get_json("configmap", "survivor", "-n", kube_namespace)
    assert cm["data"] == {"k": "v"}
    kube_cluster.kubectl("create", "configmap", "after-restart", "-n", kube_namespace)
    assert kube_cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
