"""The Gateway API release is pinned in one place (tests/cluster/gateway_api.sh); the README's
install command names the same one."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cluster import gateway_api

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_installs_the_gateway_api_release_the_tests_pin() -> None:
    pinned = gateway_api.version()
    assert re.fullmatch(r"v1\.6\.\d+", pinned), pinned
    urls = re.findall(
        r"kubernetes-sigs/gateway-api/releases/download/(v[0-9.]+)/standard-install\.yaml",
        README.read_text(),
    )
    assert urls and set(urls) == {pinned}, urls
