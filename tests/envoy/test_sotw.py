"""A real Envoy on State-of-the-World xDS (bootstrap ``api_type: GRPC``) follows every change."""

from __future__ import annotations

from controlplane.testing.mesh import LocalMesh
from tests.envoy.xds_walkthrough import walk_through


def test_envoy_on_sotw_xds_follows_routes_endpoints_removals_nacks_and_a_restart(
    mesh: LocalMesh,
) -> None:
    walk_through(mesh, delta=False)
