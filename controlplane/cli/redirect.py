"""`controlplane redirect`: install an injected pod's traffic-capture rules (the init
container's job), or print them with ``--dry-run``."""

from __future__ import annotations

import shutil
import subprocess
import sys

from controlplane.inject.iptables import CaptureConfig, restore_text


def find_restore() -> str | None:
    """``iptables-restore`` from PATH or the usual sbin directories."""
    for candidate in ("iptables-restore", "/usr/sbin/iptables-restore", "/sbin/iptables-restore"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def run_redirect(config: CaptureConfig, dry_run: bool) -> int:
    text = restore_text(config)
    if dry_run:
        sys.stdout.write(text)
        return 0
    restore = find_restore()
    if restore is None:
        print(
            "controlplane redirect: iptables-restore not found (install the iptables package)",
            file=sys.stderr,
        )
        return 1
    result = subprocess.run([restore], input=text, text=True, capture_output=True)
    if result.returncode != 0:
        print(
            f"controlplane redirect: iptables-restore failed ({result.returncode}): "
            f"{result.stderr.strip()}",
            file=sys.stderr,
        )
        return 1
    return 0
