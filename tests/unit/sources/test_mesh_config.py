"""The mesh config in file mode: ``mesh.yaml`` (Istio's MeshConfig YAML) or the ``istio``
ConfigMap, validated like any resource, kept at its last good version (across restarts too),
and visible in ``snapshot.mesh`` and ``analyze``."""

from __future__ import annotations

from pathlib import Path

from controlplane.analyze import analyze
from controlplane.api import Issue, Level, ResourceKey
from controlplane.api.mesh import MESH_CONFIG_KEY
from controlplane.sources.files import FileSource
from controlplane.sources.state import LastGoodState
from controlplane.store import Store

MESH = """\
trustDomain: example.org
trustDomainAliases: [old.example.org]
rootNamespace: mesh-root
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
extensionProviders:
- name: authz-http
  envoyExtAuthzHttp:
    service: authz.foo.svc.cluster.local
    port: 8000
    timeout: 2s
    failOpen: true
    includeRequestHeadersInCheck: [x-user]
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    trustDomain: from-configmap.org
    connectTimeout: 5s
"""


class Run:
    """One run of file mode on ``config`` (state directory ``state``, if any)."""

    def __init__(self, config: Path, state: Path | None = None) -> None:
        self.store = Store()
        self.reported: list[Issue] = []
        self.state = LastGoodState(state)
        self.state.load()
        self.store.subscribe(self.state.on_change)
        self.files = FileSource(config, self.store, report=self.reported.append, state=self.state)
        self.files.scan()

    def errors(self) -> list[str]:
        return [str(i) for i in self.reported if i.severity is Level.ERROR]


def test_mesh_yaml_is_the_mesh_config_in_effect(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)
    run = Run(tmp_path)
    mesh = run.store.snapshot.mesh
    assert mesh.trust_domain == "example.org"
    assert mesh.trust_domain_aliases == ["old.example.org"]
    assert mesh.root_namespace == "mesh-root"
    assert mesh.outbound_traffic_policy.mode == "REGISTRY_ONLY"
    provider = mesh.provider("authz-http")
    assert provider is not None and provider.envoy_ext_authz_http is not None
    assert provider.envoy_ext_authz_http.fail_open is True
    assert provider.envoy_ext_authz_http.timeout == 2.0
    assert run.errors() == []


def test_without_a_mesh_config_istios_defaults_apply(tmp_path: Path) -> None:
    run = Run(tmp_path)
    assert run.store.snapshot.mesh.trust_domain == "cluster.local"
    assert run.store.snapshot.mesh.root_namespace == "istio-system"


def test_an_unknown_field_refuses_the_mesh_config_and_the_last_good_stays(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH)
    run = Run(tmp_path)
    (tmp_path / "mesh.yaml").write_text(MESH.replace("trustDomainAliases", "trustDomainAlias"))
    run.files.scan()
    assert run.store.snapshot.mesh.trust_domain_aliases == ["old.example.org"]  # last good
    [error] = run.errors()
    assert "mesh.yaml:1" in error and "MeshConfig istio-system/istio" in error
    assert "trustDomainAlias:" in error and "CP0104" in error
    status = run.store.snapshot.status[MESH_CONFIG_KEY]
    assert not status.accepted


