"""Sidecar injection as a pure function: a Pod in, a JSON patch (RFC 6902) out.

What a Pod gets (Istio's names, so tools that know Istio find their way):

* ``istio-init``: an init container, run as root with NET_ADMIN/NET_RAW only, that installs
  the iptables redirect with this project's own command (``controlplane redirect``): inbound
  to 15006, outbound to 15001, the proxy's UID (1337) excluded so Envoy's own traffic is not
  captured again.
* ``istio-proxy``: the Envoy sidecar. It runs the project image's ``controlplane sidecar``
  entry, which writes the bootstrap (node id, namespace, labels, service account, the
  control plane's address, and the service-account token as the xDS credential) and runs
  Envoy, hot-restarting it when the token is renewed. On clusters with native sidecars (Kubernetes >= 1.29) it is an init container with
  ``restartPolicy: Always`` (it starts before, and stops after, the application); otherwise
  a regular container.
* volumes: a projected service-account token with the mesh's audience (``istio-ca`` by
  default) mounted only into the proxy, the Pod's labels through the downward API, and a
  memory-backed directory for the bootstrap.
* metrics as Istio exposes them: the proxy's container port ``http-envoy-prom`` (15090,
  Envoy's statistics in Prometheus text) and the ``prometheus.io/*`` annotations pointed at
  the merged endpoint (15020), the application's own moved into the proxy's environment
  (``controlplane.inject.prometheus``).
* ``sidecar.istio.io/status`` (what was injected) and the ``security.istio.io/tlsMode: istio``
  label, which the service registry reads.

Idempotent: a Pod that already carries the status annotation or an ``istio-proxy``
container gets an empty patch, so injecting twice changes nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.inject.bootstrap import ENVOY_PROMETHEUS_PORT, STATUS_PORT
from controlplane.inject.prometheus import SCRAPE_ENV, merge_metrics

STATUS_ANNOTATION = "sidecar.istio.io/status"
INJECT_ANNOTATION = "sidecar.istio.io/inject"
NAMESPACE_LABEL = "istio-injection"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
PROXY_NAME = "istio-proxy"
INIT_NAME = "istio-init"
TOKEN_VOLUME = "istio-token"
PODINFO_VOLUME = "istio-podinfo"
ENVOY_VOLUME = "istio-envoy"
TOKEN_DIR = "/var/run/secrets/tokens"
TOKEN_FILE = "istio-token"
PODINFO_DIR = "/etc/istio/pod"
ENVOY_DIR = "/etc/istio/proxy"


@dataclass(frozen=True)
class InjectionConfig:
    """Everything injection needs to know that is not in the Pod."""

    image: str = "ghcr.io/controlplane/controlplane:0.1.0"
    xds_address: str = "controlplane.istio-system.svc"
    xds_port: int = 15010
    proxy_uid: int = 1337
    inbound_capture_port: int = 15006
    outbound_capture_port: int = 15001
    exclude_inbound_ports: tuple[int, ...] = (15020, 15021, 15090)
    exclude_outbound_ports: tuple[int, ...] = ()
    token_audience: str = "istio-ca"
    token_seconds: int = 43200
    native_sidecar: bool = True
    status_port: int = STATUS_PORT
    prometheus_merge: bool = True  # the mesh's enablePrometheusMerge (Istio's default: on)
    proxy_resources: Mapping[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "10m", "memory": "40Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        }
    )


def wants_injection(pod: Mapping[str, Any]) -> bool:
    """False when the Pod opts out (``sidecar.istio.io/inject: "false"``, annotation or label).

    Whether the namespace is labelled ``istio-injection=enabled`` is decided by the
    webhook's namespaceSelector before the Pod reaches us, as in Istio.
    """
    meta = pod.get("metadata") or {}
    for source in (meta.get("annotations") or {}, meta.get("labels") or {}):
        if str(source.get(INJECT_ANNOTATION, "")).lower() == "false":
            return False
    return True


def already_injected(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    if STATUS_ANNOTATION in (meta.get("annotations") or {}):
        return True
    spec = pod.get("spec") or {}
    names = {c.get("name") for c in (spec.get("containers") or [])}
    names |= {c.get("name") for c in (spec.get("initContainers") or [])}
    return PROXY_NAME in names


def _ports(ports: tuple[int, ...]) -> str:
    return ",".join(str(p) for p in ports)


def init_container(config: InjectionConfig) -> dict[str, Any]:
    """The container that installs the traffic redirect (``controlplane redirect``)."""
    command = [
        "controlplane",
        "redirect",
        "--proxy-uid",
        str(config.proxy_uid),
        "--inbound-capture-port",
        str(config.inbound_capture_port),
        "--outbound-capture-port",
        str(config.outbound_capture_port),
    ]
    if config.exclude_inbound_ports:
        command += ["--exclude-inbound-ports", _ports(config.exclude_inbound_ports)]
    if config.exclude_outbound_ports:
        command += ["--exclude-outbound-ports", _ports(config.exclude_outbound_ports)]
    return {
        "name": INIT_NAME,
        "image": config.image,
        "command": command,
        "resources": {
            "requests": {"cpu": "10m", "memory": "10Mi"},
            "limits": {"cpu": "100m", "memory": "50Mi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            # iptables takes its lock in /run/xtables.lock: the root filesystem stays writable
            # for the few milliseconds this container runs (as in Istio's istio-init).
            "readOnlyRootFilesystem": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def proxy_container(config: InjectionConfig, scrape_env: str | None = None) -> dict[str, Any]:
    """The Envoy sidecar: ``controlplane sidecar`` writes the bootstrap and runs Envoy (and
    serves the merged metrics; ``scrape_env`` is where the application's metrics are)."""
    container: dict[str, Any] = {
        "name": PROXY_NAME,
        "image": config.image,
        "command": [
            "controlplane",
            "sidecar",
            "--xds-address",
            config.xds_address,
            "--xds-port",
            str(config.xds_port),
            "--token-path",
            f"{TOKEN_DIR}/{TOKEN_FILE}",
            "--labels-path",
            f"{PODINFO_DIR}/labels",
            "--bootstrap-path",
            f"{ENVOY_DIR}/envoy.yaml",
            "--status-port",
            str(config.status_port),
        ],
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("INSTANCE_IP", "status.podIP"),
            _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            *([{"name": SCRAPE_ENV, "value": scrape_env}] if scrape_env else []),
        ],
        "ports": [
            {"containerPort": ENVOY_PROMETHEUS_PORT, "name": "http-envoy-prom", "protocol": "TCP"}
        ],
        "resources": copy.deepcopy(dict(config.proxy_resources)),
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True},
            {"name": ENVOY_VOLUME, "mountPath": ENVOY_DIR},
        ],
        "securityContext": {
            "runAsUser": config.proxy_uid,
            "runAsGroup": config.proxy_uid,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if config.native_sidecar:
        container["restartPolicy"] = "Always"
    return container


def volumes(config: InjectionConfig) -> list[dict[str, Any]]:
    return [
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": config.token_audience,
                            "expirationSeconds": config.token_seconds,
                            "path": TOKEN_FILE,
                        }
                    }
                ]
            },
        },
        {
            "name": PODINFO_VOLUME,
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                ]
            },
        },
        {"name": ENVOY_VOLUME, "emptyDir": {"medium": "Memory"}},
    ]


