"""The Kubernetes Gateway API release the tests use: its CRDs and its conformance manifests.

Both come from Go modules (``sigs.k8s.io/gateway-api`` and
``sigs.k8s.io/gateway-api/conformance``) that ``gateway_api.sh`` fetches through the Go
module proxy into the Go module cache; the version is pinned in that script only.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("gateway_api.sh")


def _run(what: str) -> str:
    proc = subprocess.run(
        ["bash", str(SCRIPT), what], capture_output=True, text=True, timeout=600, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{SCRIPT} {what} failed ({proc.returncode}): {proc.stderr.strip()}")
    return lines[-1].strip()


@functools.cache
def version() -> str:
    """The pinned release, e.g. ``v1.6.0``."""
    return _run("version")


@functools.cache
def crd_dir() -> Path:
    """The standard-channel CRDs of the pinned release (what its standard-install.yaml holds)."""
    return Path(_run("crds"))


@functools.cache
def experimental_crd_dir() -> Path:
    """The experimental-channel CRDs of the pinned release (TLSRoute also served as v1alpha2
    and v1alpha3, TCPRoute as v1alpha2)."""
    return Path(_run("experimental-crds"))


@functools.cache
def conformance_dir() -> Path:
    """The conformance module of the pinned release (``tests/*.yaml``, ``base/manifests.yaml``)."""
    return Path(_run("conformance"))
