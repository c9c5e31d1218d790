"""The status the Gateway API specification defines, as the conversion computes it (part
"gwapi"): every condition and reason of GatewayClass, Gateway, listeners and route parents."""

from __future__ import annotations

from typing import Any

import yaml

from controlplane.api import key_of, load
from controlplane.api.issues import ResourceKey
from controlplane.store import Store, Submission
from controlplane.store.gatewayapi import convert

V1 = "gateway.networking.k8s.io/v1"


def world(*texts: str) -> dict[str, dict[ResourceKey, Any]]:
    out: dict[str, dict[ResourceKey, Any]] = {}
    for text in texts:
        for doc in yaml.safe_load_all(text):
            if doc:
                resource, _ = load(doc)
                out.setdefault(resource.kind, {})[key_of(resource)] = resource
    return out


def gateway(listeners: str, name: str = "gw", namespace: str = "infra", cls: str = "istio") -> str:
    return f"""
apiVersion: {V1}
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}, generation: 7}}
spec:
  gatewayClassName: {cls}
  listeners: {listeners}
"""


def route(parent: str, backends: str = "[{name: svc, port: 80}]", hostnames: str = "[]",
          namespace: str = "apps", kind: str = "HTTPRoute") -> str:  # fmt: skip
    return f"""
apiVersion: {V1}
kind: {kind}
metadata: {{name: r, namespace: {namespace}, generation: 3}}
spec:
  parentRefs: [{parent}]
  hostnames: {hostnames}
  rules: [{{backendRefs: {backends}}}]
"""


def service(name: str = "svc", namespace: str = "apps", labels: str = "{}") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}
spec: {{clusterIP: 10.0.0.9, ports: [{{port: 80}}]}}
"""


def namespace(name: str, labels: str = "{}") -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {name}, labels: {labels}}}
"""


def grant(namespace: str, from_kind: str, from_ns: str, to_kind: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: grant, namespace: {namespace}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns}}}]
  to: [{{group: "", kind: {to_kind}}}]
"""


SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: %s}
type: kubernetes.io/tls
stringData: {tls.crt: "-----BEGIN CERTIFICATE-----", tls.key: "-----BEGIN PRIVATE KEY-----"}
"""

ALL = "[{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]"
GW = ResourceKey("KubernetesGateway", "infra", "gw")
ROUTE = ResourceKey("HTTPRoute", "apps", "r")


def conditions(found: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in found["conditions"]}


def listener(status: dict[str, Any], index: int = 0) -> dict[str, tuple[str, str]]:
    return conditions(status["listeners"][index])


def parent(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return conditions(status["parents"][0])


# ---- GatewayClass ---------------------------------------------------------------------------


def test_a_class_of_this_controller_is_accepted_and_another_controllers_is_left_alone() -> None:
    found = convert(
        world(
            f"""
apiVersion: {V1}
kind: GatewayClass
metadata: {{name: mine, generation: 2}}
spec: {{controllerName: istio.io/gateway-controller}}
---
apiVersion: {V1}
kind: GatewayClass
metadata: {{name: theirs}}
spec: {{controllerName: example.com/other}}
"""
        )
    ).status
    mine = found[ResourceKey("GatewayClass", "", "mine")]
    assert conditions(mine) == {"Accepted": ("True", "Accepted")}
    assert mine["conditions"][0]["observedGeneration"] == 2
    assert ResourceKey("GatewayClass", "", "theirs") not in found


def test_a_gateway_of_another_class_gets_no_status_and_no_istio_gateway() -> None:
    found = convert(world(gateway(ALL, cls="someone-else")))
    assert GW not in found.status and not found.gateways


# ---- Gateway and listeners ------------------------------------------------------------------


def test_an_accepted_gateway_without_address_is_not_programmed() -> None:
    status = convert(world(gateway(ALL))).status[GW]
    assert conditions(status) == {
        "Accepted": ("True", "Accepted"),
        "Programmed": ("False", "AddressNotAssigned"),
    }
    assert all(c["observedGeneration"] == 7 for c in status["conditions"])
    assert listener(status) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
        "Conflicted": ("False", "NoConflicts"),
        "Programmed": ("True", "Programmed"),
    }
    assert status["listeners"][0]["supportedKinds"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
    ]


