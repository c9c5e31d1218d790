"""Property: whatever validation accepts compiles without raising, and the real Envoy
validator (``envoy --mode validate``, harness in ``validate.py``) accepts what it compiles to.

Resources are generated from the pydantic models themselves, field by field (every field of
VirtualService, DestinationRule, PeerAuthentication and AuthorizationPolicy, nested models
included), with values drawn near the edges (ports, weights, durations, hosts, regexes).
Each is validated on its own and in context with a small mesh (store), then compiled for two
sidecars of that mesh, one in local mode and one in transparent mode with inbound ports. A
compile that raises, a generator guard that had to pass a resource over (logged on
``controlplane.compile``), the store's compile check refusing an accepted resource, or Envoy
refusing the output are all failures. Seeded (``derandomize``): the same cases every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from controlplane.api import networking as net
from controlplane.api.base import Duration
from controlplane.api.issues import Codes, errors
from controlplane.api.networking import DestinationRule, VirtualService
from controlplane.api.resources import parse_resource
from controlplane.api.security import AuthorizationPolicy, PeerAuthentication
from controlplane.api.validation import validate
from controlplane.compile import ProxyResources, SnapshotCompiler
from controlplane.compile.check import check_resource
from controlplane.compile.proxy import Proxy, proxy_from_node
from controlplane.compile.resources import CompiledResource
from controlplane.store import Store, Submission
from controlplane.store.reads import collecting
from tests.envoy.validate import envoy_validate, static_bootstrap
from tests.support import meshes

DEFAULT_EXAMPLES = 60  # per kind: 240 cases in the default tier
# per kind; COMPILE_PROPERTY_EXAMPLES runs a longer search
SLOW_EXAMPLES = int(os.environ.get("COMPILE_PROPERTY_EXAMPLES", "400"))

# ---- strategies from the models ----------------------------------------------------------------

HOSTS = [
    "reviews",
    "ratings",
    "reviews.default.svc.cluster.local",
    "tcp-echo",
    "*",
    "*.default.svc.cluster.local",
    "unknown",
    "ratings.other.svc.cluster.local",
]
STRINGS = [
    "",
    "a",
    "v1",
    "v2",
    "reviews",
    "app",
    "x-user",
    "/",
    "/api",
    "/api/v1",
    "GET",
    "POST",
    "10.0.0.0/8",
    "127.0.0.1",
    "1.2.3.4/32",
    "::1",
    "cluster.local/ns/default/sa/reviews",
    "default",
    "*",
    "*.com",
    "a*",
    ".*",
    "^/a$",
    "[a-z]+",
    "request.headers[x-user]",
    "source.ip",
    "destination.port",
    "9080",
    "80",
    "reviews.default.svc.cluster.local:9080",
    "h2",
    "http/1.1",
    "ROUND_ROBIN",
    "user",
    "true",
    "0",
    "x" * 64,
]
DURATIONS = [
    "0s",
    "1ms",
    "0.5ms",
    "1s",
    "1.5s",
    "100ms",
    "10s",
    "1h",
    "1m",
    "-1s",
    "315576000000s",
    "315576000001s",
    "0.000001s",
]
INTS = [
    0,
    1,
    2,
    3,
    9,
    10,
    80,
    100,
    101,
    443,
    599,
    600,
    3306,
    9000,
    9080,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    -1,
]
FLOATS = [0.0, 0.001, 0.5, 1.0, 50.0, 99.9, 100.0, 100.1, -1.0, 1e-9, 1e12]
NAME_FIELDS = {"subset": ["v1", "v2", "v3"], "name": ["v1", "v2", "a", "http", "explode"]}


def _leaf(annotation: Any, field: str) -> st.SearchStrategy[Any] | None:
    if annotation is Duration:
        return st.sampled_from(DURATIONS)
    if annotation is str:
        if field in ("host", "hosts", "sni_hosts", "authority"):
            return st.sampled_from(HOSTS)
        if field in NAME_FIELDS:
            return st.sampled_from(NAME_FIELDS[field])
        return st.sampled_from(STRINGS) | st.text(max_size=6)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.sampled_from(INTS) | st.integers(0, 200)
    if annotation is float:
        return st.sampled_from(FLOATS) | st.floats(0, 100, allow_nan=False)
    if annotation is Any or annotation is object:
        return st.sampled_from([None, 1, "a", {}])
    return None


def strategy_for(annotation: Any, field: str = "", depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of ``annotation`` as they would be written in YAML (camelCase keys)."""
    leaf = _leaf(annotation, field)
    if leaf is not None:
        return leaf
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return strategy_for(args[0], field, depth)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(a, field, depth) for a in args if a is not type(None)])
    if origin is list:
        if depth > 5:
            return st.just([])
        return st.lists(strategy_for(args[0], field, depth + 1), max_size=3)
    if origin is dict:
        if args and args[0] is int:
            keys: st.SearchStrategy[Any] = st.sampled_from([80, 9080, 8080, 0, 65536])
        else:
            keys = st.sampled_from(["app", "version", "x-user", "end-user", "a b", ""])
        values = strategy_for(args[1], field, depth + 1) if len(args) == 2 else st.just("a")
        if args and args[1] is str:
            values = st.sampled_from(["reviews", "v1", "v2", "productpage", "", "x\ny"])
        return st.dictionaries(keys, values, max_size=2)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation, depth + 1)
    raise NotImplementedError(f"no strategy for {annotation!r} ({field})")


