"""Status bodies and Events from the store's verdicts (pure)."""

from __future__ import annotations

from controlplane.api.issues import Codes, Issue, ResourceKey
from controlplane.status.conditions import rejection_event, same_verdict, status_body
from controlplane.store import ResourceStatus

KEY = ResourceKey("VirtualService", "shop", "reviews")
SUBSET = Issue(
    Codes.SUBSET_NOT_FOUND,
    "spec.http[0].route[1].destination.subset",
    "subset 'v3' of host reviews.shop.svc.cluster.local is not defined (no DestinationRule defines it)",
    KEY,
)
WEIGHT = Issue(Codes.INVALID_FIELD, "spec.http[0].route[1].weight", "must not be negative", KEY)


def by_type(body):
    return {c["type"]: c for c in body["conditions"]}


def test_a_reconciled_resource_reports_both_conditions_true_for_its_generation():
    body = status_body(ResourceStatus(True, True, (), 4), now="2026-01-01T00:00:00Z")
    c = by_type(body)
    assert c["Accepted"]["status"] == c["Reconciled"]["status"] == "True"
    assert body["observedGeneration"] == 4 and c["Reconciled"]["observedGeneration"] == 4
    assert c["Accepted"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert body["validationMessages"] == []


def test_broken_in_context_is_accepted_but_not_reconciled_with_the_code_title_and_path():
    c = by_type(status_body(ResourceStatus(True, False, (SUBSET,), 2)))
    assert c["Accepted"]["status"] == "True"
    assert c["Reconciled"]["status"] == "False"
    assert c["Reconciled"]["reason"] == "ReferencedSubsetNotFound"
    assert c["Reconciled"]["message"].startswith(
        "spec.http[0].route[1].destination.subset: subset 'v3'"
    )


def test_a_rejection_is_not_accepted_names_the_field_and_gets_a_warning_event():
    status = ResourceStatus(False, False, (WEIGHT,), 5)
    c = by_type(status_body(status))
    assert c["Accepted"] == {
        "type": "Accepted",
        "status": "False",
        "reason": "InvalidField",
        "message": "spec.http[0].route[1].weight: must not be negative",
        "observedGeneration": 5,
        "lastTransitionTime": c["Accepted"]["lastTransitionTime"],
    }
    assert c["Reconciled"]["reason"] == "NotAccepted"
    event = rejection_event(KEY, status, "networking.istio.io/v1", "uid-1")
    assert event["type"] == "Warning" and event["reason"] == "Rejected"
    assert event["involvedObject"] == {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "name": "reviews",
        "namespace": "shop",
        "uid": "uid-1",
    }
    assert "spec.http[0].route[1].weight: must not be negative" in event["message"]
    assert rejection_event(KEY, ResourceStatus(True, True), "networking.istio.io/v1", None) is None


def test_an_unchanged_condition_keeps_its_transition_time_and_counts_as_the_same_verdict():
    first = status_body(ResourceStatus(True, False, (SUBSET,), 2), now="2026-01-01T00:00:00Z")
    again = status_body(
        ResourceStatus(True, False, (SUBSET,), 2), first, now="2026-01-01T00:05:00Z"
    )
    assert by_type(again)["Reconciled"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same_verdict(first, again)
    fixed = status_body(ResourceStatus(True, True, (), 2), first, now="2026-01-01T00:06:00Z")
    assert by_type(fixed)["Reconciled"]["lastTransitionTime"] == "2026-01-01T00:06:00Z"
    assert by_type(fixed)["Accepted"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert not same_verdict(first, fixed)


def test_an_unsupported_kind_says_so_in_both_conditions():
    from controlplane.api.unsupported import unsupported_kind_issue

    key = ResourceKey("EnvoyFilter", "shop", "lua")
    issue = unsupported_kind_issue("EnvoyFilter").with_context(key, None)
    c = by_type(status_body(ResourceStatus(True, True, (issue,), 1)))
    for kind in ("Accepted", "Reconciled"):
        assert c[kind]["status"] == "False"
        assert c[kind]["reason"] == "UnsupportedKind"
        assert "EnvoyFilter is not supported" in c[kind]["message"]
        assert "no effect" in c[kind]["message"]
