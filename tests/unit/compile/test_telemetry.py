"""What a proxy logs and traces, per side, from Telemetry resources and the mesh config, as
istiod decides it (pilot/pkg/model/telemetry.go: precedence, ``mergeLogs``, ``Tracing``;
networking/core/accesslog.go and tracing.go: the mesh-wide fallbacks), and that a Telemetry
change recompiles only the listeners whose telemetry it changed."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import yaml

from controlplane.api import load, load_mesh_config
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import TRANSPARENT, Proxy, proxy_from_node
from controlplane.compile.resources import LISTENER
from controlplane.compile.telemetry_providers import DEFAULT_JSON_FIELDS, DEFAULT_TEXT_FORMAT
from controlplane.store import Snapshot, Store, Submission
from tests.unit.compile.helpers import as_dict

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: zipkin, namespace: istio-system}
spec:
  selector: {app: zipkin}
  ports: [{name: http, port: 9411}]
"""
MESH = """
extensionProviders:
- name: text-log
  envoyFileAccessLog: {path: /var/log/text.log}
- name: json-log
  envoyFileAccessLog: {path: /var/log/json.log, logFormat: {labels: {}}}
- name: custom-json
  envoyFileAccessLog: {path: /var/log/custom.log, logFormat: {labels: {m: "%REQ(:METHOD)%"}}}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
- name: broken-zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 1234}
"""
CLIENT = Proxy(
    node_id="sidecar~127.0.0.1~client.default~default.svc.cluster.local",
    labels={"app": "client"},
    local_outbound_port=15001,
)
REVIEWS = Proxy(
    node_id="sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local",
    labels={"app": "reviews"},
    ips=("10.0.0.1",),
    local_outbound_port=15001,
)
OTHER_NS = Proxy(
    node_id="sidecar~127.0.0.2~client.shop~shop.svc.cluster.local",
    namespace="shop",
    labels={"app": "client"},
    local_outbound_port=15001,
)


def telemetry(name: str, namespace: str, spec: str, second: int = 0) -> str:
    return f"""
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata:
      name: {name}
      namespace: {namespace}
      creationTimestamp: "2026-01-01T00:00:{second:02d}Z"
    spec: {spec}
    """


def store_of(*documents: str, mesh: str = MESH) -> Store:
    store = Store()
    subs = []
    mesh_config, issues = load_mesh_config(yaml.safe_load(mesh))
    subs.append(Submission(mesh_config, tuple(issues)))
    for text in (SERVICES, *documents):
        for doc in yaml.safe_load_all(textwrap.dedent(text)):
            if doc:
                resource, found = load(doc)
                subs.append(Submission(resource, tuple(found)))
    store.apply(upserts=subs)
    return store


def snapshot_of(*documents: str, mesh: str = MESH) -> Snapshot:
    return store_of(*documents, mesh=mesh).snapshot


def hcms(snapshot: Snapshot, proxy: Proxy, inbound: bool) -> list[dict[str, Any]]:
    """The HTTP connection managers of the proxy's inbound (or outbound) listeners."""
    out: list[dict[str, Any]] = []
    listeners = SnapshotCompiler(snapshot).compile(proxy).of(LISTENER)
    for name, resource in listeners.items():
        if name.startswith("10.0.0.1_") != inbound:
            continue
        for chain in as_dict(resource.message).get("filterChains", []):
            for network in chain["filters"]:
                if network["name"] == "envoy.filters.network.http_connection_manager":
                    out.append(network["typedConfig"])
    assert out, f"no {'inbound' if inbound else 'outbound'} HCM"
    return out


def log_paths(snapshot: Snapshot, proxy: Proxy, inbound: bool = False) -> list[list[str]]:
    return [
        [log["typedConfig"]["path"] for log in hcm.get("accessLog", [])]
        for hcm in hcms(snapshot, proxy, inbound)
    ]


def test_no_telemetry_and_no_access_log_file_means_no_access_log_and_no_tracing() -> None:
    snapshot = snapshot_of()
    for hcm in hcms(snapshot, CLIENT, False):
        assert "accessLog" not in hcm and "tracing" not in hcm


def test_the_mesh_access_log_file_uses_istios_default_text_format() -> None:
    snapshot = snapshot_of(mesh=MESH + "accessLogFile: /dev/stdout\n")
    [hcm] = hcms(snapshot, CLIENT, False)
    [log] = hcm["accessLog"]
    assert log["name"] == "envoy.access_loggers.file"
    assert log["typedConfig"]["path"] == "/dev/stdout"
    assert log["typedConfig"]["logFormat"]["textFormatSource"]["inlineString"] == (
        DEFAULT_TEXT_FORMAT
    )
    assert log_paths(snapshot, REVIEWS, inbound=True) == [["/dev/stdout"]]


