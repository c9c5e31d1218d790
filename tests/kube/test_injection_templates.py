"""Injection templates through the real apiserver's admission webhook (part "templates").

The injector's ConfigMap (examples/injection-templates/injector-configmap.yaml, the
``istio-sidecar-injector`` ConfigMap in istio-system) is applied as a user would; the three
example Pods are created in a labelled namespace and come back with their helpers; a broken
ConfigMap is refused at the door, and one that gets in while the control plane is down is
refused when loaded while the last good templates keep being applied.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.cluster import KubectlError, LocalCluster
from tests.kube.operator import OperatorProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "injection-templates"
INJECTOR = yaml.safe_load((EXAMPLES / "injector-configmap.yaml").read_text())
PODS = {p["metadata"]["name"]: p for p in yaml.safe_load_all((EXAMPLES / "pods.yaml").read_text())}
CM = ("configmap", "istio-sidecar-injector", "-n", "istio-system")


def _names(spec: dict, kind: str) -> list[str]:
    return [c["name"] for c in spec.get(kind, [])]


def _probe_pod(ns: str, templates: str) -> dict:
    pod = json.loads(json.dumps(PODS["web"]))
    pod["metadata"] = {
        "name": "probe",
        "namespace": ns,
        "annotations": {"inject.istio.io/templates": templates},
    }
    pod["spec"]["serviceAccountName"] = "default"  # see _create
    return pod


def _dry_run(cluster: LocalCluster, pod: dict):
    return cluster.kubectl(
        "create", "-f", "-", "--dry-run=server", "-o", "json", input=json.dumps(pod), check=False
    )


def _wait_for_templates(cluster: LocalCluster, ns: str, templates: str, timeout: float = 60.0):
    """Until the injector applies ``templates`` (it has read the ConfigMap)."""
    deadline = time.time() + timeout
    while True:
        proc = _dry_run(cluster, _probe_pod(ns, templates))
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        if time.time() > deadline:
            raise TimeoutError(proc.stderr)
        time.sleep(0.2)


@pytest.fixture
def injected_ns(kube_cluster: LocalCluster, operator: OperatorProcess):
    kube_cluster.apply(INJECTOR)
    ns = kube_cluster.create_namespace(labels={"istio-injection": "enabled"})
    try:
        _wait_for_templates(kube_cluster, ns, "sidecar,log-collector")
        yield ns
    finally:
        kube_cluster.delete_namespace(ns)
        kube_cluster.kubectl("delete", *CM, "--ignore-not-found", check=False)


def _create(cluster: LocalCluster, ns: str, name: str) -> dict:
    pod = json.loads(json.dumps(PODS[name]))
    pod["metadata"]["namespace"] = ns
    # This test apiserver runs without the ServiceAccount admission plugin, which would set
    # it (a projected token needs a service account).
    pod["spec"].setdefault("serviceAccountName", "default")
    cluster.apply(pod)
    return cluster.get_json("pod", name, "-n", ns)


def test_the_log_collection_template_adds_a_native_collector_sharing_the_log_directory(
    kube_cluster: LocalCluster, injected_ns: str
):
    kube_cluster.apply(
        yaml.safe_load((EXAMPLES / "log-collector-config.yaml").read_text()), injected_ns
    )
    pod = _create(kube_cluster, injected_ns, "web")
    spec = pod["spec"]
    assert _names(spec, "initContainers") == ["istio-init", "istio-proxy", "log-collector"]
    assert _names(spec, "containers") == ["web"]
    collector = spec["initContainers"][2]
    assert collector["restartPolicy"] == "Always"  # native: this apiserver is 1.35
    assert collector["command"][:3] == ["controlplane", "helper", "log-collect"]
    assert collector["image"] == "ghcr.io/controlplane/controlplane:0.1.0"
    mounts = {m["name"]: m for m in collector["volumeMounts"]}
    assert mounts["app-logs"] == {"name": "app-logs", "mountPath": "/var/log/app", "readOnly": True}
    app_mounts = {m["name"]: m for m in spec["containers"][0].get("volumeMounts", [])}
    assert app_mounts["app-logs"]["mountPath"] == "/var/log/nginx"  # the Pod's annotation
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["app-logs"] == {"name": "app-logs", "emptyDir": {}}
    assert volumes["log-collector-config"]["configMap"]["name"] == "log-collector"
    status = json.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["templates"] == ["sidecar", "log-collector"]
    assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "web"


def test_the_secrets_template_adds_an_agent_with_a_projected_token_and_a_memory_volume(
    kube_cluster: LocalCluster, injected_ns: str
):
    kube_cluster.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "payments"}},
        injected_ns,
    )
    pod = _create(kube_cluster, injected_ns, "payments")
    spec = pod["spec"]
    assert _names(spec, "initContainers") == ["istio-init", "istio-proxy", "secrets-agent"]
    agent = spec["initContainers"][2]
    assert agent["restartPolicy"] == "Always"
    command = agent["command"]
    assert command[command.index("--address") + 1] == "http://vault.vault:8200"
    assert command[command.index("--role") + 1] == "payments"
    assert agent["startupProbe"]["exec"]["command"] == ["test", "-f", "/run/secrets/app/.synced"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["app-secrets"]["emptyDir"]["medium"] == "Memory"
    token = volumes["secrets-agent-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "vault" and token["path"] == "token"
    app = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert app["app-secrets"] == {
        "name": "app-secrets",
        "mountPath": "/run/secrets/app",
        "readOnly": True,
    }


def test_the_config_sync_template_adds_a_syncer_of_the_apps_config_directory(
    kube_cluster: LocalCluster, injected_ns: str
):
    pod = _create(kube_cluster, injected_ns, "catalog")
    spec = pod["spec"]
    assert _names(spec, "initContainers") == ["istio-init", "istio-proxy", "config-sync"]
    command = spec["initContainers"][2]["command"]
    assert command[command.index("--source") + 1] == "http://config-server.platform:8080/catalog"
    assert command[command.index("--interval") + 1] == "10"
    app = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert app["synced-config"]["mountPath"] == "/etc/app"
    assert app["synced-config"]["readOnly"] is True


def test_a_pod_missing_a_value_or_naming_an_unknown_template_is_refused_with_the_reason(
    kube_cluster: LocalCluster, injected_ns: str
):
    pod = json.loads(json.dumps(PODS["payments"]))
    pod["metadata"]["namespace"] = injected_ns
    del pod["metadata"]["annotations"]["secrets.controlplane.io/role"]
    pod["spec"]["serviceAccountName"] = "default"
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(pod)
    assert (
        "sidecar injection failed: template 'secrets-agent': spec.initContainers[0].command[6]: "
        "the pod has no annotation 'secrets.controlplane.io/role'" in refused.value.stderr
    )
    proc = _dry_run(kube_cluster, _probe_pod(injected_ns, "sidecar,log-shipper"))
    assert proc.returncode != 0
    assert (
        'requested template "log-shipper" not found; have config-sync, log-collector, '
        "secrets-agent, sidecar (from ConfigMap istio-system/istio-sidecar-injector)" in proc.stderr
    )


BROKEN = """
defaultTemplates: [sidecar]
templates:
  log-collector: |
    spec:
      initContainers:
      - name: log-collector
        image: ${image}
        restartPolicy: Always
        volumeMounts: [{name: app-logs, mountPath: /var/log/app, readOnly: true}]
      volumes:
      - name: app-logs
  brand-new: |
    spec:
      initContainers: [{name: brand-new, image: "${pod_uid}"}]