def test_the_gateway_service_address_programs_it() -> None:
    labels = "{gateway.networking.k8s.io/gateway-name: gw}"
    status = convert(world(gateway(ALL), service("gw-istio", "infra", labels))).status[GW]
    assert conditions(status)["Programmed"] == ("True", "Programmed")
    assert status["addresses"] == [{"type": "IPAddress", "value": "10.0.0.9"}]


def test_an_unsupported_protocol_is_not_accepted() -> None:
    status = convert(world(gateway("[{name: u, port: 53, protocol: UDP}]"))).status[GW]
    assert listener(status)["Accepted"] == ("False", "UnsupportedProtocol")
    assert listener(status)["Programmed"] == ("False", "Invalid")
    assert conditions(status)["Accepted"] == ("False", "ListenersNotValid")


def test_a_gateway_with_one_valid_listener_is_accepted_with_listeners_not_valid() -> None:
    # conformance GatewayListenerUnsupportedProtocol: Accepted True, reason ListenersNotValid.
    listeners = (
        "[{name: http, port: 80, protocol: HTTP}, {name: bad, port: 1111, protocol: INVALID}]"
    )
    status = convert(world(gateway(listeners))).status[GW]
    assert conditions(status)["Accepted"] == ("True", "ListenersNotValid")
    assert listener(status, 0)["Accepted"] == ("True", "Accepted")
    assert listener(status, 1)["Accepted"] == ("False", "UnsupportedProtocol")


def test_a_parameters_ref_this_controller_cannot_read_is_invalid_parameters() -> None:
    # conformance GatewayInvalidParametersRef: Accepted False, reason InvalidParameters.
    text = gateway(ALL) + (
        "  infrastructure: {parametersRef: {group: invalid.io, kind: InvalidParameters, "
        "name: invalid}}\n"
    )
    status = convert(world(text)).status[GW]
    assert conditions(status)["Accepted"] == ("False", "InvalidParameters")
    assert conditions(status)["Programmed"][0] == "False"


def test_two_protocols_on_one_port_conflict() -> None:
    listeners = """
  - {name: a, port: 80, protocol: HTTP}
  - {name: b, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}"""
    status = convert(world(gateway(listeners), SECRET % "infra")).status[GW]
    assert listener(status, 0)["Conflicted"] == ("True", "ProtocolConflict")
    assert listener(status, 1)["Conflicted"] == ("True", "ProtocolConflict")


def test_one_hostname_twice_on_one_port_conflicts() -> None:
    listeners = """
  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}
  - {name: b, port: 80, protocol: HTTP, hostname: a.example.com}
  - {name: c, port: 80, protocol: HTTP, hostname: c.example.com}"""
    status = convert(world(gateway(listeners))).status[GW]
    assert listener(status, 0)["Conflicted"] == ("True", "HostnameConflict")
    assert listener(status, 1)["Conflicted"] == ("True", "HostnameConflict")
    assert listener(status, 2)["Conflicted"] == ("False", "NoConflicts")


def test_an_https_listener_certificate_reference_resolves_or_says_why() -> None:
    def resolved(ref: str, *more: str) -> tuple[str, str]:
        listeners = f"[{{name: s, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{ref}]}}}}]"
        return listener(convert(world(gateway(listeners), *more)).status[GW])["ResolvedRefs"]

    assert resolved("{name: cert}", SECRET % "infra") == ("True", "ResolvedRefs")
    assert resolved("{name: cert}") == ("False", "InvalidCertificateRef")
    assert resolved("{name: cert, kind: ConfigMap}", SECRET % "infra") == (
        "False",
        "InvalidCertificateRef",
    )
    other = "{name: cert, namespace: certs}"
    assert resolved(other, SECRET % "certs") == ("False", "RefNotPermitted")
    allowed = grant("certs", "Gateway", "infra", "Secret")
    # Granted by a ReferenceGrant in the Secret's namespace: resolved (the specification).
    assert resolved(other, SECRET % "certs", allowed) == ("True", "ResolvedRefs")
    # A grant for Gateways of another namespace, or for another Secret, allows nothing.
    elsewhere = grant("certs", "Gateway", "elsewhere", "Secret")
    assert resolved(other, SECRET % "certs", elsewhere) == ("False", "RefNotPermitted")