def test_json_encoding_uses_istios_default_fields_or_the_mesh_format() -> None:
    snapshot = snapshot_of(mesh=MESH + "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n")
    [hcm] = hcms(snapshot, CLIENT, False)
    fields = hcm["accessLog"][0]["typedConfig"]["logFormat"]["jsonFormat"]
    assert fields == dict(DEFAULT_JSON_FIELDS)
    custom = MESH + (
        "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n"
        'accessLogFormat: \'{"m": "%REQ(:METHOD)%"}\'\n'
    )
    [hcm] = hcms(snapshot_of(mesh=custom), CLIENT, False)
    assert hcm["accessLog"][0]["typedConfig"]["logFormat"]["jsonFormat"] == {"m": "%REQ(:METHOD)%"}


def test_a_labels_provider_with_no_labels_logs_istios_default_json_fields() -> None:
    snapshot = snapshot_of(
        telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: json-log}]}]}")
    )
    [hcm] = hcms(snapshot, CLIENT, False)
    assert hcm["accessLog"][0]["typedConfig"]["logFormat"]["jsonFormat"] == dict(
        DEFAULT_JSON_FIELDS
    )


def test_the_builtin_envoy_provider_logs_to_stdout_in_the_mesh_encoding() -> None:
    snapshot = snapshot_of(
        telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: envoy}]}]}"),
        mesh=MESH + "accessLogEncoding: JSON\n",
    )
    [hcm] = hcms(snapshot, CLIENT, False)
    [log] = hcm["accessLog"]
    assert log["typedConfig"]["path"] == "/dev/stdout"
    assert "jsonFormat" in log["typedConfig"]["logFormat"]


def test_namespace_overrides_root_and_a_selector_overrides_the_namespace() -> None:
    snapshot = snapshot_of(
        telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: text-log}]}]}"),
        telemetry("ns", "default", "{accessLogging: [{providers: [{name: json-log}]}]}"),
        telemetry(
            "reviews",
            "default",
            "{selector: {matchLabels: {app: reviews}}, "
            "accessLogging: [{providers: [{name: custom-json}]}]}",
        ),
    )
    assert log_paths(snapshot, OTHER_NS) == [["/var/log/text.log"]]  # the root only
    assert log_paths(snapshot, CLIENT) == [["/var/log/json.log"]]  # its namespace's
    assert log_paths(snapshot, REVIEWS, inbound=True) == [["/var/log/custom.log"]]


def test_a_selector_in_the_root_namespace_selects_nothing_elsewhere() -> None:
    snapshot = snapshot_of(
        telemetry(
            "reviews",
            "istio-system",
            "{selector: {matchLabels: {app: reviews}}, "
            "accessLogging: [{providers: [{name: text-log}]}]}",
        )
    )
    assert log_paths(snapshot, REVIEWS, inbound=True) == [[]]


def test_the_oldest_namespace_wide_telemetry_applies() -> None:
    snapshot = snapshot_of(
        telemetry("b", "default", "{accessLogging: [{providers: [{name: json-log}]}]}", 2),
        telemetry("a", "default", "{accessLogging: [{providers: [{name: text-log}]}]}", 1),
    )
    assert log_paths(snapshot, CLIENT) == [["/var/log/text.log"]]


def test_match_mode_picks_the_side() -> None:
    client_only = "{accessLogging: [{providers: [{name: text-log}], match: {mode: CLIENT}}]}"
    snapshot = snapshot_of(telemetry("mesh", "istio-system", client_only))
    assert log_paths(snapshot, REVIEWS, inbound=False) == [["/var/log/text.log"]]
    assert log_paths(snapshot, REVIEWS, inbound=True) == [[]]
    server_only = client_only.replace("CLIENT", "SERVER")
    snapshot = snapshot_of(telemetry("mesh", "istio-system", server_only))
    assert log_paths(snapshot, REVIEWS, inbound=False) == [[]]
    assert log_paths(snapshot, REVIEWS, inbound=True) == [["/var/log/text.log"]]


def test_a_side_telemetry_leaves_unconfigured_falls_back_to_the_mesh_file() -> None:
    # istiod: no provider in scope for SERVER mode, so the mesh's accessLogFile applies.
    client_only = "{accessLogging: [{providers: [{name: text-log}], match: {mode: CLIENT}}]}"
    snapshot = snapshot_of(
        telemetry("mesh", "istio-system", client_only), mesh=MESH + "accessLogFile: /dev/stdout\n"
    )
    assert log_paths(snapshot, REVIEWS, inbound=True) == [["/dev/stdout"]]
    assert log_paths(snapshot, REVIEWS, inbound=False) == [["/var/log/text.log"]]


