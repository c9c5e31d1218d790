"""`controlplane crds`: write (or check) the CustomResourceDefinitions in ``crds/``."""

from __future__ import annotations

import sys
from pathlib import Path

from controlplane.api.crds import crd_files


def write_crds(output_dir: Path, check: bool = False) -> int:
    """Write every CRD into ``output_dir``; with ``check``, only report files that differ."""
    files = crd_files()
    stale = []
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = output_dir / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text)
    extra = sorted(p.name for p in output_dir.glob("*.yaml") if p.name not in files and not check)
    for name in extra:
        print(
            f"controlplane crds: {output_dir / name} is not generated; left alone", file=sys.stderr
        )
    if check and stale:
        print(
            "controlplane crds: out of date: " + ", ".join(stale) + " (run `make crds`)",
            file=sys.stderr,
        )
        return 1
    verb = "would write" if check else "wrote"
    print(f"{verb} {len(stale)} of {len(files)} CRDs in {output_dir}")
    return 0
