"""`controlplane describe pod|service NAME`: which Istio resources apply to a workload or a
service, which were refused and why, its routes, subsets, mTLS mode and identity (like
``istioctl x describe``); ``controlplane.analyze.describe`` does the work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.analyze.loading import Loaded
    from controlplane.cli import Commands


def add_mesh_source(parser: argparse.ArgumentParser) -> None:
    """Where the mesh is read from: a directory (offline, as file mode and analyze read it)
    or a cluster (listed once with the kube client, read only)."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-d",
        "--dir",
        type=Path,
        action="append",
        metavar="DIR|FILE",
        help="the mesh's YAML (repeatable), read offline as file mode reads it",
    )
    where.add_argument(
        "--cluster",
        action="store_true",
        help="read the mesh from the cluster (--kubeconfig, in-cluster, or ~/.kube/config)",
    )
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--mesh-config", type=Path, default=None, metavar="PATH")


def load_mesh(args: argparse.Namespace) -> Loaded:
    from controlplane.analyze.loading import load_cluster, load_paths

    if args.cluster:
        from controlplane.sources.kube.cluster import api_client, read_mesh_configmap

        client = api_client(args.kubeconfig)
        return load_cluster(client, read_mesh_configmap(client))
    return load_paths(args.dir, args.namespace, args.mesh_config)


def add(commands: Commands) -> None:
    parser = command(
        commands,
        "describe",
        "which VirtualServices, DestinationRules, policies, Gateways and Sidecars apply to a "
        "pod or service, which were refused and why (like istioctl x describe)",
    )
    parser.add_argument("what", choices=("pod", "service", "svc"))
    parser.add_argument("name", metavar="NAME", help="NAME or NAME.NAMESPACE")
    parser.add_argument("-n", "--namespace", default="default")
    add_mesh_source(parser)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controlplane.analyze.describe import (
        NotFound,
        describe_pod,
        describe_service,
        render_text,
    )

    name, _, namespace = args.name.partition(".")
    namespace = namespace or args.namespace
    loaded = load_mesh(args)
    try:
        described: dict[str, Any] = (
            describe_pod(loaded, name, namespace)
            if args.what == "pod"
            else describe_service(loaded, name, namespace)
        )
    except NotFound as exc:
        print(f"controlplane describe: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(described, indent=2))
    else:
        sys.stdout.write(render_text(described))
    return 0
