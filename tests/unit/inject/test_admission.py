"""The admission verdicts and webhook configurations (pure parts of the webhooks)."""

from __future__ import annotations

from controlplane.inject.admission import admission_verdict, denial_message
from controlplane.inject.webhooks import in_cluster_client_config, webhook_configurations


def vs(weight: int, **extra) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}, "weight": weight}], **extra}],
        },
    }


def test_an_invalid_resource_is_denied_with_field_path_and_reason():
    errors, warnings = admission_verdict(vs(-1))
    assert errors == ["spec.http[0].route[0].weight: must not be negative"]
    assert denial_message(errors) == (
        "configuration is invalid: spec.http[0].route[0].weight: must not be negative"
    )


def test_a_valid_resource_is_admitted_and_unsupported_fields_become_warnings():
    errors, warnings = admission_verdict(vs(1, match=[{"withoutHeaders": {"x-debug": {}}}]))
    assert errors == []
    assert warnings == ["spec.http[0].match[0].withoutHeaders: not supported yet; ignored"]


def test_a_schema_error_is_reported_the_same_way():
    doc = vs(1)
    doc["spec"]["http"][0]["timeout"] = "soon"
    errors, _ = admission_verdict(doc)
    assert errors and errors[0].startswith("spec.http[0].timeout: invalid duration 'soon'")


def test_the_injector_only_sees_pods_of_labelled_namespaces_that_do_not_opt_out():
    validating, mutating = webhook_configurations({"url": "https://127.0.0.1:9443"})
    hook, opt_in = mutating["webhooks"]
    assert hook["namespaceSelector"] == {"matchLabels": {"istio-injection": "enabled"}}
    assert hook["objectSelector"]["matchExpressions"] == [
        {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}
    ]
    # Elsewhere (no istio-injection label at all), only Pods that opt in.
    assert opt_in["namespaceSelector"] == {
        "matchExpressions": [{"key": "istio-injection", "operator": "DoesNotExist"}]
    }
    assert opt_in["objectSelector"]["matchExpressions"] == [
        {"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]}
    ]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/inject-sidecar"
    assert hook["rules"][0]["resources"] == ["pods"]
    assert hook["rules"][0]["operations"] == ["CREATE"]
    paths = {w["clientConfig"]["url"].rsplit("/", 1)[1] for w in validating["webhooks"]}
    assert paths == {
        "validate-virtualservices",
        "validate-destinationrules",
        "validate-serviceentries",
        "validate-workloadentries",
        "validate-gateways",
        "validate-sidecars",
        "validate-peerauthentications",
        "validate-authorizationpolicies",
        "validate-requestauthentications",
        "validate-telemetries",
    }
    # Requests in older versions are converted to v1 for the handler.
    assert all(w["matchPolicy"] == "Equivalent" for w in validating["webhooks"])
    assert all(w["rules"][0]["apiVersions"] == ["v1"] for w in validating["webhooks"])


def test_in_cluster_the_webhooks_go_through_the_service_with_the_ca_bundle():
    config = in_cluster_client_config("controlplane", "istio-system", 9443, "Q0E=")
    _, mutating = webhook_configurations(config)
    client = mutating["webhooks"][0]["clientConfig"]
    assert client == {
        "service": {
            "name": "controlplane",
            "namespace": "istio-system",
            "port": 9443,
            "path": "/inject-sidecar",
        },
        "caBundle": "Q0E=",
    }
