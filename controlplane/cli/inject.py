"""`controlplane inject`: file mode's injector (as `istioctl kube-inject`): a Pod (or a
workload with a Pod template) in, the same object with the sidecar and the templates it
names applied out, exactly as the admission webhook would."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.cli import Commands


def add(commands: Commands) -> None:
    parser = command(commands, "inject", "apply the sidecar and injection templates to a Pod")
    parser.add_argument("-f", "--filename", type=Path, required=True, help="YAML ('-': stdin)")
    parser.add_argument(
        "--templates",
        type=Path,
        default=None,
        help="injection templates: a file in the istio-sidecar-injector ConfigMap's 'config' "
        "shape, or a directory of <name>.yaml template files",
    )
    parser.add_argument("--image", default=None, help="the control plane image (${image})")
    parser.add_argument(
        "--native-sidecars", choices=("on", "off"), default="on", help="Kubernetes >= 1.29"
    )
    parser.set_defaults(run=run)


def _inject_one(doc: Any, config: Any, templates: Any) -> Any:
    from controlplane.inject.templates import inject

    if not isinstance(doc, dict):
        return doc
    if doc.get("kind") == "Pod":
        return inject(doc, config, templates)
    template = (doc.get("spec") or {}).get("template")
    if isinstance(template, dict):  # Deployment, StatefulSet, DaemonSet, Job, ...
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        pod["metadata"] = {
            "namespace": (doc.get("metadata") or {}).get("namespace"),
            **(template.get("metadata") or {}),
        }
        injected = inject(pod, config, templates)
        doc["spec"]["template"] = {"metadata": injected["metadata"], "spec": injected["spec"]}
    return doc


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from controlplane.api.issues import InvalidResource
    from controlplane.inject.injector import InjectionConfig
    from controlplane.inject.templates import BUILT_IN, InjectionRefused, load_template_path

    templates = BUILT_IN
    if args.templates is not None:
        try:
            templates = load_template_path(args.templates)
        except (InvalidResource, OSError) as exc:
            issues = getattr(exc, "issues", None)
            for line in [str(i) for i in issues] if issues else [str(exc)]:
                print(f"controlplane inject: {line}", file=sys.stderr)
            return 2
    config = InjectionConfig(native_sidecar=args.native_sidecars == "on")
    if args.image:
        config = replace(config, image=args.image)
    text = sys.stdin.read() if str(args.filename) == "-" else args.filename.read_text()
    try:
        docs = [_inject_one(d, config, templates) for d in yaml.safe_load_all(text)]
    except InjectionRefused as exc:
        print(f"controlplane inject: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all([d for d in docs if d is not None], sort_keys=False))
    return 0