def test_an_invalid_trust_domain_is_refused_with_its_field_path(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text("trustDomain: Not_A_Domain\n")
    run = Run(tmp_path)
    [error] = run.errors()
    assert "trustDomain: trust domain 'Not_A_Domain' is invalid" in error
    assert run.store.snapshot.mesh.trust_domain == "cluster.local"


def test_istio_fields_not_used_here_are_warnings_not_errors(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH + "connectTimeout: 3s\nenableAutoMtls: true\n")
    run = Run(tmp_path)
    warnings = {i.path for i in run.reported if i.code.id == "CP0202"}
    assert warnings == {"connectTimeout", "enableAutoMtls"}
    assert run.errors() == []
    assert run.store.snapshot.mesh.trust_domain == "example.org"


def test_the_istio_configmap_in_the_directory_is_the_mesh_config(tmp_path: Path) -> None:
    (tmp_path / "istio.yaml").write_text(CONFIGMAP)
    run = Run(tmp_path)
    assert run.store.snapshot.mesh.trust_domain == "from-configmap.org"
    [warning] = [i for i in run.reported if i.code.id == "CP0202"]
    assert warning.path == "data.mesh.connectTimeout"
    (tmp_path / "istio.yaml").write_text(CONFIGMAP.replace("trustDomain", "trustDomian"))
    run.files.scan()
    [error] = run.errors()
    assert "istio.yaml:1" in error and "data.mesh.trustDomian" in error
    assert run.store.snapshot.mesh.trust_domain == "from-configmap.org"


def test_a_bad_extension_provider_is_a_warning_as_in_istiod(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(MESH.replace("port: 8000", "port: 0"))
    run = Run(tmp_path)
    [warning] = [i for i in run.reported if i.code.id == "CP0420"]
    assert warning.path == "extensionProviders[0].envoyExtAuthzHttp.port"
    assert run.store.snapshot.mesh.provider("authz-http") is not None


def test_a_broken_mesh_yaml_at_restart_is_served_from_its_last_good_version(
    tmp_path: Path,
) -> None:
    config, state = tmp_path / "config", tmp_path / "state"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    first = Run(config, state)
    first.state.close()
    (config / "mesh.yaml").write_text(MESH + "  bogus: 1\n")
    second = Run(config, state)
    assert second.store.snapshot.mesh.trust_domain == "example.org"
    assert any(i.code.id == "CP0110" for i in second.reported)  # LastGoodVersionServed


def test_analyze_reports_the_mesh_config(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text("trustDomain: example.org\nbogus: true\n")
    report = analyze([tmp_path])
    [error] = report.errors
    assert error.code.id == "CP0104" and error.path == "bogus"
    assert error.origin is not None and error.origin.endswith("mesh.yaml:1")


CUSTOM_POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: authz-http}
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
"""
AUTHZ_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: authz, namespace: foo}
spec:
  ports: [{name: http, port: 8000}]
"""


def test_a_custom_policy_naming_an_unknown_provider_is_reported_and_applied(
    tmp_path: Path,
) -> None:
    (tmp_path / "policy.yaml").write_text(CUSTOM_POLICY)
    (tmp_path / "authz.yaml").write_text(AUTHZ_SERVICE)
    run = Run(tmp_path)
    key = ResourceKey("AuthorizationPolicy", "default", "ext")
    status = run.store.snapshot.status[key]
    [issue] = [i for i in status.issues if i.code.id == "CP0421"]
    assert issue.path == "spec.provider.name"
    assert "no extension provider 'authz-http'" in issue.reason and "denied" in issue.reason
    assert status.accepted and key in run.store.snapshot.of_kind("AuthorizationPolicy")
    # Defining the provider in mesh.yaml (the policy untouched) resolves the finding.
    (tmp_path / "mesh.yaml").write_text(MESH)
    run.files.scan()
    status = run.store.snapshot.status[key]
    assert [i for i in status.issues if i.code.id == "CP0421"] == []


def test_analyze_reports_an_unknown_provider_and_one_whose_service_is_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "policy.yaml").write_text(CUSTOM_POLICY)
    report = analyze([tmp_path])
    [unknown] = [i for i in report.issues if i.code.id == "CP0421"]
    assert "no extension provider 'authz-http'" in unknown.reason
    assert unknown.origin is not None and unknown.origin.endswith("policy.yaml:1")
    (tmp_path / "mesh.yaml").write_text(MESH)
    [missing] = [i for i in analyze([tmp_path]).issues if i.code.id == "CP0421"]
    assert "could not find service authz.foo.svc.cluster.local" in missing.reason


def test_a_mesh_config_file_outside_the_directory_is_read_and_rescanned(tmp_path: Path) -> None:
    config, elsewhere = tmp_path / "config", tmp_path / "etc" / "istio-mesh.yaml"
    config.mkdir()
    elsewhere.parent.mkdir()
    elsewhere.write_text(MESH)
    (config / "mesh.yaml").write_text(CUSTOM_POLICY)  # an ordinary file then
    store = Store()
    reported: list[Issue] = []
    files = FileSource(config, store, report=reported.append, mesh_file=elsewhere)
    files.scan()
    assert store.snapshot.mesh.trust_domain == "example.org"
    assert ResourceKey("AuthorizationPolicy", "default", "ext") in store.snapshot.of_kind(
        "AuthorizationPolicy"
    )
    elsewhere.write_text(MESH.replace("example.org", "changed.example.org", 1))
    files.scan()
    assert store.snapshot.mesh.trust_domain == "changed.example.org"
    elsewhere.unlink()
    files.scan()
    assert store.snapshot.mesh.trust_domain == "cluster.local"  # removed: Istio's defaults


def test_analyze_takes_the_mesh_config_from_an_option(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(CUSTOM_POLICY)
    (tmp_path / "authz.yaml").write_text(AUTHZ_SERVICE)
    mesh = tmp_path.parent / f"{tmp_path.name}-istio-mesh.yaml"
    mesh.write_text(MESH)
    assert [i for i in analyze([tmp_path]).issues if i.code.id == "CP0421"]  # no provider
    report = analyze([tmp_path], mesh_config=mesh)
    assert [i for i in report.issues if i.code.id == "CP0421"] == []
    assert report.errors == []


def test_two_providers_for_one_workload_are_reported_as_istiod_refuses_them(
    tmp_path: Path,
) -> None:
    two = (
        MESH
        + "- name: authz-grpc\n  envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 8000}\n"
    )
    (tmp_path / "mesh.yaml").write_text(two)
    (tmp_path / "authz.yaml").write_text(AUTHZ_SERVICE)
    (tmp_path / "policy.yaml").write_text(CUSTOM_POLICY)
    (tmp_path / "other.yaml").write_text(
        CUSTOM_POLICY.replace("name: ext,", "name: ext-grpc,").replace("authz-http", "authz-grpc")
    )
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default, labels: {app: web}}\n"
        "status: {podIP: 10.0.0.9}\n"
    )
    report = analyze([tmp_path])
    found = sorted(str(i.resource) for i in report.issues if i.code.id == "CP0422")
    assert found == [
        "AuthorizationPolicy default/ext",
        "AuthorizationPolicy default/ext-grpc",
    ]
    [one] = [i for i in report.issues if i.code.id == "CP0422"][:1]
    assert "Pod default/web" in one.reason and "authz-grpc, authz-http" in one.reason
    # One provider again: nothing to report.
    (tmp_path / "other.yaml").write_text(CUSTOM_POLICY.replace("name: ext,", "name: ext-2,"))
    assert [i for i in analyze([tmp_path]).issues if i.code.id == "CP0422"] == []
