"""Validation at the door and sidecar injection, through the real apiserver's webhooks."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.cluster.cluster import KubectlError, LocalCluster
from tests.kube.operator import OperatorProcess

INVALID_WEIGHT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {ns}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: 90
    - destination: {{host: reviews, subset: v2}}
      weight: -10
"""


def test_an_invalid_virtual_service_is_refused_with_the_validators_message(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(INVALID_WEIGHT.format(ns=kube_namespace))
    message = refused.value.stderr
    assert 'admission webhook "virtualservices.validation.controlplane.istio.io" denied' in message
    assert "spec.http[0].route[1].weight: must not be negative" in message
    gone = kube_cluster.kubectl(
        "get", "virtualservice", "reviews", "-n", kube_namespace, check=False
    )
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_every_error_is_listed_and_older_api_versions_are_validated_too(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    doc = f"""
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: reviews, namespace: {kube_namespace}}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v1, labels: {{version: v2}}}}
  trafficPolicy:
    outlierDetection: {{maxEjectionPercent: 150}}
"""
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(doc)
    message = refused.value.stderr
    assert "configuration is invalid:" in message
    assert "spec.subsets[1].name: duplicate subset name 'v1'" in message
    assert (
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100"
        in message
    )


def test_a_valid_resource_with_an_unsupported_field_is_admitted_with_a_warning(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    doc = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: {kube_namespace}}}
spec:
  hosts: [ratings]
  http:
  - match: [{{withoutHeaders: {{x-debug: {{exact: "1"}}}}}}]
    route: [{{destination: {{host: ratings}}}}]
"""
    proc = kube_cluster.kubectl("apply", "-f", "-", input=doc)
    assert "virtualservice.networking.istio.io/ratings created" in proc.stdout
    assert "spec.http[0].match[0].withoutHeaders: not supported yet; ignored" in proc.stderr


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: ratings}}
  annotations: {annotations}
spec:
  serviceAccountName: default
  containers: [{{name: ratings, image: example.invalid/ratings:1}}]
"""


def _create_pod(cluster: LocalCluster, ns: str, name: str, annotations: dict | None = None) -> dict:
    cluster.apply(POD.format(name=name, ns=ns, annotations=json.dumps(annotations or {})))
    return cluster.get_json("pod", name, "-n", ns)


def test_a_pod_in_a_labelled_namespace_comes_back_with_the_sidecar(
    kube_cluster: LocalCluster, operator: OperatorProcess
):
    ns = kube_cluster.create_namespace(labels={"istio-injection": "enabled"})
    try:
        pod = _create_pod(kube_cluster, ns, "ratings")
        spec = pod["spec"]
        assert [c["name"] for c in spec["initContainers"]] == ["istio-init", "istio-proxy"]
        init, proxy = spec["initContainers"]
        assert proxy["restartPolicy"] == "Always"  # a native sidecar: this apiserver is 1.35
        assert init["command"][:2] == ["controlplane", "redirect"]
        assert init["command"][init["command"].index("--inbound-capture-port") + 1] == "15006"
        assert init["command"][init["command"].index("--outbound-capture-port") + 1] == "15001"
        assert init["command"][init["command"].index("--proxy-uid") + 1] == "1337"
        assert proxy["securityContext"]["runAsUser"] == 1337
        token = next(v for v in spec["volumes"] if v["name"] == "istio-token")
        assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "istio-ca"
        assert pod["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
        assert "sidecar.istio.io/status" in pod["metadata"]["annotations"]
        assert [c["name"] for c in spec["containers"]] == ["ratings"]
        # Server-side dry run of the injected Pod (as re-submitted) adds nothing again.
        pod["metadata"] = {
            k: v for k, v in pod["metadata"].items() if k in ("labels", "annotations", "namespace")
        } | {"name": "ratings-again"}
        pod.pop("status", None)
        again = kube_cluster.kubectl(
            "create", "-f", "-", "--dry-run=server", "-o", "json", input=json.dumps(pod)
        )
        spec_again = json.loads(again.stdout)["spec"]
        assert [c["name"] for c in spec_again["initContainers"]] == ["istio-init", "istio-proxy"]
        assert len(spec_again["volumes"]) == len(spec["volumes"])
    finally:
        kube_cluster.delete_namespace(ns)


def test_a_pod_whose_metrics_cannot_be_merged_is_refused_naming_the_annotation(
    kube_cluster: LocalCluster, operator: OperatorProcess
):
    # As istiod: a scrape port that is the proxy's own cannot be merged; the Pod is refused.
    ns = kube_cluster.create_namespace(labels={"istio-injection": "enabled"})
    try:
        with pytest.raises(KubectlError) as refused:
            _create_pod(kube_cluster, ns, "ratings", annotations={"prometheus.io/port": "15090"})
        assert (
            "injection failed: metadata.annotations[prometheus.io/port]: 15090 is the proxy's "
            "port" in refused.value.stderr
        )
    finally:
        kube_cluster.delete_namespace(ns)


def test_the_mesh_config_can_turn_the_metrics_merge_off(
    kube_cluster: LocalCluster, operator: OperatorProcess
):
    # istiod's enablePrometheusMerge: false leaves the Pod's scrape annotations as written.
    import textwrap

    kube_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": textwrap.dedent("enablePrometheusMerge: false\n")},
        }
    )
    ns = kube_cluster.create_namespace(labels={"istio-injection": "enabled"})
    try:
        operator.wait_for(
            lambda: any(
                s["resource"] == "MeshConfig istio-system/istio" for s in operator.status()
            ),
            what="the mesh config",
        )
        pod = _create_pod(kube_cluster, ns, "ratings", annotations={"prometheus.io/port": "9100"})
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9100"
        proxy = next(c for c in pod["spec"]["initContainers"] if c["name"] == "istio-proxy")
        assert "ISTIO_PROMETHEUS_ANNOTATIONS" not in {e["name"] for e in proxy["env"]}
    finally:
        kube_cluster.kubectl("delete", "configmap", "istio", "-n", "istio-system")
        kube_cluster.delete_namespace(ns)


