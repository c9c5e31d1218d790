"""Gateway validation and VirtualService gateway names, as istiod's webhook decides them
(pkg/config/validation: ValidateGateway, validateServer, validateTLSOptions,
validateGatewayNames): errors with the field path, warnings where istiod only warns."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from controlplane.api import InvalidResource, Level, load


def gateway(servers: str, name: str = "gw") -> str:
    return f"""
    apiVersion: networking.istio.io/v1beta1
    kind: Gateway
    metadata: {{name: {name}, namespace: default}}
    spec:
      selector: {{istio: ingressgateway}}
      servers: {servers}
    """


def findings(text: str) -> list[tuple[str, str]]:
    """(level, ``path: reason``) of every finding; errors raise."""
    _, issues = load(yaml.safe_load(textwrap.dedent(text)))
    return [(i.severity.value, i.field_message) for i in issues]


def errors(text: str) -> list[str]:
    with pytest.raises(InvalidResource) as caught:
        load(yaml.safe_load(textwrap.dedent(text)))
    return [i.field_message for i in caught.value.issues if i.severity is Level.ERROR]


HTTP = "{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}"


def test_bookinfo_gateway_is_valid_in_every_served_version() -> None:
    for version in ("v1", "v1beta1", "v1alpha3"):
        text = gateway(f"[{HTTP}]").replace("v1beta1", version)
        assert findings(text) == []


def test_a_gateway_needs_servers_and_a_dns_label_name() -> None:
    assert errors(gateway("[]")) == ["spec.servers: gateway must have at least one server"]
    assert errors(gateway(f"[{HTTP}]", name="my.gw")) == [
        "metadata.name: invalid gateway name: 'my.gw'"
    ]


def test_port_names_are_unique_within_a_gateway() -> None:
    twice = "{port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}"
    assert errors(gateway(f"[{HTTP}, {twice}]")) == [
        "spec.servers[1].port.name: port names in servers must be unique: duplicate name 'http'"
    ]


def test_server_hosts_take_namespace_qualifiers() -> None:
    hosts = "['prod/a.example.com', './b.example.com', '*/c.example.com', '*.example.org']"
    assert (
        findings(gateway(f"[{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: {hosts}}}]"))
        == []
    )
    bad = "[{port: {number: 80, name: http, protocol: HTTP}, hosts: ['/x.example.com', 'a.*.com']}]"
    assert errors(gateway(bad)) == [
        "spec.servers[0].hosts[0]: config namespace and dnsName in host entry cannot be empty",
        "spec.servers[0].hosts[1]: 'a.*.com' is not a valid host name",
    ]


def test_a_server_needs_hosts_and_a_bind_that_is_an_ip_address() -> None:
    assert errors(gateway("[{port: {number: 80, name: http, protocol: HTTP}}]")) == [
        "spec.servers[0].hosts: server config must contain at least one host"
    ]
    bad_bind = "[{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], bind: nope}]"
    assert errors(gateway(bad_bind)) == ["spec.servers[0].bind: 'nope' is not a valid IP address"]


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (
            "{mode: SIMPLE}",
            [
                "spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate",
                "spec.servers[0].tls.privateKey: SIMPLE TLS requires a private key",
            ],
        ),
        (
            "{mode: MUTUAL, serverCertificate: /c, privateKey: /k}",
            ["spec.servers[0].tls.caCertificates: MUTUAL TLS requires a client CA bundle"],
        ),
        (
            "{mode: ISTIO_MUTUAL, credentialName: cert}",
            [
                "spec.servers[0].tls.credentialName: ISTIO_MUTUAL TLS cannot have associated "
                "credentialName"
            ],
        ),
        (
            "{mode: SIMPLE, credentialName: a, serverCertificate: /c, privateKey: /k}",
            [
                "spec.servers[0].tls: only one of credential_name, credential_names, "
                "server_certificate/private_key, tls_certificates should be specified"
            ],
        ),
    ],
)
def test_tls_settings_are_checked_as_istiod_checks_them(tls: str, expected: list[str]) -> None:
    server = f"[{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {tls}}}]"
    assert errors(gateway(server)) == expected


def test_a_credential_name_is_enough_for_simple_and_mutual() -> None:
    for mode in ("SIMPLE", "MUTUAL"):
        server = (
            "[{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], "
            f"tls: {{mode: {mode}, credentialName: bookinfo-cert}}}}]"
        )
        assert [f for f in findings(gateway(server)) if f[0] == "Error"] == []


def test_passthrough_with_certificates_is_only_a_warning() -> None:
    server = (
        "[{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], "
        "tls: {mode: PASSTHROUGH, credentialName: x}}]"
    )
    assert (
        "Warning",
        "spec.servers[0].tls.mode: PASSTHROUGH mode does not use certificates, they will be ignored",
    ) in findings(gateway(server))


def test_virtual_service_gateway_names_follow_istiod() -> None:
    def vs(gateways: str) -> str:
        return f"""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: r, namespace: default}}
        spec:
          hosts: [r.example.com]
          gateways: {gateways}
          http: [{{route: [{{destination: {{host: reviews}}}}]}}]
        """

    assert [f for f in findings(vs("[mesh, gw, istio-system/gw]")) if f[0] == "Error"] == []
    assert errors(vs("[./gw]")) == ["spec.gateways[0]: invalid value for namespace: '.'"]
    assert errors(vs("[default/]")) == [
        "spec.gateways[0]: config namespace and gateway name cannot be empty"
    ]
    assert (
        "Warning",
        "spec.gateways[0]: using legacy gatewayName format 'gw.istio-system'; prefer the "
        "<namespace>/<name> format: 'istio-system/gw'",
    ) in findings(vs("[gw.istio-system]"))
