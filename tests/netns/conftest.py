"""The netns tier: pods as network namespaces with real iptables capture and real Envoy.

Installs Debian's iptables package when it is missing (idempotent), so a fresh clone runs this
tier with nothing preinstalled. Needs root for namespaces and iptables.
"""

from __future__ import annotations

import pytest

from controlplane.testing.netns import ensure_iptables, missing_prerequisites


@pytest.fixture(scope="session", autouse=True)
def netns_prerequisites() -> None:
    if missing_prerequisites() == "needs root":
        pytest.skip("network namespaces and iptables need root")  # unavoidable without root
    ensure_iptables()
    reason = missing_prerequisites()
    assert reason is None, reason
