"""`controlplane gateway`: a gateway Pod's entry point (writes the bootstrap, runs Envoy).

Like `controlplane sidecar`, but the proxy is Envoy in router mode (node id
``router~<IP>~<pod>.<ns>~<ns>.svc.cluster.local``, as istio-proxy's ``router`` command names
it): it intercepts nothing and serves the listeners of the Gateways whose ``selector``
matches its Pod's labels (manifests/components/ingress-gateway runs it). The Pod's identity
comes from the downward API (POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT and the
labels file), its credential from the projected service-account token, which the supervisor
follows by hot-restarting Envoy (see ``cli/sidecar.py``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from controlplane.cli import command
from controlplane.cli.sidecar import add_proxy_arguments, run_proxy

if TYPE_CHECKING:
    from controlplane.cli import Commands

ROUTER = "router"


def add(commands: Commands) -> None:
    parser = command(commands, "gateway", "(in a gateway Pod) write the bootstrap, run Envoy")
    add_proxy_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_proxy(args, ROUTER)
