"""The kustomize base has what running in a cluster needs (the apiserver checks the rest in
tests/kube/test_manifests.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from controlplane.inject.certs import SECRET_NAME

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def objects() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    out = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / resource).read_text()):
            if doc:
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_the_base_lists_every_kind_the_issue_asks_for():
    kinds = {kind for kind, _ in objects()}
    assert kinds >= {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
    names = {name for kind, name in objects() if kind == "CustomResourceDefinition"}
    assert {
        "virtualservices.networking.istio.io",
        "authorizationpolicies.security.istio.io",
    } <= names


def test_the_deployment_is_replicated_probed_bounded_and_locked_down():
    deployment = objects()[("Deployment", "controlplane")]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    secret = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")["secret"]
    assert secret["secretName"] == SECRET_NAME  # what `controlplane webhook-cert` prints
    service = objects()[("Service", "controlplane")]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc-xds": 15010, "https-webhook": 9443, "http-monitoring": 15014}


def test_the_cluster_role_grants_no_writes_beyond_status_events_peering_and_webhooks():
    role = objects()[("ClusterRole", "controlplane")]
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    for rule in role["rules"]:
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        if not writes & set(rule["verbs"]):
            continue
        for resource in rule["resources"]:
            allowed = (
                resource.endswith("/status")
                or resource in ("events", "clusterkopfpeerings", "tokenreviews")
                or (resource.endswith("webhookconfigurations") and rule.get("resourceNames"))
                # Automated deployment of Gateway API gateways (istiod's deployment
                # controller): created and server-side applied, never deleted (the garbage
                # collector deletes them with their Gateway).
                or (
                    resource in ("serviceaccounts", "services", "deployments")
                    and set(rule["verbs"]) & writes <= {"create", "patch"}
                )
            )
            assert allowed, (resource, rule["verbs"])
        assert "delete" not in rule["verbs"]
