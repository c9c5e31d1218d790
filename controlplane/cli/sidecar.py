"""`controlplane sidecar`: the injected proxy's entry point (writes the bootstrap, execs Envoy).

The injected ``istio-proxy`` container runs the project image with this command. The Pod's
identity comes from the downward API (environment: POD_NAME, POD_NAMESPACE, INSTANCE_IP,
SERVICE_ACCOUNT; a file with the Pod's labels), the credential from the projected
service-account token. The token is sent as ``authorization: Bearer`` on the ADS stream and
its path is in the node metadata as ``SA_TOKEN_PATH``; the control plane may verify it with
a TokenReview. Envoy reads the token once, at start: the projected token lives 12 hours by
default and a restarted sidecar reads the renewed one.
"""

from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from controlplane.cli.bootstrap import render_bootstrap


def parse_downward_labels(text: str) -> dict[str, str]:
    """The downward API's ``key="value"`` lines (values quoted and escaped) -> dict."""
    labels: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = str(ast.literal_eval(value))
            except (ValueError, SyntaxError):
                value = value[1:-1]
        labels[key.strip()] = value
    return labels


def sidecar_bootstrap(
    env: Mapping[str, str],
    labels: Mapping[str, str],
    *,
    xds_address: str,
    xds_port: int,
    token: str | None,
    token_path: str | None,
    admin_port: int = 15000,
) -> dict[str, Any]:
    """The bootstrap for the Pod described by ``env`` (pure)."""
    pod = env.get("POD_NAME", "")
    namespace = env.get("POD_NAMESPACE", "default")
    ip = env.get("INSTANCE_IP", "")
    extra = {"SA_TOKEN_PATH": token_path} if token_path else {}
    return render_bootstrap(
        node_id=f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
        namespace=namespace,
        labels=dict(labels),
        service_account=env.get("SERVICE_ACCOUNT") or "default",
        xds_port=xds_port,
        xds_address=xds_address,
        admin_port=admin_port,
        workload_name=pod,
        instance_ips=ip,
        extra_metadata=extra,
        xds_token=token,
    )


def run_sidecar(
    *,
    xds_address: str,
    xds_port: int,
    token_path: Path,
    labels_path: Path,
    bootstrap_path: Path,
    admin_port: int = 15000,
    exec_envoy: bool = True,
) -> int:
    token = token_path.read_text().strip() if token_path.is_file() else None
    labels = parse_downward_labels(labels_path.read_text()) if labels_path.is_file() else {}
    bootstrap = sidecar_bootstrap(
        os.environ,
        labels,
        xds_address=xds_address,
        xds_port=xds_port,
        token=token,
        token_path=str(token_path),
        admin_port=admin_port,
    )
    bootstrap_path.parent.mkdir(parents=True, exist_ok=True)
    bootstrap_path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    if not exec_envoy:
        return 0
    envoy = shutil.which("envoy") or "envoy"
    os.execv(envoy, [envoy, "-c", str(bootstrap_path), "--concurrency", "2", "--drain-time-s", "5"])
    return 0  # not reached
