"""Injection templates: loading and validation, rendering, order, merge, native sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controlplane.api.issues import InvalidResource
from controlplane.inject.admission import InjectorTemplates, template_verdict
from controlplane.inject.injector import InjectionConfig, injection_patch
from controlplane.inject.templates import (
    InjectionRefused,
    inject,
    load_template_config,
    load_template_configmap,
    load_template_path,
    templated_patch,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "injection-templates"
CONFIG = InjectionConfig(image="registry.example/cp:7")

HELPER = """
templates:
  helper: |
    metadata:
      labels: {helped: "yes"}
      annotations: {helper.example/owner: "${namespace}/${pod_name}"}
    spec:
      containers:
      - name: ${app_container}
        env: [{name: HELPER_URL, value: "http://127.0.0.1:9000"}]
        volumeMounts: [{name: shared, mountPath: "${annotations.example/dir|/data}"}]
      initContainers:
      - name: helper
        image: ${image}
        restartPolicy: Always
        args: ["--sa=${service_account}", "--team=${labels.team}", "$$HOME", "$(POD_IP)"]
        volumeMounts: [{name: shared, mountPath: /shared, readOnly: true}]
      volumes:
      - {name: shared, emptyDir: {}}
  second: |
    spec:
      initContainers:
      - {name: second, image: busybox, command: [sh, -c, "true"]}
