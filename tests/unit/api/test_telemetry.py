"""The Telemetry kind: read at both versions, validated as istiod's ``ValidateTelemetry``
(errors refuse it, warnings keep it), unimplemented fields reported with their reason, and
its findings in the context of the mesh (providers, competing Telemetries) on its status."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.api import InvalidResource, Level, load, load_mesh_config
from controlplane.api.cel import cel_syntax_problem
from controlplane.api.issues import ResourceKey
from controlplane.api.telemetry import Telemetry
from controlplane.sources.files import FileSource
from controlplane.store import Store, Submission


def doc(spec: str, version: str = "v1", name: str = "t", namespace: str = "default") -> Any:
    return yaml.safe_load(
        textwrap.dedent(
            f"""
            apiVersion: telemetry.istio.io/{version}
            kind: Telemetry
            metadata: {{name: {name}, namespace: {namespace}}}
            spec: {spec}
            """
        )
    )


def refused(spec: str) -> list[tuple[str, str]]:
    with pytest.raises(InvalidResource) as caught:
        load(doc(spec))
    return [(i.path, i.reason) for i in caught.value.issues]


def warnings(spec: str) -> list[tuple[str, str, str]]:
    _, found = load(doc(spec))
    return [(i.code.id, i.path, i.reason) for i in found if i.severity is Level.WARNING]


@pytest.mark.parametrize("version", ["v1", "v1alpha1"])
def test_both_versions_read_as_telemetry(version: str) -> None:
    resource, found = load(doc("{accessLogging: [{providers: [{name: envoy}]}]}", version=version))
    assert isinstance(resource, Telemetry)
    assert found == []


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        (
            "{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Gateway, group: "
            "gateway.networking.k8s.io, name: gw}]}",
            "spec",
            "only one of targetRefs or workloadSelector can be set",
        ),
        ("{selector: {matchLabels: {app: '*'}}}", "spec.selector.matchLabels.app", "wildcard"),
        ("{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io}]}", "", "name must"),
        ("{targetRefs: [{kind: Pod, name: p}]}", "spec.targetRefs[0]", "targetRef must be"),
        ("{accessLogging: [{providers: [{name: ''}]}]}", "providers[0].name", "may not be empty"),
        (
            "{tracing: [{randomSamplingPercentage: 101}]}",
            "randomSamplingPercentage",
            "[0.0, 100.0]",
        ),
        ("{tracing: [{customTags: {a: {literal: {}}}}]}", "literal.value", "may not be empty"),
        ("{tracing: [{customTags: {a: {header: {}}}}]}", "header.name", "may not be empty"),
        ("{tracing: [{customTags: {a: {environment: {}}}}]}", "environment.name", "may not be"),
        (
            "{metrics: [{overrides: [{tagOverrides: {a: {operation: UPSERT}}}]}]}",
            "tagOverrides.a",
            "must be set when operation is UPSERT",
        ),
        (
            "{metrics: [{overrides: [{tagOverrides: {a: {operation: REMOVE, value: x}}}]}]}",
            "tagOverrides.a",
            "only be set when operation is UPSERT",
        ),
        ("{accessLogging: [{filter: {expression: 'response.code >= (400'}}]}", "expression", "CEL"),
        ("{accessLogging: [{mode: CLIENT}]}", "spec.accessLogging[0].mode", "unknown field"),
    ],
)
def test_istiods_errors_refuse_the_telemetry(spec: str, path: str, reason: str) -> None:
    found = refused(spec)
    assert any(path in p and reason in r for p, r in found), found


def test_warnings_keep_it_and_name_the_field() -> None:
    found = warnings(
        "{tracing: [{providers: [{name: a}, {name: b}]}, {}], selector: {matchLabels: {}}}"
    )
    reasons = {r for _, _, r in found}
    assert "multiple tracing is not currently supported" in reasons
    assert "multiple providers is not currently supported" in reasons
    assert "workload selector specified without labels" in reasons


def test_unimplemented_fields_are_reported_with_why() -> None:
    found = warnings(
        "{metrics: [{providers: [{name: prometheus}], reportingInterval: 10s, overrides: "
        "[{match: {metric: REQUEST_COUNT}, disabled: true}]}], "
        "tracing: [{disableContextPropagation: true}]}"
    )
    by_path = {p: (code, r) for code, p, r in found}
    assert by_path["spec.metrics[0].overrides"][0] == "CP0202"
    assert "stats filter" in by_path["spec.metrics[0].overrides"][1]
    assert "spec.metrics[0].reportingInterval" in by_path
    assert "spec.tracing[0].disableContextPropagation" in by_path


@pytest.mark.parametrize(
    ("expression", "ok"),
    [
        ("response.code >= 400", True),
        ("request.headers['x-user'] == 'a)b'", True),
        ("response.code >= 400 && !(request.url_path in ['/healthz', '/ready'])", True),
        ("xds.cluster_name.startsWith('outbound|') ? true : response.duration > 100", True),
        ("{'a': 1, 'b': [1u, 2.5, -3, 0x1F]}.size() == 2 || b'x' != r'y'", True),
        ("google.protobuf.Int64Value{value: 1} == 1", True),
        ("", False),
        ("f(", False),
        ("a]", False),
        ("'open", False),
        ("response.code >=", False),  # refused by Envoy too (checked with envoy --mode validate)
        ("response.code >= 400 &&& true", False),
        ("a b", False),
        ("a.if", False),  # a reserved word
        ("a ? b", False),
    ],
)
def test_cel_syntax_check(expression: str, ok: bool) -> None:
    assert (cel_syntax_problem(expression) is None) is ok


MESH = """
extensionProviders:
- name: text-log
  envoyFileAccessLog: {path: /dev/stdout}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
