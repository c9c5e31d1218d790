"""Istio's public validation cases (tests/corpus/istio, our own inputs written after reading
istiod's validation tests and test data): every case gets the verdict istiod gives, through
``controlplane.api.load``, the one door file mode, the webhook, status and analyze share.

A case where we deliberately differ states ``ours:`` and ``why:`` (so far only security
policies we cannot compile exactly yet, which are refused and fail closed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.api import InvalidResource, Level, load

CASES_DIR = Path(__file__).parents[2] / "corpus" / "istio"


def _cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        out += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


CASES = _cases()


def verdict(resource: dict[str, Any]) -> tuple[str, list[str]]:
    """("valid", warnings) or ("invalid", the field paths of the errors)."""
    try:
        _, issues = load(resource)
    except InvalidResource as exc:
        return "invalid", [i.path for i in exc.issues if i.severity is Level.ERROR]
    return "valid", [i.path for i in issues]


def test_the_corpus_is_large_and_covers_both_verdicts() -> None:
    names = [c["case"] for c in CASES]
    assert len(names) == len(set(names)), "case names are unique"
    istiod_valid = [c for c in CASES if c["istiod"] == "valid"]
    istiod_invalid = [c for c in CASES if c["istiod"] == "invalid"]
    assert len(istiod_valid) >= 25 and len(istiod_invalid) >= 50
    kinds = {c["resource"]["kind"] for c in CASES}
    assert kinds == {
        "VirtualService",
        "DestinationRule",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "ServiceEntry",
        "WorkloadEntry",
    }
    # Every deliberate difference says why, and refuses (never accepts what istiod refuses).
    for case in CASES:
        if "ours" in case:
            assert case["ours"] == "invalid" and case["istiod"] == "valid" and case["why"]
        if "istioctl" in case:  # istioctl validate -f said otherwise: the note says why
            assert case["istioctl"] != case["istiod"] and case["note"]


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_each_case_gets_its_stated_verdict_with_its_field_path(case: dict[str, Any]) -> None:
    expected = case.get("ours", case["istiod"])
    got, paths = verdict(case["resource"])
    assert got == expected, (case["case"], paths)
    if expected == "invalid":
        assert case["path"] in paths, (case["case"], paths)
    elif "warning" in case:  # accepted with a warning at this path, as istiod warns
        assert case["warning"] in paths, (case["case"], paths)
