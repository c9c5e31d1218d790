"""`controlplane wait`: until a resource (or every resource of a file) is Programmed.

Like ``istioctl x wait``, read from what the control plane itself decides (the Programmed
verdict, ``status/programmed.py``): in file mode from the debug port
(``/debug/programmed``), against a cluster from the resource's ``Programmed`` condition (the
leader writes it; ``kubectl wait --for=condition=Programmed`` reads the same). Returns as
soon as every named resource is Programmed at its current generation on all (or
``--for-share`` of) the proxies it affects; fails at once, with the reason, when a proxy
NACKed what a resource produced or the resource was refused, since waiting longer would not
help; fails when ``--timeout`` passes.

A file just written may not have been read yet: in file mode a resource counts only once the
control plane has taken a change newer than the file (or the file is older than
``_SETTLED`` seconds, so that any change in it would have been seen).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from controlplane.cli import command
from controlplane.cli.proxy_status import ControlPlaneUnreachable, fetch

if TYPE_CHECKING:
    from controlplane.cli import Commands

_SETTLED = 2.0  # a file older than this has been read by a running control plane
_FAILED = frozenset({"Rejected", "NotAccepted", "NotReconciled"})
_COUNTS = re.compile(r"([\d,]+) of ([\d,]+) proxies")


@dataclass(frozen=True)
class Target:
    kind: str
    namespace: str
    name: str
    written_at: float = 0.0  # the file's mtime (0: named on the command line)

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Reading:
    """One look at one resource's Programmed verdict."""

    programmed: bool
    reason: str
    message: str
    generation: int | None
    affected: int
    pending: int
    fresh: bool = True  # the verdict is about what the file holds (file mode)


class WaitFailed(Exception):
    pass


def targets_of(args: argparse.Namespace) -> list[Target]:
    out = []
    for ref in args.resources:
        kind, _, name = ref.partition("/")
        if not name:
            raise WaitFailed(f"{ref!r}: name resources as KIND/NAME")
        out.append(Target(kind, args.namespace, name))
    for file in args.filename or []:
        path = Path(file)
        written_at = path.stat().st_mtime
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or not doc.get("kind"):
                continue
            meta = doc.get("metadata") or {}
            namespace = meta.get("namespace") or args.namespace
            out.append(Target(str(doc["kind"]), namespace, str(meta.get("name")), written_at))
    if not out:
        raise WaitFailed("nothing to wait for: name KIND/NAME or -f FILE")
    return out


def from_debug(address: str) -> Callable[[Target], Reading | None]:
    def read(target: Target) -> Reading | None:
        query = urllib.parse.urlencode({"resource": str(target)})
        try:
            data: dict[str, Any] = fetch(address, f"/debug/programmed?{query}")
        except ControlPlaneUnreachable as exc:
            if "no resource" in str(exc):
                return None
            raise
        seen_at = float(data.get("seen_at") or 0.0)
        fresh = (
            not target.written_at
            or seen_at >= target.written_at - 0.05
            or time.time() - target.written_at > _SETTLED
        )
        return Reading(
            bool(data["programmed"]),
            str(data["reason"]),
            str(data["message"]),
            data.get("generation"),
            int(data.get("affected") or 0),
            int(data.get("pending") or 0),
            fresh,
        )

    return read


def from_cluster(kubeconfig: str | None) -> Callable[[Target], Reading | None]:
    from kubernetes import client, config

    from controlplane.api.crds import KINDS

    config.load_kube_config(config_file=kubeconfig)
    custom = client.CustomObjectsApi()
    plurals = {k.kind: (k.group, k.versions[0], k.plural) for k in KINDS}

    def read(target: Target) -> Reading | None:
        if target.kind not in plurals:
            raise WaitFailed(
                f"{target}: {target.kind} is not an Istio kind this control plane reads"
            )
        group, version, plural = plurals[target.kind]
        try:
            obj = custom.get_namespaced_custom_object(
                group, version, target.namespace, plural, target.name
            )
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        generation = (obj.get("metadata") or {}).get("generation")
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") != "Programmed":
                continue
            message = str(cond.get("message") or "")
            counts = _COUNTS.search(message)
            affected = pending = 0
            if counts:
                first, total = (int(g.replace(",", "")) for g in counts.groups())
                affected = total
                pending = first if cond.get("status") != "True" else 0
            return Reading(
                cond.get("status") == "True",
                str(cond.get("reason") or ""),
                message,
                cond.get("observedGeneration"),
                affected,
                pending,
                fresh=cond.get("observedGeneration") == generation,
            )
        return Reading(False, "Unknown", "no Programmed condition yet", None, 0, 0, fresh=False)

    return read


def done(reading: Reading, share: float) -> bool:
    if not reading.fresh:
        return False
    if reading.programmed:
        return True
    if reading.reason != "Pending" or not reading.affected:
        return False
    return (reading.affected - reading.pending) / reading.affected >= share


def wait(
    targets: list[Target],
    read: Callable[[Target], Reading | None],
    share: float,
    timeout: float,
    poll: float = 0.1,
) -> dict[Target, Reading]:
    """Poll until every target is done; raise WaitFailed on a NACK, a refusal or timeout."""
    deadline = time.monotonic() + timeout
    left = list(targets)
    seen: dict[Target, Reading] = {}
    while True:
        for target in list(left):
            reading = read(target)
            if reading is None:
                continue
            seen[target] = reading
            if reading.reason in _FAILED:
                raise WaitFailed(f"{target}: {reading.reason}: {reading.message}")
            if done(reading, share):
                left.remove(target)
        if not left:
            return seen
        if time.monotonic() >= deadline:
            lines = []
            for target in left:
                r = seen.get(target)
                lines.append(f"{target}: {r.reason}: {r.message}" if r else f"{target}: not found")
            raise WaitFailed(f"timed out after {timeout:g}s: " + "; ".join(lines))
        time.sleep(poll)


def add(commands: Commands) -> None:
    parser = command(
        commands,
        "wait",
        "wait until resources are Programmed (every affected proxy ACKed their generation)",
    )
    parser.add_argument("resources", nargs="*", metavar="KIND/NAME")
    parser.add_argument("-f", "--filename", action="append", help="every resource of a file")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument(
        "--for-share",
        type=float,
        default=1.0,
        help="done when this share of the affected proxies has ACKed",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    parser.add_argument(
        "--debug-address",
        default="127.0.0.1:15014",
        help="the control plane's debug port (file mode)",
    )
    parser.add_argument(
        "--kube",
        action="store_true",
        help="read the Programmed condition from the cluster instead of the debug port",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        targets = targets_of(args)
        read = from_cluster(args.kubeconfig) if args.kube else from_debug(args.debug_address)
        readings = wait(targets, read, args.for_share, args.timeout)
    except (WaitFailed, ControlPlaneUnreachable, OSError) as exc:
        elapsed = time.monotonic() - started
        print(f"controlplane wait: {exc} (after {elapsed:.2f}s)", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    for target, reading in readings.items():
        print(f"{target} programmed (generation {reading.generation}): {reading.message}")
    print(f"done in {elapsed:.2f}s")
    return 0