def test_no_sidecar_in_an_unlabelled_namespace_or_with_the_opt_out_annotation(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    plain = _create_pod(kube_cluster, kube_namespace, "ratings")
    assert "initContainers" not in plain["spec"]
    assert "sidecar.istio.io/status" not in plain["metadata"].get("annotations", {})
    ns = kube_cluster.create_namespace(labels={"istio-injection": "enabled"})
    try:
        opted_out = _create_pod(
            kube_cluster, ns, "ratings", annotations={"sidecar.istio.io/inject": "false"}
        )
        assert "initContainers" not in opted_out["spec"]
        assert "security.istio.io/tlsMode" not in opted_out["metadata"].get("labels", {})
    finally:
        kube_cluster.delete_namespace(ns)


def _metrics_app():  # type: ignore[no-untyped-def]
    """A test application serving ``ratings_requests_total 3`` at /metrics (loopback)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"# TYPE ratings_requests_total counter\nratings_requests_total 3\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_injected_proxy_command_bootstraps_a_real_envoy_that_the_operator_configures(
    kube_cluster: LocalCluster, operator: OperatorProcess, tmp_path
):
    """Run what injection put into the Pod: its proxy command writes the bootstrap (from the
    downward API and a real projected token), the Envoy it starts syncs with the operator, and
    a renewed token hot-restarts Envoy with the new credential."""
    import os
    import subprocess
    import sys
    import urllib.request

    import yaml

    from controlplane.testing.ports import free_port

    ns = kube_cluster.create_namespace(labels={"istio-injection": "enabled"})
    try:
        app_metrics = {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"}
        pod = _create_pod(kube_cluster, ns, "ratings", annotations=app_metrics)
        proxy = next(c for c in pod["spec"]["initContainers"] if c["name"] == "istio-proxy")
        command = proxy["command"]
        assert command[:2] == ["controlplane", "sidecar"]
        # Istio's metrics merge, as the webhook wrote it: scraped at the merged endpoint, the
        # app's own annotations moved into the proxy's environment, Envoy's port named.
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == "15020"
        assert annotations["prometheus.io/path"] == "/stats/prometheus"
        assert annotations["prometheus.io/scrape"] == "true"
        moved = {e["name"]: e.get("value") for e in proxy["env"]}["ISTIO_PROMETHEUS_ANNOTATIONS"]
        assert json.loads(moved) == {"scrape": "true", "path": "", "port": "9100"}
        assert {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"} in proxy[
            "ports"
        ]
        # What the kubelet would provide: the token (same audience), the labels file, the env.
        audience = next(v for v in pod["spec"]["volumes"] if v["name"] == "istio-token")[
            "projected"
        ]["sources"][0]["serviceAccountToken"]["audience"]
        token = kube_cluster.kubectl(
            "create", "token", "default", "-n", ns, f"--audience={audience}"
        ).stdout.strip()
        (tmp_path / "istio-token").write_text(token)
        labels = "".join(f'{k}="{v}"\n' for k, v in pod["metadata"]["labels"].items())
        (tmp_path / "labels").write_text(labels)
        env = dict(os.environ, POD_NAME="ratings", POD_NAMESPACE=ns, INSTANCE_IP="127.0.3.20")
        env["SERVICE_ACCOUNT"] = pod["spec"]["serviceAccountName"]
        args = list(command[2:])
        overrides = {
            "--xds-address": "127.0.0.1",  # the Service name, as seen from this host
            "--xds-port": str(operator.xds_port),
            "--token-path": str(tmp_path / "istio-token"),
            "--labels-path": str(tmp_path / "labels"),
            "--bootstrap-path": str(tmp_path / "envoy.yaml"),
            "--status-port": str(status := free_port()),  # 15020 in the Pod
        }
        for flag, value in overrides.items():
            args[args.index(flag) + 1] = value
        args += ["--prometheus-port", str(prom := free_port())]  # 15090 in the Pod
        # The application's metrics, where the moved annotations say (on a free port here).
        app = _metrics_app()
        env["ISTIO_PROMETHEUS_ANNOTATIONS"] = json.dumps(
            json.loads(moved) | {"port": str(app.server_address[1])}
        )
        admin = free_port()
        # The entry as the container runs it: it writes the bootstrap and supervises Envoy.
        log = open(tmp_path / "sidecar.log", "wb")  # noqa: SIM115 (closed below)
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "sidecar", *args, "--admin-port", str(admin),
             "--token-poll", "0.2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            node_id = f"sidecar~127.0.3.20~ratings.{ns}~{ns}.svc.cluster.local"
            bootstrap = operator.wait_for(
                lambda: yaml.safe_load((tmp_path / "envoy.yaml").read_text()),
                what="the bootstrap",
            )
            assert bootstrap["node"]["id"] == node_id
            assert bootstrap["node"]["metadata"]["LABELS"]["security.istio.io/tlsMode"] == "istio"
            grpc = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]
            assert grpc["initial_metadata"] == [
                {"key": "authorization", "value": f"Bearer {token}"}
            ]
            # Transparent mode: the listeners (and so RDS) depend on interception, which
            # this host does not do; clusters, endpoints and listeners must be ACKed.
            operator.debug.wait_synced(node_id, types=("cds", "eds", "lds"), timeout=30)
            (seen,) = [
                p for p in operator.debug.get("/debug/syncz")["proxies"] if p["node_id"] == node_id
            ]
            assert seen["namespace"] == ns and seen["service_account"] == "default"
            # The token was checked with a TokenReview: the mesh CA issued this identity's
            # certificate, and Envoy holds it (read from Envoy, not from the operator).
            spiffe = f"spiffe://cluster.local/ns/{ns}/sa/default"

            def envoy_holds_certificate() -> bool:
                certs = json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{admin}/certs", timeout=2)
                    .read()
                    .decode()
                )
                return any(
                    san.get("uri") == spiffe
                    for cert in certs.get("certificates", [])
                    for chain in cert.get("cert_chain", [])
                    for san in chain.get("subject_alt_names", [])
                )

            operator.wait_for(envoy_holds_certificate, timeout=30, what="the workload certificate")

            # Envoy's statistics on its Prometheus port, and through the merged endpoint the
            # entry serves, followed by the application's.
            def scrape(port: int) -> str:
                url = f"http://127.0.0.1:{port}/stats/prometheus"
                return urllib.request.urlopen(url, timeout=5).read().decode()

            xds_requests = 'envoy_cluster_upstream_rq_total{cluster_name="xds-grpc"}'
            assert xds_requests in scrape(prom)
            merged = scrape(status)
            assert xds_requests in merged
            assert "ratings_requests_total 3" in merged.splitlines()

            # The kubelet renews the token (an atomic replace): Envoy is hot-restarted with a
            # bootstrap that carries the new one, and the new epoch syncs in turn.
            renewed = kube_cluster.kubectl(
                "create", "token", "default", "-n", ns, f"--audience={audience}",
                "--duration=20m",
            ).stdout.strip()  # fmt: skip
            assert renewed != token
            (tmp_path / "istio-token.new").write_text(renewed)
            os.replace(tmp_path / "istio-token.new", tmp_path / "istio-token")

            def new_epoch_synced() -> bool:
                boot = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
                header = boot["dynamic_resources"]["ads_config"]["grpc_services"][0]
                if header["initial_metadata"][0]["value"] != f"Bearer {renewed}":
                    return False
                info = json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{admin}/server_info", timeout=2)
                    .read()
                    .decode()
                )
                streams = [
                    p
                    for p in operator.debug.get("/debug/syncz")["proxies"]
                    if p["node_id"] == node_id and p["stream"] != seen["stream"]
                ]
                return info["command_line_options"]["restart_epoch"] == 1 and any(
                    all(p["types"].get(t, {}).get("status") == "SYNCED" for t in ("cds", "lds"))
                    for p in streams
                )

            operator.wait_for(new_epoch_synced, timeout=30, what="the hot-restarted Envoy")
        finally:
            sidecar.terminate()
            code = sidecar.wait(timeout=30)
            log.close()
            app.shutdown()
        assert code == 0, (tmp_path / "sidecar.log").read_text()[-2000:]
    finally:
        kube_cluster.delete_namespace(ns)


def test_a_pod_that_opts_in_is_injected_unless_its_namespace_disables_injection(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    opt_in = POD.format(name="ratings", ns=kube_namespace, annotations="{}").replace(
        "labels: {app: ratings}", 'labels: {app: ratings, sidecar.istio.io/inject: "true"}'
    )
    kube_cluster.apply(opt_in)
    pod = kube_cluster.get_json("pod", "ratings", "-n", kube_namespace)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["istio-init", "istio-proxy"]
    ns = kube_cluster.create_namespace(labels={"istio-injection": "disabled"})
    try:
        kube_cluster.apply(opt_in.replace(f"namespace: {kube_namespace}", f"namespace: {ns}"))
        pod = kube_cluster.get_json("pod", "ratings", "-n", ns)
        assert "initContainers" not in pod["spec"]
    finally:
        kube_cluster.delete_namespace(ns)


def test_webhook_configurations_overwritten_with_the_manifests_copy_are_put_back(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    from pathlib import Path

    # The manifests' copy points at the in-cluster Service and has no CA bundle: written
    # over ours it would break admission. The operator notices and writes its own back.
    static = Path(__file__).resolve().parents[2] / "manifests" / "webhooks.yaml"
    # What the apiserver stored for the replace, read from its answer: a read-back afterwards
    # can race the operator, which may already have put its own copy back.
    replaced = kube_cluster.kubectl("replace", "-f", str(static), "-o", "yaml").stdout
    stored = {item["kind"]: item for item in yaml.safe_load_all(replaced) if item}
    hooks = stored["ValidatingWebhookConfiguration"]
    assert "service" in hooks["webhooks"][0]["clientConfig"]

    def restored() -> bool:
        for kind, name in (
            ("validatingwebhookconfiguration", "controlplane-validation"),
            ("mutatingwebhookconfiguration", "controlplane-sidecar-injector"),
        ):
            for hook in kube_cluster.get_json(kind, name)["webhooks"]:
                config = hook["clientConfig"]
                if f":{operator.webhook_port}/" not in config.get("url", "") or not config.get(
                    "caBundle"
                ):
                    return False
        return True

    operator.wait_for(restored, timeout=20, what="webhook configurations restored")
    import time

    written = operator.log_text().count("webhook configuration controlplane-validation points at")
    time.sleep(2.5)  # checked every second: unchanged configurations are not rewritten
    assert operator.log_text().count("controlplane-validation points at") == written
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(INVALID_WEIGHT.format(ns=kube_namespace))
    assert "spec.http[0].route[1].weight: must not be negative" in refused.value.stderr


HEADER_WITH_SPACE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-headers, namespace: {ns}}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews}}}}]
    headers: {{request: {{set: {{"x canary": "on"}}}}}}
"""
RULEZ_DENY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: {ns}}}
spec:
  action: DENY
  rulez: [{{to: [{{operation: {{paths: [/admin]}}}}]}}]
