"""The generated CRDs and the kustomize base, checked by the real apiserver."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.cluster import LocalCluster
from tests.kube.operator import install_crds

ROOT = Path(__file__).resolve().parents[2]


def test_the_crds_apply_and_kubectl_explain_shows_their_schema(kube_cluster: LocalCluster):
    install_crds(kube_cluster)
    for name in (
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "peerauthentications.security.istio.io",
        "authorizationpolicies.security.istio.io",
    ):
        crd = kube_cluster.get_json("crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True"
        assert conditions.get("NonStructuralSchema") is None  # the apiserver found it structural
    deadline = time.monotonic() + 30
    while True:  # the OpenAPI of a new CRD is published a moment after it is established
        proc = kube_cluster.kubectl("explain", "virtualservices.spec.http.route", check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr
    assert "weight\t<integer>" in proc.stdout and "destination\t<Object>" in proc.stdout
    assert "relative share of traffic" in proc.stdout
    older = kube_cluster.kubectl(
        "explain", "destinationrules.spec.subsets", "--api-version=networking.istio.io/v1alpha3"
    ).stdout
    assert "labels\t<map[string]string>" in older


def test_the_kustomize_base_passes_a_server_side_dry_run(kube_cluster: LocalCluster):
    # The namespace must exist for a dry run of the objects in it (nothing else is created).
    kube_cluster.kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    proc = kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests"), "--dry-run=server")
    out = proc.stdout
    for expected in (
        "serviceaccount/controlplane",
        "clusterrole.rbac.authorization.k8s.io/controlplane",
        "clusterrolebinding.rbac.authorization.k8s.io/controlplane",
        "deployment.apps/controlplane",
        "service/controlplane",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/controlplane-validation",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/controlplane-sidecar-injector",
        "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io",
    ):
        assert expected in out, out
    assert "(server dry run)" in out and not proc.stderr.strip()
    assert (
        kube_cluster.kubectl("get", "deployment", "-n", "istio-system", "-o", "name").stdout == ""
    )
    secret = subprocess.run(
        [sys.executable, "-m", "controlplane", "webhook-cert"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=secret).stdout
    assert "secret/controlplane-webhook-tls created (server dry run)" in out


ISTIO_YAML = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [mesh]
  exportTo: ["."]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
      uri: {prefix: /api}
      ignoreUriCase: true
      queryParams: {v: {regex: "^2"}}
      sourceLabels: {app: productpage}
      port: 9080
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 80
      headers: {request: {set: {x-canary: "yes"}}, response: {remove: [x-debug]}}
    - destination: {host: reviews, subset: v3}
      weight: 20
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure"}
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 0.5}}
      abort: {httpStatus: 503, percentage: {value: 0.1}}
    mirror: {host: reviews, subset: v1}
    mirrorPercentage: {value: 10.0}
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}]
      allowMethods: [GET, POST]
      maxAge: 24h
      allowCredentials: true
  - route: [{destination: {host: reviews, subset: v1}}]
  tcp:
  - match: [{port: 27017}]
    route: [{destination: {host: mongo, port: {number: 27017}}}]
  tls:
  - match: [{sniHosts: [login.example.com], port: 443}]
    route: [{destination: {host: login, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, h2UpgradePolicy: UPGRADE}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        simple: LEAST_REQUEST
        localityLbSetting:
          enabled: true
          distribute: [{from: us-west/zone1/*, to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}]
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/productpage], notNamespaces: [prod]}
    to:
    - operation: {methods: [GET], paths: ["/api/*"], ports: ["9080"]}
    when:
    - key: request.headers[version]
      values: [v1, v2]
"""


def test_istio_yaml_with_many_fields_passes_the_crd_schemas_with_strict_field_validation(
    kube_cluster: LocalCluster, kube_namespace: str
):
    install_crds(kube_cluster)
    proc = kube_cluster.kubectl(
        "apply", "-n", kube_namespace, "--dry-run=server", "--validate=strict", "-f", "-",
        input=ISTIO_YAML,
    )  # fmt: skip
    assert proc.stdout.count("(server dry run)") == 4, proc.stdout
    assert "unknown field" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