def test_disabled_turns_the_inherited_provider_off_and_beats_the_mesh_file() -> None:
    snapshot = snapshot_of(
        telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: text-log}]}]}"),
        telemetry("ns", "default", "{accessLogging: [{disabled: true}]}"),
        mesh=MESH + "accessLogFile: /dev/stdout\n",
    )
    assert log_paths(snapshot, CLIENT) == [[]]
    assert log_paths(snapshot, OTHER_NS) == [["/var/log/text.log"]]


def test_default_providers_log_without_any_telemetry() -> None:
    snapshot = snapshot_of(mesh=MESH + "defaultProviders: {accessLogging: [json-log, text-log]}\n")
    assert log_paths(snapshot, CLIENT) == [["/var/log/json.log", "/var/log/text.log"]]


def test_the_cel_filter_is_attached_to_its_providers_log() -> None:
    snapshot = snapshot_of(
        telemetry(
            "mesh",
            "istio-system",
            "{accessLogging: [{providers: [{name: text-log}], "
            "filter: {expression: 'response.code >= 400'}}]}",
        )
    )
    [hcm] = hcms(snapshot, CLIENT, False)
    log_filter = hcm["accessLog"][0]["filter"]["extensionFilter"]
    assert log_filter["name"] == "envoy.access_loggers.extension_filters.cel"
    assert log_filter["typedConfig"]["expression"] == "response.code >= 400"


def tracing_of(hcm: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = hcm["tracing"]
    return found


def test_tracing_provider_sampling_and_custom_tags() -> None:
    snapshot = snapshot_of(
        telemetry(
            "mesh",
            "istio-system",
            "{tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 25, customTags: "
            "{team: {literal: {value: shop}}, user: {header: {name: x-user, defaultValue: anon}},"
            " host: {environment: {name: HOSTNAME}}}}]}",
        )
    )
    [hcm] = hcms(snapshot, CLIENT, False)
    tracing = tracing_of(hcm)
    assert tracing["randomSampling"] == {"value": 25.0}
    assert tracing["clientSampling"] == {"value": 100.0}
    provider = tracing["provider"]
    assert provider["name"] == "envoy.tracers.zipkin"
    service = provider["typedConfig"]["collectorService"]["httpUri"]
    assert service["cluster"] == "outbound|9411||zipkin.istio-system.svc.cluster.local"
    assert service["uri"] == "http://zipkin.istio-system.svc.cluster.local/api/v2/spans"
    tags = {t["tag"]: t for t in tracing["customTags"]}
    assert tags["team"]["literal"] == {"value": "shop"}
    assert tags["user"]["requestHeader"] == {"name": "x-user", "defaultValue": "anon"}
    assert tags["host"]["environment"] == {"name": "HOSTNAME"}
    assert tags["istio.namespace"]["literal"] == {"value": "default"}  # Istio's own tags
    assert [t["tag"] for t in tracing["customTags"]] == sorted(tags)


def test_tracing_mode_and_disable_span_reporting() -> None:
    snapshot = snapshot_of(
        telemetry("mesh", "istio-system", "{tracing: [{providers: [{name: zipkin}]}]}"),
        telemetry(
            "ns",
            "default",
            "{tracing: [{match: {mode: SERVER}, disableSpanReporting: true}]}",
        ),
    )
    [outbound] = hcms(snapshot, REVIEWS, False)
    assert tracing_of(outbound)["randomSampling"] == {"value": 1.0}  # the 1% default
    for inbound in hcms(snapshot, REVIEWS, True):
        assert "tracing" not in inbound


def test_a_tracing_provider_without_its_port_configures_no_tracing() -> None:
    snapshot = snapshot_of(
        telemetry("mesh", "istio-system", "{tracing: [{providers: [{name: broken-zipkin}]}]}")
    )
    [hcm] = hcms(snapshot, CLIENT, False)
    assert "tracing" not in hcm  # Envoy would refuse a tracer whose cluster does not exist


def test_mesh_enable_tracing_with_the_zipkin_address_and_sampling() -> None:
    mesh = MESH + (
        "enableTracing: true\n"
        "defaultConfig: {tracing: {sampling: 50, zipkin: {address: zipkin.istio-system:9411}}}\n"
    )
    [hcm] = hcms(snapshot_of(mesh=mesh), CLIENT, False)
    tracing = tracing_of(hcm)
    assert tracing["randomSampling"] == {"value": 50.0}
    cluster = tracing["provider"]["typedConfig"]["collectorService"]["httpUri"]["cluster"]
    assert cluster == "outbound|9411||zipkin.istio-system.svc.cluster.local"


def test_a_telemetry_change_in_one_namespace_rebuilds_no_listener_of_another() -> None:
    store = store_of(
        telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: text-log}]}]}")
    )
    changes: list[Any] = []
    store.subscribe(lambda snapshot, change: changes.append(change))
    compiler = SnapshotCompiler(store.snapshot)
    before_other = compiler.compile(OTHER_NS).of(LISTENER)
    before_client = compiler.compile(CLIENT).of(LISTENER)
    (doc,) = yaml.safe_load_all(
        textwrap.dedent(
            telemetry("ns", "default", "{accessLogging: [{providers: [{name: json-log}]}]}")
        )
    )
    resource, _ = load(doc)
    store.apply(upserts=[Submission(resource, ())])
    keys = set().union(*(c.changed for c in changes))
    follower, _ = SnapshotCompiler.following(compiler, store.snapshot, keys)
    after_other = follower.compile(OTHER_NS).of(LISTENER)
    after_client = follower.compile(CLIENT).of(LISTENER)
    assert all(after_other[n] is before_other[n] for n in before_other)  # same objects
    changed = [n for n in before_client if after_client[n] is not before_client[n]]
    assert changed  # the default namespace's outbound listener
    assert json.dumps(as_dict(after_client[changed[0]].message)).count("json.log") == 1