"""


def test_a_header_name_with_a_space_is_refused_by_the_webhook(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess
):
    # issue 11: Envoy would take it and then fail every request on the route (503)
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(HEADER_WITH_SPACE.format(ns=kube_namespace))
    message = refused.value.stderr
    assert 'admission webhook "virtualservices.validation.controlplane.istio.io" denied' in message
    assert (
        "spec.http[0].headers.request.set.x canary: 'x canary' is not a valid HTTP header name"
        in message
    )


@pytest.mark.parametrize("validate", ["strict", "false"])
def test_a_deny_policy_with_a_misspelt_rules_field_is_refused(
    kube_cluster: LocalCluster, kube_namespace: str, operator: OperatorProcess, validate: str
):
    """Refused either way: kubectl's strict field validation names the unknown field; with it
    off, the apiserver prunes ``rulez`` and the webhook refuses a DENY without rules (as
    istiod does), so the DENY meant for /admin never becomes one that lets everything in."""
    doc = RULEZ_DENY.format(ns=kube_namespace)
    proc = kube_cluster.kubectl(
        "apply", f"--validate={validate}", "-f", "-", input=doc, check=False
    )
    assert proc.returncode != 0
    if validate == "strict":
        assert "rulez" in proc.stderr
    else:
        assert "spec.rules: a DENY policy without rules never triggers" in proc.stderr
    gone = kube_cluster.kubectl(
        "get", "authorizationpolicy", "deny-admin", "-n", kube_namespace, check=False
    )
    assert gone.returncode != 0 and "NotFound" in gone.stderr
