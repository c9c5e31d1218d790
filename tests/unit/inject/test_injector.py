"""Sidecar injection as a pure function: what a Pod gets, opting out, and idempotence."""

from __future__ import annotations

import copy
import json

import jsonpatch
import pytest

from controlplane.inject.injector import (
    STATUS_ANNOTATION,
    InjectionConfig,
    injection_patch,
    wants_injection,
)


def pod(**meta) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reviews-v1", "namespace": "shop", **meta},
        "spec": {
            "serviceAccountName": "reviews",
            "containers": [
                {"name": "reviews", "image": "reviews:1", "ports": [{"containerPort": 9080}]}
            ],
        },
    }


def inject(body: dict, config: InjectionConfig | None = None) -> dict:
    ops = injection_patch(body, config or InjectionConfig())
    return jsonpatch.apply_patch(copy.deepcopy(body), ops)


def test_native_sidecar_is_an_init_container_that_restarts_always_after_the_redirect():
    out = inject(pod())
    init = out["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["istio-init", "istio-proxy"]
    assert init[1]["restartPolicy"] == "Always"
    assert [c["name"] for c in out["spec"]["containers"]] == ["reviews"]
    assert out["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
    status = json.loads(out["metadata"]["annotations"][STATUS_ANNOTATION])
    assert status["initContainers"] == ["istio-init", "istio-proxy"] and status["native"] is True
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "reviews"


def test_without_native_sidecars_the_proxy_is_a_regular_container():
    out = inject(pod(), InjectionConfig(native_sidecar=False))
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["istio-init"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["reviews", "istio-proxy"]
    assert "restartPolicy" not in out["spec"]["containers"][1]


def test_init_container_runs_the_redirect_command_with_the_capture_ports_and_proxy_uid():
    config = InjectionConfig(image="registry.example/cp:1", exclude_outbound_ports=(5432,))
    init = inject(pod(), config)["spec"]["initContainers"][0]
    assert init["image"] == "registry.example/cp:1"
    assert init["command"] == [
        "controlplane", "redirect", "--proxy-uid", "1337",
        "--inbound-capture-port", "15006", "--outbound-capture-port", "15001",
        "--exclude-inbound-ports", "15020,15021,15090", "--exclude-outbound-ports", "5432",
    ]  # fmt: skip
    assert init["securityContext"]["capabilities"] == {
        "add": ["NET_ADMIN", "NET_RAW"],
        "drop": ["ALL"],
    }


def test_proxy_runs_as_the_excluded_uid_with_its_own_projected_token():
    out = inject(pod(), InjectionConfig(token_audience="mesh-ca"))
    proxy = out["spec"]["initContainers"][1]
    assert proxy["securityContext"]["runAsUser"] == 1337
    assert proxy["securityContext"]["runAsNonRoot"] is True
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    assert mounts["istio-token"] == "/var/run/secrets/tokens"
    assert "--token-path" in proxy["command"]
    assert proxy["command"][proxy["command"].index("--token-path") + 1] == (
        "/var/run/secrets/tokens/istio-token"
    )
    token = next(v for v in out["spec"]["volumes"] if v["name"] == "istio-token")
    source = token["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "mesh-ca" and source["path"] == "istio-token"
    # Only the proxy sees the token; the application container is untouched.
    assert "volumeMounts" not in out["spec"]["containers"][0]


def test_injecting_twice_changes_nothing():
    once = inject(pod())
    assert injection_patch(once, InjectionConfig()) == []
    assert inject(once) == once


def test_a_pod_that_already_has_a_proxy_container_is_left_alone():
    body = pod()
    body["spec"]["containers"].append({"name": "istio-proxy", "image": "envoy"})
    assert injection_patch(body, InjectionConfig()) == []


@pytest.mark.parametrize("where", ["annotations", "labels"])
def test_the_opt_out_annotation_or_label_prevents_injection(where):
    body = pod(**{where: {"sidecar.istio.io/inject": "false"}})
    assert not wants_injection(body)
    assert injection_patch(body, InjectionConfig()) == []


def test_existing_init_containers_volumes_labels_and_annotations_are_kept():
    body = pod(labels={"app": "reviews"}, annotations={"team/owner": "books"})
    body["spec"]["initContainers"] = [{"name": "migrate", "image": "m:1"}]
    body["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    out = inject(body)
    assert [c["name"] for c in out["spec"]["initContainers"]] == [
        "migrate",
        "istio-init",
        "istio-proxy",
    ]
    assert [v["name"] for v in out["spec"]["volumes"]][0] == "data"
    assert out["metadata"]["labels"]["app"] == "reviews"
    assert out["metadata"]["annotations"]["team/owner"] == "books"
    # Keys with '/' are escaped in the JSON pointer, not split into paths.
    ops = injection_patch(body, InjectionConfig())
    assert {
        "op": "add",
        "path": "/metadata/labels/security.istio.io~1tlsMode",
        "value": "istio",
    } in ops
