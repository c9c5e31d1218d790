"""The harness behind the ``envoy --mode validate`` tests: compiled resources in, a bootstrap
whose static resources are exactly those resources out, and the real validator run over it.

EDS clusters become STATIC clusters carrying their compiled ClusterLoadAssignment, and each
HTTP connection manager gets its compiled RouteConfiguration inline instead of RDS, so Envoy's
validator checks clusters, endpoints, listeners and routes. ADS stays configured (pointing
nowhere) so config sources that name it still validate. SDS secrets are given statically (the
compiled ones, else a real stand-in certificate), so TLS contexts are validated with real key
material.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from controlplane.compile import ProxyResources
from controlplane.compile.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    CompiledResource,
)
from controlplane.testing.envoy import envoy_binary

HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


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
    from controlplane.compile.sds import certificate_secret, root_secret
    from controlplane.compile.tls import SDS_ROOT

    out = dict(compiled)
    missing = names - set(out)
    if missing:
        now = datetime.now(UTC)
        ca = CertificateAuthority(create_root_bundle(now), now=now)
        cert = ca.issue(Identity("cluster.local", "default", "validate"), now=now)
        for name in missing:
            # A gateway credential's CA (``kubernetes://<name>-cacert``) is a root too.
            if name == SDS_ROOT or name.endswith("-cacert"):
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