def test_the_telemetry_of_a_workload_depends_on_its_namespace_and_the_roots_only() -> None:
    compiler = SnapshotCompiler(snapshot_of())
    compiler.compile(CLIENT)
    deps = [
        tokens
        for key, tokens in compiler.memo_dependencies().items()
        if key[0] == "telemetry" and key[1] == "default"
    ]
    assert deps
    read = {t for tokens in deps for t in tokens if "Telemetry" in t}
    assert read == {("ns", "Telemetry", "istio-system"), ("ns", "Telemetry", "default")}


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""


def gateway_hcms(snapshot: Snapshot, labels: dict[str, str]) -> list[dict[str, Any]]:
    proxy = proxy_from_node(
        "router~10.9.0.1~edge-1.istio-system~istio-system.svc.cluster.local",
        {"LABELS": labels, "NAMESPACE": "istio-system"},
    )
    out = []
    for resource in SnapshotCompiler(snapshot).compile(proxy).of(LISTENER).values():
        for chain in as_dict(resource.message).get("filterChains", []):
            for network in chain["filters"]:
                if network["name"] == "envoy.filters.network.http_connection_manager":
                    out.append(network["typedConfig"])
    assert out
    return out


def test_a_gateway_logs_and_traces_as_a_client_and_spawns_upstream_spans() -> None:
    snapshot = snapshot_of(
        GATEWAY,
        telemetry(
            "mesh",
            "istio-system",
            "{accessLogging: [{providers: [{name: text-log}], match: {mode: CLIENT}}], "
            "tracing: [{providers: [{name: zipkin}], match: {mode: CLIENT}}]}",
        ),
    )
    [hcm] = gateway_hcms(snapshot, {"istio": "ingressgateway"})
    assert [log["typedConfig"]["path"] for log in hcm["accessLog"]] == ["/var/log/text.log"]
    assert hcm["tracing"]["spawnUpstreamSpan"] is True  # istiod: router proxies


def test_a_gateway_api_gateway_is_selected_by_target_refs_and_a_sidecar_never_is() -> None:
    target = (
        "{targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}], "
        "accessLogging: [{providers: [{name: json-log}]}]}"
    )
    snapshot = snapshot_of(GATEWAY, telemetry("edge", "istio-system", target))
    labels = {"istio": "ingressgateway", "gateway.networking.k8s.io/gateway-name": "edge"}
    [hcm] = gateway_hcms(snapshot, labels)
    assert [log["typedConfig"]["path"] for log in hcm["accessLog"]] == ["/var/log/json.log"]
    [hcm] = gateway_hcms(snapshot, {"istio": "ingressgateway"})  # not that Gateway's pod
    assert "accessLog" not in hcm
    snapshot = snapshot_of(telemetry("edge", "default", target))
    assert log_paths(snapshot, CLIENT) == [[]]