"""


@pytest.mark.slow  # waits out the webhook's timeout while the operator is paused
def test_an_invalid_template_is_refused_and_the_last_good_set_keeps_being_used(
    kube_cluster: LocalCluster, operator: OperatorProcess, injected_ns: str
):
    broken = json.loads(json.dumps(INJECTOR))
    broken["data"]["config"] = BROKEN
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(broken)
    message = refused.value.stderr
    assert (
        'admission webhook "injection-templates.validation.controlplane.istio.io" denied' in message
    )
    assert (
        "injection templates are invalid: Error [CP0820 InvalidInjectionTemplate] ConfigMap "
        "istio-system/istio-sidecar-injector: data.config.templates.log-collector.spec.volumes[0]: "
        "template 'log-collector': needs exactly one volume source" in message
    )
    assert (
        "data.config.templates.brand-new.spec.initContainers[0].image: template 'brand-new': "
        "unknown value ${pod_uid}" in message
    )
    # The ConfigMap still holds the good version.
    assert kube_cluster.get_json(*CM)["data"]["config"] == INJECTOR["data"]["config"]

    # While the control plane is down its ConfigMap stays editable (failurePolicy Ignore):
    # the broken version gets in, and the injector refuses it when it reads it.
    operator.pause()
    try:
        kube_cluster.apply(broken)
    finally:
        operator.resume()
    assert kube_cluster.get_json(*CM)["data"]["config"] == BROKEN
    operator.wait_for(
        lambda: (
            "injection templates refused: Error [CP0820 InvalidInjectionTemplate] ConfigMap "
            "istio-system/istio-sidecar-injector: data.config.templates.log-collector.spec.volumes[0]"
            in operator.log_text()
        ),
        timeout=60,  # the watch catches up after the pause; slow on a loaded machine
        what="the broken ConfigMap refused in the log",
    )
    assert (
        "the injector keeps the last good set (config-sync, log-collector, secrets-agent, sidecar"
        in operator.log_text()
    )

    # And on the ConfigMap, for `kubectl describe configmap` (it has no status).
    def refused_event():
        events = kube_cluster.get_json(
            "events",
            "-n",
            "istio-system",
            "--field-selector",
            "involvedObject.name=istio-sidecar-injector,reason=InvalidInjectionTemplate",
        )["items"]
        return events[-1] if events else None

    event = operator.wait_for(refused_event, timeout=60, what="the InvalidInjectionTemplate event")
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "ConfigMap"
    assert "data.config.templates.log-collector.spec.volumes[0]" in event["message"]
    assert event["message"].endswith("the injector keeps the last good set")
    # Pods get the last good templates: the collector as it was, and no brand-new one.
    pod = _wait_for_templates(kube_cluster, injected_ns, "sidecar,log-collector")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["app-logs"] == {"name": "app-logs", "emptyDir": {}}
    proc = _dry_run(kube_cluster, _probe_pod(injected_ns, "brand-new"))
    assert 'requested template "brand-new" not found' in proc.stderr

    # Fixed: the new version is used.
    fixed = json.loads(json.dumps(INJECTOR))
    fixed["data"]["config"] = BROKEN.replace(
        "- name: app-logs\n", "- {name: app-logs, emptyDir: {medium: Memory}}\n"
    ).replace('"${pod_uid}"', "busybox")
    kube_cluster.apply(fixed)
    pod = _wait_for_templates(kube_cluster, injected_ns, "brand-new")
    assert _names(pod["spec"], "initContainers") == ["brand-new"]