def test_a_granted_secret_of_another_namespace_is_named_with_its_namespace() -> None:
    listeners = (
        "[{name: s, port: 443, protocol: HTTPS, tls: {certificateRefs: "
        "[{name: cert, namespace: certs}]}}]"
    )
    allowed = grant("certs", "Gateway", "infra", "Secret")
    found = convert(world(gateway(listeners), SECRET % "certs", allowed))
    (istio,) = found.gateways.values()
    server = istio.spec.servers[0]
    assert server.tls is not None
    # istiod's name for a Gateway API certificate: kubernetes-gateway://<namespace>/<name>
    assert server.tls.credential_name == "kubernetes-gateway://certs/cert"
    assert not convert(world(gateway(listeners), SECRET % "certs")).gateways


def test_the_certificate_becomes_the_servers_credential() -> None:
    listeners = "[{name: s, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}]"
    found = convert(world(gateway(listeners), SECRET % "infra"))
    (istio,) = found.gateways.values()
    server = istio.spec.servers[0]
    assert server.tls is not None and server.tls.mode == "SIMPLE"
    assert server.tls.credential_name == "cert"
    assert istio.spec.selector == {"gateway.networking.k8s.io/gateway-name": "gw"}


def test_a_route_kind_the_listener_cannot_carry_is_reported() -> None:
    listeners = "[{name: h, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: TCPRoute}]}}]"
    status = convert(world(gateway(listeners))).status[GW]
    assert listener(status)["ResolvedRefs"] == ("False", "InvalidRouteKinds")
    assert status["listeners"][0]["supportedKinds"] == []


# ---- routes ---------------------------------------------------------------------------------


def test_an_attached_route_is_accepted_and_counted() -> None:
    found = convert(world(gateway(ALL), route("{name: gw, namespace: infra}"), service()))
    assert parent(found.status[ROUTE]) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    entry = found.status[ROUTE]["parents"][0]
    assert entry["controllerName"] == "istio.io/gateway-controller"
    assert entry["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "gw",
        "namespace": "infra",
    }
    assert all(c["observedGeneration"] == 3 for c in entry["conditions"])
    assert found.status[GW]["listeners"][0]["attachedRoutes"] == 1


def test_a_route_from_a_namespace_the_listener_does_not_allow() -> None:
    same = "[{name: http, port: 80, protocol: HTTP}]"  # allowedRoutes default: Same
    found = convert(world(gateway(same), route("{name: gw, namespace: infra}"), service()))
    assert parent(found.status[ROUTE])["Accepted"] == ("False", "NotAllowedByListeners")
    assert found.status[GW]["listeners"][0]["attachedRoutes"] == 0
    assert not found.virtual_services


def test_a_namespace_selector_admits_labelled_namespaces() -> None:
    selector = (
        "[{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: "
        "{from: Selector, selector: {matchLabels: {team: a}}}}}]"
    )
    parent_ref = "{name: gw, namespace: infra}"
    admitted = convert(
        world(gateway(selector), route(parent_ref), service(), namespace("apps", "{team: a}"))
    )
    assert parent(admitted.status[ROUTE])["Accepted"] == ("True", "Accepted")
    refused = convert(
        world(gateway(selector), route(parent_ref), service(), namespace("apps", "{team: b}"))
    )
    assert parent(refused.status[ROUTE])["Accepted"] == ("False", "NotAllowedByListeners")


def test_a_route_hostname_no_listener_serves() -> None:
    listeners = "[{name: h, port: 80, protocol: HTTP, hostname: a.example.com, allowedRoutes: {namespaces: {from: All}}}]"
    text = route("{name: gw, namespace: infra}", hostnames="[b.example.com]")
    found = convert(world(gateway(listeners), text, service()))
    assert parent(found.status[ROUTE])["Accepted"] == ("False", "NoMatchingListenerHostname")


def test_a_section_name_the_gateway_lacks() -> None:
    text = route("{name: gw, namespace: infra, sectionName: nope}")
    found = convert(world(gateway(ALL), text, service()))
    assert parent(found.status[ROUTE])["Accepted"] == ("False", "NoMatchingParent")