def test_tcp_proxies_log_too_and_get_no_tracing() -> None:
    database = """
    apiVersion: v1
    kind: Service
    metadata: {name: db, namespace: default}
    spec:
      clusterIP: 10.96.0.9
      selector: {app: db}
      ports: [{name: tcp, port: 5432}]
    """
    snapshot = snapshot_of(
        database,
        telemetry(
            "mesh",
            "istio-system",
            "{accessLogging: [{providers: [{name: text-log}]}], "
            "tracing: [{providers: [{name: zipkin}]}]}",
        ),
    )
    proxy = Proxy(
        node_id="sidecar~10.0.9.9~client.default~default.svc.cluster.local",
        labels={"app": "client"},
        mode=TRANSPARENT,
    )
    listeners = SnapshotCompiler(snapshot).compile(proxy).of(LISTENER)
    listener = as_dict(listeners["10.96.0.9_5432"].message)
    [tcp] = [
        f["typedConfig"]
        for chain in listener["filterChains"]
        for f in chain["filters"]
        if f["name"] == "envoy.filters.network.tcp_proxy"
    ]
    assert [log["typedConfig"]["path"] for log in tcp["accessLog"]] == ["/var/log/text.log"]
    assert "tracing" not in json.dumps(tcp)


def test_opentelemetry_providers_over_grpc_and_http() -> None:
    mesh = MESH + (
        "- name: otel\n"
        "  opentelemetry: {service: zipkin.istio-system.svc.cluster.local, port: 9411, "
        "maxTagLength: 99}\n"
        "- name: otel-http\n"
        "  opentelemetry:\n"
        "    service: zipkin.istio-system.svc.cluster.local\n"
        "    port: 9411\n"
        "    http: {path: /v1/traces, timeout: 3s, headers: [{name: x-key, value: k}]}\n"
    )
    grpc = snapshot_of(
        telemetry("mesh", "istio-system", "{tracing: [{providers: [{name: otel}]}]}"), mesh=mesh
    )
    [hcm] = hcms(grpc, CLIENT, False)
    tracing = tracing_of(hcm)
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    service = tracing["provider"]["typedConfig"]["grpcService"]["envoyGrpc"]
    assert service == {
        "clusterName": "outbound|9411||zipkin.istio-system.svc.cluster.local",
        "authority": "zipkin.istio-system.svc.cluster.local",
    }
    assert tracing["maxPathTagLength"] == 99
    http = snapshot_of(
        telemetry("mesh", "istio-system", "{tracing: [{providers: [{name: otel-http}]}]}"),
        mesh=mesh,
    )
    [hcm] = hcms(http, CLIENT, False)
    uri = tracing_of(hcm)["provider"]["typedConfig"]["httpService"]
    assert uri["httpUri"]["uri"] == "zipkin.istio-system.svc.cluster.local/v1/traces"
    assert uri["httpUri"]["timeout"] == "3s"
    assert uri["requestHeadersToAdd"] == [{"header": {"key": "x-key", "value": "k"}}]


def test_an_unimplemented_log_service_still_replaces_the_mesh_file_a_tracer_does_not() -> None:
    mesh = MESH + (
        "- name: otel-als\n"
        "  envoyOtelAls: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n"
        "accessLogFile: /dev/stdout\n"
    )
    als = telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: otel-als}]}]}")
    assert log_paths(snapshot_of(als, mesh=mesh), CLIENT) == [[]]
    tracer = telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: zipkin}]}]}")
    assert log_paths(snapshot_of(tracer, mesh=mesh), CLIENT) == [["/dev/stdout"]]


def test_labels_key_the_telemetry_only_where_a_selector_or_tracing_could_use_them() -> None:
    def telemetry_keys(snapshot: Snapshot) -> list[Any]:
        compiler = SnapshotCompiler(snapshot)
        compiler.compile(CLIENT)
        return [k for k in compiler.memo_dependencies() if k[0] == "telemetry"]

    mesh_wide = telemetry("mesh", "istio-system", "{accessLogging: [{providers: [{name: envoy}]}]}")
    [key] = telemetry_keys(snapshot_of(mesh_wide))
    assert key[2] == ()  # proxies that differ in labels share it (and their shape)
    selecting = telemetry("c", "default", "{selector: {matchLabels: {app: client}}}")
    [key] = telemetry_keys(snapshot_of(mesh_wide, selecting))
    assert key[2] == (("app", "client"),)
    traced = telemetry("mesh", "istio-system", "{tracing: [{providers: [{name: zipkin}]}]}")
    [key] = telemetry_keys(snapshot_of(traced))
    assert key[2] == (("app", "client"),)  # Istio's tags name the canonical service