_MODELS: dict[tuple[type[BaseModel], int], st.SearchStrategy[dict[str, Any]]] = {}


def model_strategy(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    key = (model, min(depth, 7))
    if key not in _MODELS:
        if depth > 7:
            _MODELS[key] = st.just({})
        else:
            fields = {
                info.alias or name: strategy_for(info.annotation, name, depth)
                for name, info in model.model_fields.items()
            }
            # A few fields at a time (a resource with every field set at the edge is refused
            # for one of them, and the rest are never compiled); every field over the run.
            chosen = st.lists(
                st.sampled_from(sorted(fields)), max_size=3 if depth < 3 else 2, unique=True
            ).flatmap(lambda names: st.fixed_dictionaries({n: fields[n] for n in names}))
            skeleton = SKELETONS.get(model)
            if skeleton is not None:
                # What validation requires of this model, under the generated fields.
                chosen = st.builds(lambda base, mine: {**base, **mine}, skeleton(), chosen)
            _MODELS[key] = chosen
    return _MODELS[key]


_HOST = st.sampled_from(["reviews", "ratings", "tcp-echo"])


def _destination() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda h: {"destination": {"host": h}}, _HOST)


SKELETONS: dict[type[BaseModel], Callable[[], st.SearchStrategy[dict[str, Any]]]] = {
    net.VirtualServiceSpec: lambda: st.builds(
        lambda h, section, d: {"hosts": [h], section: [{"route": [d]}]},
        _HOST,
        st.sampled_from(["http", "tcp"]),
        _destination(),
    ),
    net.HTTPRoute: lambda: st.builds(lambda d: {"route": [d]}, _destination()),
    net.TCPRoute: lambda: st.builds(lambda d: {"route": [d]}, _destination()),
    net.TLSRoute: lambda: st.builds(
        lambda d, h: {"route": [d], "match": [{"sniHosts": [h]}]}, _destination(), _HOST
    ),
    net.TLSMatchAttributes: lambda: st.builds(lambda h: {"sniHosts": [h]}, _HOST),
    net.HTTPRouteDestination: lambda: st.builds(lambda h: {"destination": {"host": h}}, _HOST),
    net.RouteDestination: lambda: st.builds(lambda h: {"destination": {"host": h}}, _HOST),
    net.Destination: lambda: st.builds(lambda h: {"host": h}, _HOST),
    net.DestinationRuleSpec: lambda: st.builds(lambda h: {"host": h}, _HOST),
    net.Subset: lambda: st.builds(
        lambda v: {"name": v, "labels": {"version": v}}, st.sampled_from(["v1", "v2"])
    ),
}

KINDS: dict[str, tuple[type[BaseModel], str]] = {
    "VirtualService": (VirtualService, "networking.istio.io/v1"),
    "DestinationRule": (DestinationRule, "networking.istio.io/v1"),
    "PeerAuthentication": (PeerAuthentication, "security.istio.io/v1"),
    "AuthorizationPolicy": (AuthorizationPolicy, "security.istio.io/v1"),
}


def documents(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    model, api_version = KINDS[kind]
    spec_model = model.model_fields["spec"].annotation
    assert isinstance(spec_model, type)
    return st.builds(
        lambda spec, name: {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        },
        model_strategy(spec_model),
        st.sampled_from(["reviews", "ratings", "generated"]),
    )


# ---- the mesh and its sidecars -----------------------------------------------------------------

MESH_YAML = meshes.join(
    meshes.reviews("127.0.7.1", "127.0.7.2", target_port=8080),
    meshes.ratings("127.0.7.3", target_port=8080),
    meshes.service(
        "tcp-echo",
        ports=[
            {"name": "tcp", "port": 9000, "targetPort": 9000},
            {"name": "tls", "port": 9443, "targetPort": 9443},
            {"name": "grpc", "port": 9090, "targetPort": 9090},
        ],
    ),
    meshes.pod("tcp-echo-1", "127.0.7.4", app="tcp-echo"),
)
MESH = [parse_resource(doc) for doc in yaml.safe_load_all(MESH_YAML) if doc]


def _with_identity(proxy: Proxy, account: str) -> Proxy:
    """As the xDS server identifies a proxy with a certificate (mTLS, SANs, RBAC)."""
    return dataclasses.replace(
        proxy, service_account=account, identity=f"spiffe://cluster.local/ns/default/sa/{account}"
    )


PROXIES = {
    "local": proxy_from_node(
        "sidecar~127.0.7.9~productpage.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "LABELS": {"app": "productpage"},
            "LOCAL_OUTBOUND_PORT": "15101",  # not the transparent sidecar's 15001
            "LOCAL_TCP_PORTS": "tcp-echo:9000=21000,tcp-echo:9443=21443",
        },
    ),
    "transparent": proxy_from_node(
        "sidecar~127.0.7.1~reviews-v1.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": {"app": "reviews", "version": "v1"}},
    ),
}
PROXIES = {
    **PROXIES,
    "local with identity": _with_identity(PROXIES["local"], "productpage"),
    "transparent with identity": _with_identity(PROXIES["transparent"], "reviews"),
}
# The default tier compiles for the sidecars with a certificate (mTLS, RBAC, SANs: the most
# output); the slow tier for all four.
DEFAULT_PROXIES = ("local with identity", "transparent with identity")


