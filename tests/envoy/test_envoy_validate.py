"""Every resource compiled from the valid corpus passes the real ``envoy --mode validate``.

For each client proxy the compiled clusters and listeners go into a bootstrap's
``static_resources``: EDS clusters become STATIC clusters carrying their compiled
ClusterLoadAssignment, and each HTTP connection manager gets its compiled RouteConfiguration
inline instead of RDS, so Envoy's validator checks clusters, endpoints, listeners and routes.
ADS stays configured (pointing nowhere) so config sources that name it still validate. SDS
secrets are given statically (the compiled ones, else a real stand-in certificate), so the TLS
contexts are validated with real key material.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from controlplane.compile import ProxyResources, SnapshotCompiler
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    CompiledResource,
)
from controlplane.local.envoy import envoy_binary
from tests.corpus import load_corpus

HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
CLIENTS = {
    "default": Proxy(
        node_id="sidecar~127.0.0.1~a.default~default.svc.cluster.local",
        labels={"app": "productpage", "version": "v1"},
        local_outbound_port=15001,
    ),
    "other-namespace-located": Proxy(
        node_id="sidecar~127.0.0.1~b.other~other.svc.cluster.local",
        namespace="other",
        labels={"version": "v1"},
        local_outbound_port=15001,
        locality="us-east/us-east-1a",
    ),
    "east-client": Proxy(
        node_id="sidecar~127.0.0.1~c.default~default.svc.cluster.local",
        local_outbound_port=15002,
        locality="us-east/us-east-1a/s1",
    ),
}


def _as_dict(resource: CompiledResource) -> dict[str, Any]:
    return json_format.MessageToDict(resource.message)


def _static_sds(node: Any) -> set[str]:
    """Point every SDS-over-ADS secret reference at a static secret of the same name (a
    STATIC cluster cannot wait for ADS, and Envoy's validator crashes on one that tries);
    return the names referenced."""
    names: set[str] = set()
    if isinstance(node, dict):
        if "sdsConfig" in node and "name" in node:
            node.pop("sdsConfig")
            names.add(node["name"])
        for value in node.values():
            names |= _static_sds(value)
    elif isinstance(node, list):
        for value in node:
            names |= _static_sds(value)
    return names


def _stand_in_secrets(names: set[str], compiled: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The compiled secrets, plus a real certificate or root for any other name referenced
    (client proxies compiled without an identity get no secrets of their own)."""
    from datetime import UTC, datetime

    from controlplane.ca import CertificateAuthority, Identity
    from controlplane.ca.root import create_root_bundle
    from controlplane.compile.secrets import certificate_secret, root_secret
    from controlplane.compile.tls import SDS_ROOT

    out = dict(compiled)
    missing = names - set(out)
    if missing:
        now = datetime.now(UTC)
        ca = CertificateAuthority(create_root_bundle(now), now=now)
        cert = ca.issue(Identity("cluster.local", "default", "validate"), now=now)
        for name in missing:
            if name == SDS_ROOT:
                message = root_secret(ca.root_certs_pem, name)
            else:
                message = certificate_secret(cert.cert_chain_pem, cert.private_key_pem, name)
            out[name] = json_format.MessageToDict(message)
    return list(out.values())


def static_bootstrap(resources: ProxyResources) -> dict[str, Any]:
    """A bootstrap whose static resources are exactly the compiled ones."""
    endpoints = {name: _as_dict(r) for name, r in resources.of(ENDPOINT).items()}
    routes = {name: _as_dict(r) for name, r in resources.of(ROUTE).items()}
    clusters = []
    for name, resource in resources.of(CLUSTER).items():
        cluster = _as_dict(resource)
        if cluster.get("type") == "EDS":
            cluster["type"] = "STATIC"
            cluster.pop("edsClusterConfig")
            cluster["loadAssignment"] = endpoints.get(name, {"clusterName": name})
        clusters.append(cluster)
    listeners = []
    for resource in resources.of(LISTENER).values():
        listener = _as_dict(resource)
        for chain in listener.get("filterChains", []):
            for flt in chain.get("filters", []):
                config = flt.get("typedConfig", {})
                if config.get("@type") == HCM_TYPE and "rds" in config:
                    name = config.pop("rds")["routeConfigName"]
                    config["routeConfig"] = routes[name]
        listeners.append(listener)
    clusters.append(
        {
            "name": "xds-grpc",
            "type": "STATIC",
            "connectTimeout": "1s",
            "loadAssignment": {
                "clusterName": "xds-grpc",
                "endpoints": [
                    {
                        "lbEndpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socketAddress": {"address": "127.0.0.1", "portValue": 1}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
            "typedExtensionProtocolOptions": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicitHttpConfig": {"http2ProtocolOptions": {}},
                }
            },
        }
    )
    return {
        "node": {"id": "validate", "cluster": "validate"},
        "dynamicResources": {
            "adsConfig": {
                "apiType": "GRPC",
                "transportApiVersion": "V3",
                "grpcServices": [{"envoyGrpc": {"clusterName": "xds-grpc"}}],
            }
        },
        "staticResources": {
            "clusters": clusters,
            "listeners": listeners,
            "secrets": _stand_in_secrets(
                _static_sds(clusters) | _static_sds(listeners),
                {name: _as_dict(r) for name, r in resources.of(SECRET).items()},
            ),
        },
    }


def envoy_validate(bootstrap: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compiler() -> SnapshotCompiler:
    corpus = load_corpus()
    assert not [i for i in corpus.issues if str(i.severity) == "Error"]
    return SnapshotCompiler(corpus.snapshot)


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_compiled_corpus_passes_envoy_validate(
    compiler: SnapshotCompiler, client: str, tmp_path: Path
) -> None:
    resources = compiler.compile(CLIENTS[client])
    bootstrap = static_bootstrap(resources)
    assert len(bootstrap["staticResources"]["clusters"]) > 10
    assert bootstrap["staticResources"]["listeners"]
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout


def test_the_validator_rejects_a_malformed_compiled_resource(
    compiler: SnapshotCompiler, tmp_path: Path
) -> None:
    # Proves the harness would catch a bad translation: corrupt one compiled route (a regex
    # RE2 cannot compile) and one cluster (a ring smaller than its minimum), separately.
    bootstrap = static_bootstrap(compiler.compile(CLIENTS["default"]))
    listener = bootstrap["staticResources"]["listeners"][0]
    hcm = listener["filterChains"][0]["filters"][0]["typedConfig"]
    hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["match"] = {"safeRegex": {"regex": "(("}}
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode != 0
    assert "missing )" in result.stdout + result.stderr

    bootstrap = static_bootstrap(compiler.compile(CLIENTS["default"]))
    cluster = next(
        c for c in bootstrap["staticResources"]["clusters"] if c.get("lbPolicy") == "RING_HASH"
    )
    cluster["ringHashLbConfig"] = {"minimumRingSize": "2048", "maximumRingSize": "1024"}
    result = envoy_validate(bootstrap, tmp_path)
    assert result.returncode != 0
