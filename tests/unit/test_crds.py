"""The checked-in CRDs are exactly what the models generate, and are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controlplane.api.crds import KINDS, crd_files
from controlplane.api.networking import HTTPRoute, HTTPRouteDestination
from controlplane.cli.crds import webhooks_manifest, write_crds

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_match_the_models():
    files = crd_files()
    on_disk = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(files), "crds/ has files the models do not generate"
    for name, text in files.items():
        assert on_disk[name] == text, f"crds/{name} is out of date: run `make crds`"


def test_check_mode_reports_a_drifted_file(tmp_path: Path):
    assert write_crds(tmp_path) == 0
    assert write_crds(tmp_path, check=True) == 0
    victim = next(tmp_path.glob("*virtualservices.yaml"))
    victim.write_text(victim.read_text().replace("weight", "wieght"))
    assert write_crds(tmp_path, check=True) == 1


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Paths that break the structural-schema rules the apiserver enforces."""
    bad = []
    if "$ref" in node or "anyOf" in node or "oneOf" in node or "default" in node:
        bad.append(path)
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(path)
    if "properties" in node and "additionalProperties" in node:
        bad.append(path)
    for name, sub in node.get("properties", {}).items():
        bad += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        bad += _walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        bad += _walk(node["items"], f"{path}[]")
    return bad


def test_every_schema_is_structural_typed_and_without_defaults():
    for text in crd_files().values():
        doc = yaml.safe_load(text)
        for version in doc["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            assert _walk(schema, doc["metadata"]["name"]) == []


def test_versions_served_and_stored_as_istio_publishes_them():
    by_kind = {
        yaml.safe_load(t)["spec"]["names"]["kind"]: yaml.safe_load(t) for t in crd_files().values()
    }
    expected = {
        "VirtualService": ["v1", "v1beta1", "v1alpha3"],
        "DestinationRule": ["v1", "v1beta1", "v1alpha3"],
        "PeerAuthentication": ["v1", "v1beta1"],
        "AuthorizationPolicy": ["v1", "v1beta1"],
    }
    for kind, versions in expected.items():
        spec = by_kind[kind]["spec"]
        assert [v["name"] for v in spec["versions"]] == versions
        assert [v["storage"] for v in spec["versions"]] == [True] + [False] * (len(versions) - 1)
        assert all(v["served"] and v["subresources"] == {"status": {}} for v in spec["versions"])
        assert all(v["additionalPrinterColumns"] for v in spec["versions"])


def test_every_model_field_is_in_the_schema_so_the_apiserver_keeps_it():
    vs = next(k for k in KINDS if k.kind == "VirtualService")
    doc = yaml.safe_load(crd_files()[f"{vs.group}_{vs.plural}.yaml"])
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    http = spec["properties"]["http"]["items"]["properties"]
    route = http["route"]["items"]["properties"]
    aliases = {f.alias or n for n, f in HTTPRouteDestination.model_fields.items()}
    assert set(route) == aliases
    assert route["weight"] == {
        "type": "integer",
        "description": "The relative share of traffic for this destination; weights need not "
        "sum to 100.",
    }
    assert set(http) == {f.alias or n for n, f in HTTPRoute.model_fields.items()}


def test_the_manifests_carry_the_same_crds_and_the_generated_webhooks():
    manifests = CRDS.parent / "manifests"
    files = crd_files()
    for name, text in files.items():
        assert (manifests / "crds" / name).read_text() == text, f"manifests/crds/{name}: make crds"
    assert (manifests / "webhooks.yaml").read_text() == webhooks_manifest(), "make crds"
