"""``controlplane serve`` with an outbound traffic policy in the mesh config, for tests that
run the control plane as a process (``ControlPlaneProcess(..., module=__name__)``):

    python -m tests.support.serve_with_mesh serve --outbound-traffic-policy REGISTRY_ONLY ...

The mesh config is put into the store before the directory is read, as a cluster's or a
``mesh.yaml``'s would be. (Where the file source reads the mesh config itself, a test can
write that file instead.)
"""

from __future__ import annotations

import sys
from typing import Any

from controlplane.api.base import ObjectMeta
from controlplane.api.mesh import MESH_CONFIG_KEY, MeshConfig, MeshConfigSpec, OutboundTrafficPolicy
from controlplane.cli.main import main
from controlplane.sources import files
from controlplane.store import Store, Submission


def _with_mesh(mode: str) -> type[files.DirectorySource]:
    mesh = MeshConfig(
        metadata=ObjectMeta(name=MESH_CONFIG_KEY.name, namespace=MESH_CONFIG_KEY.namespace),
        spec=MeshConfigSpec(outbound_traffic_policy=OutboundTrafficPolicy(mode=mode)),  # type: ignore[arg-type]
    )

    class DirectorySourceWithMesh(files.DirectorySource):
        async def open(self, store: Store) -> None:
            store.apply(upserts=[Submission(mesh, ())])
            await super().open(store)

    return DirectorySourceWithMesh


def run(argv: list[str]) -> int:
    args: list[Any] = list(argv)
    if "--outbound-traffic-policy" in args:
        at = args.index("--outbound-traffic-policy")
        mode = args[at + 1]
        del args[at : at + 2]
        # `serve` imports the source class when it runs: it finds this one.
        files.DirectorySource = _with_mesh(mode)  # type: ignore[misc]
    return main(args)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