"""


def pod(annotations: dict | None = None, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "labels": {"app": "web", "team": "storefront", **(labels or {})},
            "annotations": annotations or {},
        },
        "spec": {
            "serviceAccountName": "web-sa",
            "containers": [{"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}]}],
        },
    }


def templates():
    return load_template_config(HELPER, "test")


def names(spec: dict, kind: str) -> list[str]:
    return [c["name"] for c in spec.get(kind, [])]


def test_the_examples_load_and_the_configmap_holds_the_same_templates_as_the_directory():
    from_configmap = load_template_path(EXAMPLES / "injector-configmap.yaml")
    from_directory = load_template_path(EXAMPLES / "templates")
    assert sorted(from_configmap.templates) == ["config-sync", "log-collector", "secrets-agent"]
    assert from_configmap.templates == from_directory.templates
    assert from_configmap.default_templates == ("sidecar",)


def test_templates_apply_in_the_order_the_annotation_names_them():
    out = inject(pod({"inject.istio.io/templates": "second,sidecar,helper"}), CONFIG, templates())
    assert names(out["spec"], "initContainers") == ["second", "istio-init", "istio-proxy", "helper"]
    out = inject(pod({"inject.istio.io/templates": "helper,second"}), CONFIG, templates())
    assert names(out["spec"], "initContainers") == ["helper", "second"]  # no Envoy asked for
    assert "security.istio.io/tlsMode" not in out["metadata"]["labels"]


def test_without_the_annotation_the_default_templates_apply():
    assert inject(pod(), CONFIG, templates())["spec"]["initContainers"][1]["name"] == "istio-proxy"
    only_helper = load_template_config(HELPER + "defaultTemplates: [helper]\n", "test")
    assert names(inject(pod(), CONFIG, only_helper)["spec"], "initContainers") == ["helper"]


def test_a_pod_that_only_wants_the_sidecar_gets_exactly_the_patch_it_got_before_templates():
    assert templated_patch(pod(), CONFIG, templates()) == injection_patch(pod(), CONFIG)


def test_values_come_from_the_pod_and_merge_into_the_app_container():
    body = pod({"inject.istio.io/templates": "helper", "example/dir": "/srv/data"})
    out = inject(body, CONFIG, templates())
    helper = out["spec"]["initContainers"][0]
    assert helper["image"] == "registry.example/cp:7"
    assert helper["args"] == ["--sa=web-sa", "--team=storefront", "$HOME", "$(POD_IP)"]
    app = out["spec"]["containers"][0]
    assert app["image"] == "nginx"  # merged by name: the app keeps what it had
    assert app["env"] == [
        {"name": "A", "value": "1"},
        {"name": "HELPER_URL", "value": "http://127.0.0.1:9000"},
    ]
    assert app["volumeMounts"] == [{"name": "shared", "mountPath": "/srv/data"}]
    assert out["metadata"]["labels"]["helped"] == "yes"
    assert out["metadata"]["annotations"]["helper.example/owner"] == "shop/web-1"
    status = json.loads(out["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["templates"] == ["helper"] and status["initContainers"] == ["helper"]
    assert status["volumes"] == ["shared"]
    # The default applies when the annotation is absent.
    default = inject(pod({"inject.istio.io/templates": "helper"}), CONFIG, templates())
    assert default["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/data"


def test_a_value_is_text_never_structure():
    body = pod({"inject.istio.io/templates": "helper", "example/dir": "{a: b}\n- ${image}"})
    out = inject(body, CONFIG, templates())
    assert out["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "{a: b}\n- ${image}"


def test_a_pod_without_a_value_the_template_requires_is_refused_with_the_reason():
    body = pod({"inject.istio.io/templates": "helper"})
    del body["metadata"]["labels"]["team"]
    with pytest.raises(InjectionRefused) as refused:
        inject(body, CONFIG, templates())
    assert str(refused.value) == (
        "template 'helper': spec.initContainers[0].args[1]: the pod has no label 'team' "
        "and the template gives no default"
    )


def test_an_unknown_template_is_refused_as_istiod_words_it():
    with pytest.raises(InjectionRefused) as refused:
        inject(pod({"inject.istio.io/templates": "sidecar,nope"}), CONFIG, templates())
    assert str(refused.value) == (
        'requested template "nope" not found; have helper, second, sidecar (from test)'
    )


def test_without_native_sidecars_a_restart_always_init_container_becomes_a_container():
    body = pod({"inject.istio.io/templates": "sidecar,helper"})
    out = inject(body, InjectionConfig(native_sidecar=False), templates())
    assert names(out["spec"], "initContainers") == ["istio-init"]
    assert names(out["spec"], "containers") == ["web", "istio-proxy", "helper"]
    assert all("restartPolicy" not in c for c in out["spec"]["containers"])
    # The Pod's own sidecar.istio.io/nativeSidecar annotation wins, as in istiod.
    body["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"] = "true"
    out = inject(body, InjectionConfig(native_sidecar=False), templates())
    assert names(out["spec"], "initContainers") == ["istio-init", "istio-proxy", "helper"]


def test_injecting_twice_changes_nothing_and_opting_out_is_honoured():
    once = inject(pod({"inject.istio.io/templates": "sidecar,helper"}), CONFIG, templates())
    assert templated_patch(once, CONFIG, templates()) == []
    out = pod({"inject.istio.io/templates": "helper", "sidecar.istio.io/inject": "false"})
    assert templated_patch(out, CONFIG, templates()) == []


def _errors(text: str) -> list[str]:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio-sidecar-injector", "namespace": "istio-system"},
        "data": {"config": text},
    }
    with pytest.raises(InvalidResource) as invalid:
        load_template_configmap(configmap)
    assert template_verdict(configmap) == [str(i) for i in invalid.value.issues]
    return [str(i) for i in invalid.value.issues]


def test_an_invalid_template_names_the_configmap_the_template_the_field_and_the_reason():
    errors = _errors(
        """
templates:
  broken: |
    spec:
      containers:
      - name: helper
        image: x
        imagePullPolice: Always
        args: ["${pod_uid}"]
      - name: worker
        image: y
        restartPolicy: Always
      volumes:
      - name: cache