def _escape(key: str) -> str:
    """A map key as a JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _append(ops: list[dict[str, Any]], parent: Mapping[str, Any], path: str, name: str, items):
    if not items:
        return
    if parent.get(name):
        ops += [{"op": "add", "path": f"{path}/{name}/-", "value": item} for item in items]
    else:
        ops.append({"op": "add", "path": f"{path}/{name}", "value": list(items)})


def _put(ops: list[dict[str, Any]], meta: Mapping[str, Any], name: str, key: str, value: str):
    if meta.get(name):
        ops.append({"op": "add", "path": f"/metadata/{name}/{_escape(key)}", "value": value})
    else:
        ops.append({"op": "add", "path": f"/metadata/{name}", "value": {key: value}})


def _replace_annotations(old: Mapping[str, Any], new: Mapping[str, str]) -> list[dict[str, Any]]:
    """Ops turning annotations ``old`` into ``new`` (the map exists by then: the status
    annotation was added first)."""
    ops: list[dict[str, Any]] = [
        {"op": "remove", "path": f"/metadata/annotations/{_escape(key)}"}
        for key in old
        if key not in new
    ]
    ops += [
        {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}
        for key, value in new.items()
        if old.get(key) != value
    ]
    return ops


def injection_patch(pod: Mapping[str, Any], config: InjectionConfig) -> list[dict[str, Any]]:
    """The JSON patch that injects the sidecar into ``pod``; [] if it opts out or has one.

    Raises ScrapeConfigurationError (naming the annotation) for ``prometheus.io`` annotations
    that cannot be merged, as istiod refuses to inject such a Pod."""
    if not wants_injection(pod) or already_injected(pod):
        return []
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    merge = merge_metrics(
        {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        status_port=config.status_port,
        mesh_default=config.prometheus_merge,
    )
    proxy = proxy_container(config, merge.scrape_env if merge else None)
    new_volumes = volumes(config)
    existing_volumes = {v.get("name") for v in spec.get("volumes") or []}
    new_volumes = [v for v in new_volumes if v["name"] not in existing_volumes]
    init = [init_container(config)] + ([proxy] if config.native_sidecar else [])
    ops: list[dict[str, Any]] = []
    _append(ops, spec, "/spec", "initContainers", init)
    if not config.native_sidecar:
        _append(ops, spec, "/spec", "containers", [proxy])
    _append(ops, spec, "/spec", "volumes", new_volumes)
    status = {
        "initContainers": [c["name"] for c in init],
        "containers": [] if config.native_sidecar else [PROXY_NAME],
        "volumes": [v["name"] for v in new_volumes],
        "native": config.native_sidecar,
    }
    annotations = dict(meta.get("annotations") or {})
    _put(ops, meta, "annotations", STATUS_ANNOTATION, json.dumps(status, sort_keys=True))
    if merge is not None:
        ops += _replace_annotations(annotations, merge.annotations)
    apps = [c.get("name") for c in spec.get("containers") or [] if c.get("name")]
    if apps and "kubectl.kubernetes.io/default-container" not in annotations:
        # Keep `kubectl logs/exec` pointing at the application, not at the proxy.
        ops.append(
            {
                "op": "add",
                "path": "/metadata/annotations/kubectl.kubernetes.io~1default-container",
                "value": apps[0],
            }
        )
    _put(ops, meta, "labels", TLS_MODE_LABEL, "istio")
    return ops