def test_backend_references_resolve_or_say_why() -> None:
    parent_ref = "{name: gw, namespace: infra}"

    def resolved(backends: str, *more: str) -> tuple[str, str]:
        found = convert(world(gateway(ALL), route(parent_ref, backends), *more))
        return parent(found.status[ROUTE])["ResolvedRefs"]

    assert resolved("[{name: svc, port: 80}]") == ("False", "BackendNotFound")
    assert resolved("[{name: svc, port: 80, kind: Pod}]", service()) == ("False", "InvalidKind")
    other = "[{name: svc, namespace: data, port: 80}]"
    assert resolved(other, service("svc", "data")) == ("False", "RefNotPermitted")
    allowed = grant("data", "HTTPRoute", "apps", "Service")
    assert resolved(other, service("svc", "data"), allowed) == ("True", "ResolvedRefs")
    # A grant for another kind of route does not let an HTTPRoute in.
    grpc_only = grant("data", "GRPCRoute", "apps", "Service")
    assert resolved(other, service("svc", "data"), grpc_only) == ("False", "RefNotPermitted")


def test_a_rule_whose_backends_do_not_resolve_answers_500() -> None:
    found = convert(world(gateway(ALL), route("{name: gw, namespace: infra}")))
    (vs,) = found.virtual_services.values()
    assert vs.spec.http[0].direct_response is not None
    assert vs.spec.http[0].direct_response.status == 500


def test_routes_are_ordered_by_the_specifications_precedence() -> None:
    text = f"""
apiVersion: {V1}
kind: HTTPRoute
metadata: {{name: r, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /a}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /a/b}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - matches: [{{path: {{type: Exact, value: /z}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /a}}, headers: [{{name: x, value: "1"}}]}}]
    backendRefs: [{{name: svc, port: 80}}]
"""
    (vs,) = convert(world(gateway(ALL), text, service())).virtual_services.values()
    uris = [
        (m.uri.exact or m.uri.prefix, len(m.headers))
        for h in vs.spec.http
        for m in h.match
        if m.uri is not None
    ]
    assert uris == [
        ("/a/b", 0),
        ("/a", 1),
        ("/a", 0),
        ("/z", 0),
        ("/a/b/", 0),
        ("/a/", 1),
        ("/a/", 0),
    ]


def test_status_is_output_a_rewritten_status_is_no_change() -> None:
    store = Store()
    doc = yaml.safe_load(gateway(ALL))
    first, _ = load(doc)
    assert store.apply([Submission(first, (), None)])
    again, _ = load({**doc, "status": {"conditions": [{"type": "Accepted", "status": "True"}]}})
    assert not store.apply([Submission(again, (), None)])
    assert store.snapshot.gateway_api_status[GW]["conditions"][0]["reason"] == "Accepted"


def test_analyze_reports_the_status_findings_with_path_and_reason(tmp_path: Any) -> None:
    from controlplane.analyze import analyze

    (tmp_path / "gw.yaml").write_text(
        gateway("[{name: u, port: 53, protocol: UDP}, " + ALL[1:])
        + "---\n"
        + route("{name: gw, namespace: infra}")
    )
    report = analyze([tmp_path])
    found = {(i.code.id, str(i.resource), i.path, i.reason.split(":")[0]) for i in report.issues}
    assert ("CP0600", "KubernetesGateway infra/gw", "spec.listeners[0].protocol",
            "UnsupportedProtocol") in found  # fmt: skip
    assert ("CP0604", "HTTPRoute apps/r", "spec.rules[0].backendRefs[0]",
            "BackendNotFound") in found  # fmt: skip
    assert report.exit_status() != 0


def test_a_filter_this_controller_lacks_is_not_skipped_the_rule_answers_500() -> None:
    text = f"""
apiVersion: {V1}
kind: HTTPRoute
metadata: {{name: r, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules:
  - filters: [{{type: ExtensionRef, extensionRef: {{group: example.com, kind: Magic, name: m}}}}]
    backendRefs: [{{name: svc, port: 80}}]
"""
    found = convert(world(gateway(ALL), text, service()))
    assert parent(found.status[ROUTE])["Accepted"] == ("False", "UnsupportedValue")
    (vs,) = found.virtual_services.values()
    assert vs.spec.http[0].direct_response is not None and not vs.spec.http[0].route