"""
    )
    prefix = (
        "Error [CP0820 InvalidInjectionTemplate] ConfigMap istio-system/istio-sidecar-injector: "
    )
    assert errors == [
        prefix + "data.config.templates.broken.spec.containers[0].imagePullPolice: "
        "template 'broken': not a field of a Kubernetes container",
        prefix + "data.config.templates.broken.spec.containers[1].restartPolicy: "
        "template 'broken': only 'Always', on an init container (a native sidecar)",
        prefix + "data.config.templates.broken.spec.volumes[0]: "
        "template 'broken': needs exactly one volume source (emptyDir, configMap, ...)",
        prefix + "data.config.templates.broken.spec.containers[0].args[0]: template 'broken': "
        "unknown value ${pod_uid} (known: pod_name, namespace, service_account, app_container, "
        "image, annotations.KEY, labels.KEY, each with an optional |default)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "templates: {sidecar: 'spec: {}'}",
            "templates.sidecar: template 'sidecar': the name 'sidecar' is reserved",
        ),
        ("templates: {x: 'spec: [1'}", "templates.x: template 'x': not YAML"),
        (
            "templates: {x: 'spec: {}', y: 'kind: Pod'}",
            "templates.y.kind: template 'y': unknown field",
        ),
        (
            "templates: {}\ndefaultTemplates: [missing]",
            "defaultTemplates[0]: no template named 'missing'",
        ),
        ("[1, 2]", "data.config: must be a mapping"),
    ],
)
def test_every_kind_of_bad_config_is_refused_with_its_place(text: str, expected: str):
    assert any(expected in e for e in _errors(text)), _errors(text)


def test_the_injector_keeps_the_last_good_set_when_a_new_version_is_invalid():
    keeper = InjectorTemplates("istio-system")
    good = yaml.safe_load((EXAMPLES / "injector-configmap.yaml").read_text())
    keeper.observe("ADDED", good)
    assert "log-collector" in keeper.current.templates and keeper.error is None
    bad = {**good, "data": {"config": "templates: {x: 'spec: {volumes: [{name: v}]}'}"}}
    keeper.observe("MODIFIED", bad)
    assert "log-collector" in keeper.current.templates  # still the last good set
    assert keeper.error is not None and "templates.x.spec.volumes[0]" in keeper.error
    keeper.observe("DELETED", good)
    assert keeper.current.templates == {}


def test_a_template_directory_names_the_file_in_its_errors(tmp_path: Path):
    (tmp_path / "ok.yaml").write_text("spec: {volumes: [{name: v, emptyDir: {}}]}\n")
    (tmp_path / "bad.yaml").write_text("spec: {initContainers: [{image: x}]}\n")
    with pytest.raises(InvalidResource) as invalid:
        load_template_path(tmp_path)
    assert [str(i) for i in invalid.value.issues] == [
        f"Error [CP0820 InvalidInjectionTemplate] {tmp_path / 'bad.yaml'}: "
        "spec.initContainers[0].name: template 'bad': required"
    ]


def test_the_example_templates_render_for_the_example_pods():
    loaded = load_template_path(EXAMPLES / "templates")
    pods = list(yaml.safe_load_all((EXAMPLES / "pods.yaml").read_text()))
    web, payments, catalog = (inject(p, CONFIG, loaded) for p in pods)
    collector = web["spec"]["initContainers"][-1]
    assert collector["name"] == "log-collector" and collector["restartPolicy"] == "Always"
    assert {"name": "app-logs", "mountPath": "/var/log/app", "readOnly": True} in collector[
        "volumeMounts"
    ]
    assert web["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "app-logs", "mountPath": "/var/log/nginx"}
    ]
    secrets = {v["name"]: v for v in payments["spec"]["volumes"]}
    assert secrets["app-secrets"]["emptyDir"]["medium"] == "Memory"
    token = secrets["secrets-agent-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "vault"
    agent = payments["spec"]["initContainers"][-1]["command"]
    assert agent[agent.index("--role") + 1] == "payments"
    sync = catalog["spec"]["initContainers"][-1]["command"]
    assert sync[sync.index("--interval") + 1] == "10"


def test_analyze_reports_a_broken_injector_configmap_with_the_webhooks_words(tmp_path: Path):
    from controlplane.analyze import analyze

    configmap = yaml.safe_load((EXAMPLES / "injector-configmap.yaml").read_text())
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(configmap))
    assert analyze([tmp_path]).issues == []
    configmap["data"]["config"] = "templates: {x: 'spec: {volumes: [{name: v}]}'}"
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(configmap))
    issues = analyze([tmp_path]).issues
    assert [str(i) for i in issues] == [
        f"Error [CP0820 InvalidInjectionTemplate] {tmp_path / 'good.yaml'}: ConfigMap "
        "istio-system/istio-sidecar-injector: data.config.templates.x.spec.volumes[0]: "
        "template 'x': needs exactly one volume source (emptyDir, configMap, ...)"
    ]
    assert template_verdict(configmap) == [
        str(i).replace(f"{tmp_path / 'good.yaml'}: ", "") for i in issues
    ]


def test_an_empty_templates_annotation_asks_for_nothing():
    assert templated_patch(pod({"inject.istio.io/templates": ""}), CONFIG, templates()) == []