class Stats:
    cases = 0
    refused = 0
    compiled = 0
    validated = 0


_seen: set[str] = set()


class _Guarded(logging.Handler):
    """Collects what the generators' guards passed over: each one is a compile failure."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


def check_document(doc: dict[str, Any], proxies: tuple[str, ...] = tuple(PROXIES)) -> None:
    Stats.cases += 1
    try:
        resource = parse_resource(doc)
    except Exception:  # noqa: BLE001 (schema refusal: not compiled)
        Stats.refused += 1
        return
    issues = validate(resource)
    if errors(issues):
        Stats.refused += 1
        return
    store = Store()
    store.apply(upserts=[*(Submission(r) for r in MESH), Submission(resource, tuple(issues))])
    snapshot = store.snapshot
    view, _ = collecting(snapshot)
    found = check_resource(view, resource)
    assert not [i for i in found if i.code == Codes.COMPILE_FAILED], (doc, found)
    compiler = SnapshotCompiler(snapshot)
    guard = _Guarded()
    logger = logging.getLogger("controlplane.compile")
    logger.addHandler(guard)
    try:
        built = {mode: compiler.compile(PROXIES[mode]) for mode in proxies}
    finally:
        logger.removeHandler(guard)
    assert not guard.records, (doc, guard.records)
    Stats.compiled += 1
    for mode, resources in _merged(built).items():
        bootstrap = static_bootstrap(resources)
        digest = hashlib.sha256(json.dumps(bootstrap, sort_keys=True).encode()).hexdigest()
        if digest in _seen:
            continue  # the very same output was validated already
        with tempfile.TemporaryDirectory() as workdir:
            result = envoy_validate(bootstrap, Path(workdir))
        assert result.returncode == 0, (
            f"{mode} sidecar: Envoy refuses the output for {json.dumps(doc)}:\n"
            + result.stdout[-2000:]
            + result.stderr[-2000:]
        )
        _seen.add(digest)
        Stats.validated += 1


def _merged(built: dict[str, ProxyResources]) -> dict[str, ProxyResources]:
    """One Envoy run for every sidecar's output where their resources do not collide (a
    name in two of them with different content), else one run each."""
    merged: dict[str, dict[str, CompiledResource]] = {}
    for resources in built.values():
        for type_url, named in resources.by_type.items():
            into = merged.setdefault(type_url, {})
            for name, resource in named.items():
                if name in into and into[name].message != resource.message:
                    return built
                into[name] = resource
    return {" + ".join(built): ProxyResources(merged)}


def _run(kind: str, examples: int, proxies: tuple[str, ...]) -> Callable[[], None]:
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(documents(kind))
    def run(doc: dict[str, Any]) -> None:
        check_document(doc, proxies)

    return run


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_accepted_resources_compile_and_envoy_accepts_them(kind: str) -> None:
    before = (Stats.cases, Stats.compiled, Stats.validated)
    _run(kind, DEFAULT_EXAMPLES, DEFAULT_PROXIES)()
    cases, compiled, validated = (
        Stats.cases - before[0],
        Stats.compiled - before[1],
        Stats.validated - before[2],
    )
    print(f"{kind}: {cases} cases, {compiled} accepted and compiled, {validated} Envoy runs")
    assert compiled > 0, f"{kind}: no generated case was accepted: the generator is too wild"


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_accepted_resources_compile_and_envoy_accepts_them_long(kind: str) -> None:
    _run(kind, SLOW_EXAMPLES, tuple(PROXIES))()


# ---- findings of the property test, kept as cases ----------------------------------------------

FINDINGS = {
    # Istio accepts durations up to protobuf's limit (315576000000 s); Envoy refuses more
    # than 9223372035 s ("Duration out-of-range"): compile sends Envoy's longest instead.
    "timeout at protobuf's limit": {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}}], "timeout": "315576000000s"}],
        },
    },
}


@pytest.mark.parametrize("case", sorted(FINDINGS))
def test_property_findings_stay_fixed(case: str) -> None:
    before = Stats.compiled
    check_document(FINDINGS[case])
    assert Stats.compiled == before + 1, "the case must be accepted and compiled"
