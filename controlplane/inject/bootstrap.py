"""The Envoy bootstrap of one sidecar: who it is (node id and metadata), where the control plane
is and how it proves itself to it, its admin port. Pure: options in, a dict out.

Used by `controlplane bootstrap` (local sidecars), `controlplane sidecar` (the injected proxy,
from the downward API) and the test and demo harnesses (``controlplane.testing``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ISTIO_VERSION = "1.24.0"  # what we tell tools that read node metadata; we speak its API

# Istio's ports for metrics: Envoy's own statistics in Prometheus text (a listener in the
# bootstrap, routed to the admin port), and the in-pod agent's merged endpoint (Envoy's plus
# the application's, served by `controlplane sidecar`).
ENVOY_PROMETHEUS_PORT = 15090
STATUS_PORT = 15020
PROMETHEUS_PATH = "/stats/prometheus"
PROMETHEUS_CLUSTER = "prometheus_stats"


# How Envoy turns a statistic's dotted name into a Prometheus metric and labels (its "tag
# extraction"). Envoy's default cluster_name tag takes the name up to the first dot, which cuts
# our cluster names (``outbound|9080|v1|reviews.default.svc.cluster.local``) at the host's first
# dot and leaves the rest in the metric name. Istio's bootstrap avoids it by ending every stat
# prefix with ``;`` (and compiling every cluster's alt_stat_name that way); this project keeps
# Envoy's plain stat names (the admin API's /stats and its users read them) and instead teaches
# the extractor our name grammar: ``direction|port|subset|host`` whose host runs to
# ``.svc.cluster.local`` or, for other hosts, to the first segment that is one of Envoy's
# cluster statistics (they contain ``_`` or are one of a few words: ``ssl``, ``default``...).
# The connection managers' prefixes are ``<direction>_<address>_<port>``. Envoy refuses a tag
# named twice, so the defaults are off and the ones dashboards use are listed here.
_CLUSTER_STAT = r"(?:[a-z0-9]*_|version$|default\.|internal\.|external\.|canary\.|ssl\.|tls\.|zone\.|http[123]\.)"
_HCM_PREFIX = r"(?:inbound|outbound)_[0-9a-fA-F.:\[\]]+_\d+|[^.]+"
STATS_TAGS: tuple[dict[str, str], ...] = (
    {
        "tag_name": "cluster_name",
        "regex": r"^cluster\.(((?:inbound|outbound)\|\d+\|[^|]*\|(?:[^|]*?\.svc\.cluster\.local"
        rf"|[^|]*?)(?=\.{_CLUSTER_STAT})|[^.|]+)\.)",
    },
    {"tag_name": "http_conn_manager_prefix", "regex": rf"^http\.(({_HCM_PREFIX})\.)"},
    {
        "tag_name": "http_conn_manager_listener_prefix",
        "regex": rf"^listener(?=\.).*?\.http\.(({_HCM_PREFIX})\.)",
    },
    {
        "tag_name": "listener_address",
        "regex": r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    },
    {"tag_name": "tcp_prefix", "regex": r"^tcp\.((.*?)\.)\w+?$"},
    {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"},
    {"tag_name": "response_code_class", "regex": r"_rq(_(\dxx))$"},
    {"tag_name": "worker_id", "regex": r"^listener_manager\.((worker_\d+)\.)"},
)


def parse_labels(text: str) -> dict[str, str]:
    """``app=reviews,version=v1`` -> dict; raises ValueError naming the bad entry."""
    labels: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} is not of the form key=value")
        labels[key.strip()] = value.strip()
    return labels


def render_bootstrap(
    *,
    node_id: str,
    namespace: str,
    labels: Mapping[str, str],
    service_account: str,
    xds_port: int,
    xds_address: str = "127.0.0.1",
    outbound_port: int | None = None,
    admin_port: int = 15000,
    delta: bool = False,
    workload_name: str = "",
    instance_ips: str = "",
    app_address: str = "",
    tcp_ports: str = "",
    extra_metadata: Mapping[str, Any] | None = None,
    xds_token: str | None = None,
    xds_root_cert: str | None = None,
    xds_san: str | None = None,
    prometheus_port: int | None = None,
    prometheus_address: str = "0.0.0.0",
) -> dict[str, Any]:
    """The bootstrap as a dict (dump it as YAML or JSON).

    ``xds_token`` proves the proxy's identity (a token from ``controlplane bootstrap
    --ca-dir`` or a service-account token): Envoy sends it on the ADS stream as
    ``authorization: Bearer ...``. ``xds_root_cert`` (a PEM file) makes the xDS connection
    TLS, verifying the control plane against it (and its URI SAN ``xds_san``, when given).
    An ``xds_address`` that is not an IP address (a Service name in a cluster) is resolved
    by DNS. ``prometheus_port`` (Istio's is 15090; off by default because the test and bench
    harnesses run many Envoys on one host) adds the listener that serves Envoy's statistics
    in Prometheus text at ``/stats/prometheus``.
    """
    metadata: dict[str, Any] = {
        "NAMESPACE": namespace,
        "LABELS": dict(labels),
        "SERVICE_ACCOUNT": service_account,
        "ISTIO_VERSION": ISTIO_VERSION,
        "CLUSTER_ID": "Kubernetes",
        "INTERCEPTION_MODE": "NONE" if outbound_port else "REDIRECT",
    }
    if workload_name:
        metadata["WORKLOAD_NAME"] = workload_name
    if instance_ips:
        metadata["INSTANCE_IPS"] = instance_ips
    if outbound_port:
        metadata["LOCAL_OUTBOUND_PORT"] = str(outbound_port)
    if app_address:
        metadata["LOCAL_APP_ADDRESS"] = app_address
    if tcp_ports:
        metadata["LOCAL_TCP_PORTS"] = tcp_ports
        metadata["INTERCEPTION_MODE"] = "NONE"
    metadata.update(extra_metadata or {})
    app = labels.get("app") or workload_name or service_account
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": "xds-grpc"}}
    if xds_token:
        grpc_service["initial_metadata"] = [
            {"key": "authorization", "value": f"Bearer {xds_token}"}
        ]
    bootstrap: dict[str, Any] = {
        "node": {
            "id": node_id,
            "cluster": f"{app}.{namespace}",
            "metadata": metadata,
        },
        "stats_config": {
            "use_all_default_tags": False,
            "stats_tags": [dict(tag) for tag in STATS_TAGS],
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC" if _is_ip(xds_address) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_address,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
    }

    if prometheus_port:
        _add_prometheus(bootstrap, prometheus_port, prometheus_address, admin_port)
    if xds_root_cert:
        validation: dict[str, Any] = {"trusted_ca": {"filename": xds_root_cert}}
        if xds_san:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": xds_san}}
            ]
        xds_cluster = bootstrap["static_resources"]["clusters"][0]
        xds_cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": validation,
                },
            },
        }
    return bootstrap


def _static_cluster(name: str, address: str, port: int) -> dict[str, Any]:
    endpoint = {"address": {"socket_address": {"address": address, "port_value": port}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }


def _add_prometheus(bootstrap: dict[str, Any], port: int, address: str, admin_port: int) -> None:
    """The static listener ``<address>_<port>`` that routes ``/stats/prometheus`` (and nothing
    else: the admin API can change Envoy's state) to a cluster whose endpoint is the admin
    port, as Istio's bootstrap does. It is in the bootstrap, not sent over xDS, so no
    configuration the control plane sends can take it away (Envoy opens it with its other
    listeners: once the first clusters arrived, or their initial fetch timed out, 15 s); and
    it is exempt from the global connection limit and the overload manager, so a scrape
    still works under overload."""
    statics = bootstrap["static_resources"]
    statics["clusters"].append(_static_cluster(PROMETHEUS_CLUSTER, "127.0.0.1", admin_port))
    route = {"match": {"prefix": PROMETHEUS_PATH}, "route": {"cluster": PROMETHEUS_CLUSTER}}
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "codec_type": "AUTO",
        "stat_prefix": "stats",
        "route_config": {
            "virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [route]}]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    statics.setdefault("listeners", []).append(
        {
            "name": f"{address}_{port}",
            "address": {"socket_address": {"address": address, "port_value": port}},
            "ignore_global_conn_limit": True,
            "bypass_overload_manager": True,
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": manager,
                        }
                    ]
                }
            ],
        }
    )


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def bootstrap_yaml(**kwargs: Any) -> str:
    return yaml.safe_dump(render_bootstrap(**kwargs), sort_keys=False)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, whatever the umask), and
    atomically: a bootstrap carries the proxy's bearer token, and Envoy or a watcher must
    never read half of it. An existing file is replaced, with the new mode."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