- name: otel-als
  envoyOtelAls: {service: otel.istio-system.svc.cluster.local, port: 4317}
"""


def findings(*specs: tuple[str, str, str]) -> dict[str, list[tuple[str, str]]]:
    store = Store()
    mesh, issues = load_mesh_config(yaml.safe_load(MESH))
    subs = [Submission(mesh, tuple(issues))]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reviews-v1", "namespace": "default", "labels": {"app": "reviews"}},
        "status": {"podIP": "10.0.0.1"},
    }
    for document in [pod, *(doc(spec, name=name, namespace=ns) for name, ns, spec in specs)]:
        resource, found = load(document)
        subs.append(Submission(resource, tuple(found)))
    store.apply(upserts=subs)
    return {
        key.name: [(i.code.id, i.path) for i in status.issues]
        for key, status in store.snapshot.status.items()
        if key.kind == "Telemetry"
    }


def test_providers_are_checked_against_the_mesh_config_and_the_registry() -> None:
    found = findings(
        (
            "t",
            "default",
            "{accessLogging: [{providers: [{name: text-log}, {name: nope}, {name: otel-als}]}],"
            " tracing: [{providers: [{name: zipkin}]}], metrics: [{providers: [{name: text-log}]}]}",
        )
    )
    assert sorted(found["t"]) == [
        ("CP0800", "spec.accessLogging[0].providers[1].name"),  # not defined
        ("CP0801", "spec.accessLogging[0].providers[2].name"),  # envoyOtelAls: not implemented
        ("CP0801", "spec.metrics[0].providers[0].name"),  # a log provider for metrics
        ("CP0802", "spec.tracing[0].providers[0].name"),  # no zipkin service in the registry
    ]


def test_competing_telemetries_are_reported_as_istioctl_does() -> None:
    found = findings(
        ("a", "default", "{accessLogging: [{providers: [{name: text-log}]}]}"),
        ("b", "default", "{accessLogging: [{providers: [{name: text-log}]}]}"),
        ("c", "default", "{selector: {matchLabels: {app: reviews}}}"),
        ("d", "default", "{selector: {matchLabels: {app: reviews}}}"),
        ("e", "default", "{accessLogging: [{}]}"),
    )
    assert ("CP0804", "spec") in found["a"] and ("CP0804", "spec") in found["b"]
    assert ("CP0803", "spec.selector") in found["c"] and ("CP0803", "spec.selector") in found["d"]
    assert ("CP0805", "spec.accessLogging[0].providers") in found["e"]


def test_file_mode_reads_a_telemetry_and_reports_its_findings(tmp_path: Path) -> None:
    (tmp_path / "telemetry.yaml").write_text(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        "metadata: {name: mesh-default, namespace: istio-system}\n"
        "spec: {accessLogging: [{providers: [{name: missing}]}]}\n"
    )
    store = Store()
    FileSource(tmp_path, store).scan()
    key = ResourceKey("Telemetry", "istio-system", "mesh-default")
    assert isinstance(store.snapshot.get(key), Telemetry)
    assert [i.code.id for i in store.snapshot.status[key].issues] == ["CP0800"]


def test_mesh_config_tracing_providers_are_validated() -> None:
    _, found = load_mesh_config(
        yaml.safe_load("extensionProviders: [{name: z, zipkin: {service: 'bad host!', port: 0}}]")
    )
    paths = {i.path for i in found}
    assert "extensionProviders[0].zipkin.port" in paths
    assert "extensionProviders[0].zipkin.service" in paths


def test_the_mesh_configs_telemetry_fields_are_read_not_reported_as_unsupported() -> None:
    _, found = load_mesh_config(
        yaml.safe_load(
            textwrap.dedent(
                """
                accessLogFile: /dev/stdout
                accessLogEncoding: JSON
                accessLogFormat: '{"m": "%REQ(:METHOD)%"}'
                enableTracing: true
                defaultProviders: {accessLogging: [envoy], tracing: [zipkin]}
                extensionProviders:
                - name: zipkin
                  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411,
                           maxTagLength: 64, enable64bitTraceId: true, path: /spans}
                - name: otel
                  opentelemetry:
                    service: otel.istio-system.svc.cluster.local
                    port: 4318
                    http: {path: /v1/traces, timeout: 2s}
                    resourceDetectors: {environment: {}}
                - name: file
                  envoyFileAccessLog: {path: /tmp/a.log, logFormat: {text: "%REQ(:METHOD)%"}}
                """
            )
        )
    )
    assert [(i.code.id, i.path) for i in found] == [
        ("CP0202", "extensionProviders[1].opentelemetry.resourceDetectors")
    ]
