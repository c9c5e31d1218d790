"""The RBAC compiled for each of istiod's builder golden cases (``test_rbac_golden.py``, our
own policies) passes the real ``envoy --mode validate`` inside a whole sidecar config: the
matchers a table of requests checks there (URI templates, filter metadata, trust-domain
regexes, shadow rules) are ones Envoy accepts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from controlplane.api import validate
from controlplane.api.resources import parse_resource
from controlplane.compile import SnapshotCompiler
from controlplane.compile.proxy import proxy_from_node
from controlplane.store import Store, Submission
from tests.envoy.validate import envoy_validate, static_bootstrap
from tests.support import meshes
from tests.unit.compile.test_rbac_golden import CASES, NAMESPACE, Case

WORKLOAD = meshes.join(
    meshes.resource(
        "Service",
        "cart",
        {
            "selector": {"app": "cart"},
            "ports": [
                {"name": "http", "port": 9080, "targetPort": 8080},
                {"name": "tcp-ledger", "port": 7000, "targetPort": 7070},
            ],
        },
        namespace=NAMESPACE,
        api_version="v1",
    ),
    meshes.pod(
        "cart-1",
        "127.0.7.21",
        labels={"app": "cart", "version": "v1"},
        namespace=NAMESPACE,
        service_account="cart",
    ),
)
PROXY = dataclasses.replace(
    proxy_from_node(
        f"sidecar~127.0.7.21~cart-1.{NAMESPACE}~{NAMESPACE}.svc.cluster.local",
        {"NAMESPACE": NAMESPACE, "LABELS": {"app": "cart", "version": "v1"}},
    ),
    service_account="cart",
    identity=f"spiffe://cluster.local/ns/{NAMESPACE}/sa/cart",
)


def compiled_bootstrap(case: Case) -> dict[str, object]:
    docs = [d for d in yaml.safe_load_all(WORKLOAD + "\n---\n" + case.policies) if d]
    resources = [parse_resource(d) for d in docs]
    store = Store()
    store.apply(upserts=[Submission(r, tuple(validate(r))) for r in resources])
    return static_bootstrap(SnapshotCompiler(store.snapshot).compile(PROXY))


def test_the_workload_gets_rbac_filters(tmp_path: Path) -> None:
    text = str(compiled_bootstrap(CASES[1]))  # allow-full-rule
    assert "envoy.filters.http.rbac" in text and "envoy.filters.network.rbac" in text
    assert "uri-template" in text and "envoy.filters.a.b" in text


@pytest.mark.parametrize("case", CASES, ids=[c.istio_case for c in CASES])
def test_the_compiled_case_passes_envoy_validate(case: Case, tmp_path: Path) -> None:
    result = envoy_validate(compiled_bootstrap(case), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
