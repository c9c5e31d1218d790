"""The debug page (/debug/ui): read-only, behind the debug port's access rules, and live: a
real headless Chromium watches a canary move on it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from controlplane.compile.resources import ROUTE
from controlplane.testing.ads_client import AdsConnection
from controlplane.testing.controlplane_process import ControlPlaneProcess
from controlplane.testing.ports import free_port
from controlplane.web.page import MAX_PROXY_ROWS, render_proxies
from tests.web.conftest import headless_chromium, serving_page, sidecars
from tests.xds.mesh import MESH, canary, local_node
from tests.xds.test_debug_access import get, host_address
from tests.xds.test_sotw import connect_all

HOST = "reviews.default.svc.cluster.local"
# Envoy's text comes from the proxy: the page must show it as text, never as markup.
BROKEN = 'local_15001: route: ["weighted_clusters"] rejected by this proxy (test) <img src=x>'


async def _synced(  # type: ignore[no-untyped-def]
    cp, count: int, within: float = 10.0, only: str = "", version_of: str = ""
) -> None:
    """``count`` proxies connected, every one (or those whose id holds ``only``) SYNCED or
    NACKED on routes, at the routes version sent to ``version_of`` if given."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        proxies = cp.debug.delivery.describe()
        rds = {str(p["node_id"]): p["types"].get("rds", {}) for p in proxies}
        states = [s for node, s in rds.items() if only in node]
        wanted = {s.get("sent_version") for node, s in rds.items() if version_of in node}
        if (
            len(proxies) == count
            and states
            and all(s.get("status") in ("SYNCED", "NACKED") for s in states)
            and (not version_of or all(s.get("sent_version") in wanted for s in states))
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"proxies not in sync: {cp.debug.delivery.describe()}")


async def test_page_answers_loopback_or_the_debug_token_only() -> None:
    address = host_address()
    async with serving_page("0.0.0.0", debug_token="s3cret-token") as cp:
        cp.apply(MESH + "---\n" + canary(90, 10))
        port = cp.debug.port
        remote = f"http://{address}:{port}"

        def check() -> None:
            for path in ("/debug/ui", "/debug/ui/live"):
                status, body = get(remote + path)
                assert status == 403, (path, body)
                assert HOST not in body
                assert get(remote + path, token="wrong")[0] == 403
                status, body = get(remote + path, token="s3cret-token")
                assert status == 200 and HOST in body
                status, body = get(f"http://127.0.0.1:{port}{path}")
                assert status == 200 and HOST in body

        await asyncio.to_thread(check)


async def test_page_shows_proxies_resources_and_the_routing_of_a_host() -> None:
    """Server-rendered, no script needed: the weights of the VirtualService, the subsets and
    the pods they select, which proxies hold which weights, every resource's conditions, and
    a NACK with Envoy's message in the proxies table."""

    def nack_weighted(response) -> str | None:  # type: ignore[no-untyped-def]
        return (
            BROKEN if response.type_url == ROUTE and b"v2" in response.SerializeToString() else None
        )

    async with serving_page() as cp:
        cp.apply(MESH + "---\n" + canary(90, 10))
        async with (
            sidecars(cp, "client-a", "client-b"),
            sidecars(cp, "client-c", nack_when=nack_weighted),
        ):
            await _synced(cp, 3)
            url = f"http://127.0.0.1:{cp.debug.port}/debug/ui?host={urllib.parse.quote(HOST)}"
            status, page = await asyncio.to_thread(get, url)
    assert status == 200
    assert 'data-subset="v1" data-weight="90"' in page
    assert 'data-subset="v2" data-weight="10"' in page
    # The subsets, the pods their labels select.
    assert 'class="workloads" data-subset="v1">reviews-v1<' in page
    assert 'class="workloads" data-subset="v2">reviews-v2<' in page
    # Two proxies ACKed the 90/10 routes; one rejected them.
    assert 'data-weights="v1=90,v2=10" data-status="SYNCED" data-count="2"' in page
    assert 'data-weights="v1=90,v2=10" data-status="NACKED" data-count="1"' in page
    node_c = local_node("client-c").id
    row = page.split(f'data-node="{node_c}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-type="rds" data-status="NACKED"' in row
    assert "rejected by this proxy (test) &lt;img src=x&gt;" in row
    assert "<img" not in page
    # Every resource with the conditions of its status.
    assert 'data-key="VirtualService default/reviews"' in page
    vs_row = page.split('data-key="VirtualService default/reviews"', 1)[1].split("</tr>", 1)[0]
    assert 'data-type="Accepted" data-status="True"' in vs_row
    assert 'data-type="Reconciled" data-status="True"' in vs_row
    assert "<script src" not in page and "<link" not in page  # no external assets


async def test_page_shows_a_proxy_that_has_not_acked_yet_as_stale() -> None:
    """A proxy sent the new weights that has not ACKed them: STALE in its row and in the
    picture, apart from the one that ACKed."""
    async with serving_page() as cp:
        cp.apply(MESH + "---\n" + canary(90, 10))
        async with AdsConnection(cp.target) as conn, sidecars(cp, "client-a"):
            await connect_all(cp, conn, "client-slow")
            await _synced(cp, 2)
            cp.apply(canary(50, 50))
            rds = await conn.recv()  # read, never ACKed
            assert rds.type_url == ROUTE
            await _synced(cp, 2, only="client-a", version_of="client-slow")
            status, page = await asyncio.to_thread(
                get, f"http://127.0.0.1:{cp.debug.port}/debug/ui?host={HOST}"
            )
    assert status == 200
    assert 'data-weights="v1=50,v2=50" data-status="SYNCED" data-count="1"' in page
    assert 'data-weights="v1=50,v2=50" data-status="STALE" data-count="1"' in page
    slow = local_node("client-slow").id
    row = page.split(f'data-node="{slow}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-type="rds" data-status="STALE"' in row
    assert 'data-type="cds" data-status="SYNCED"' in row


async def test_page_loads_nothing_from_elsewhere_and_is_not_framed() -> None:
    async with serving_page() as cp:
        cp.apply(MESH)
        url = f"http://127.0.0.1:{cp.debug.port}/debug/ui"
        with await asyncio.to_thread(urllib.request.urlopen, url, timeout=5) as response:
            policy = response.headers["Content-Security-Policy"]
            frame = response.headers["X-Frame-Options"]
            page = response.read().decode()
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert frame == "DENY"
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert page.count("<script") == 1 and f'<script nonce="{nonce}">' in page
    assert "http://" not in page.split("<svg", 1)[0] and " on" + "change=" not in page


async def test_live_sections_are_sent_only_when_they_changed() -> None:
    async with serving_page() as cp:
        cp.apply(MESH + "---\n" + canary(90, 10))
        live = f"http://127.0.0.1:{cp.debug.port}/debug/ui/live?host={HOST}"
        first = json.loads((await asyncio.to_thread(get, live))[1])
        assert 'data-weight="10"' in first["html"]
        same = json.loads((await asyncio.to_thread(get, f"{live}&have={first['digest']}"))[1])
        assert same["digest"] == first["digest"] and "html" not in same
        cp.apply(canary(70, 30))
        moved = json.loads((await asyncio.to_thread(get, f"{live}&have={first['digest']}"))[1])
    assert moved["digest"] != first["digest"] and 'data-weight="30"' in moved["html"]


async def test_page_shows_a_refused_resource_with_its_reason() -> None:
    async with serving_page() as cp:
        cp.apply(MESH + "---\n" + canary(90, 10).replace("subset: v2", "subset: v3"))
        status, page = await asyncio.to_thread(get, f"http://127.0.0.1:{cp.debug.port}/debug/ui")
    assert status == 200
    row = page.split('data-key="VirtualService default/reviews"', 1)[1].split("</tr>", 1)[0]
    assert 'data-type="Reconciled" data-status="False"' in row
    assert "v3" in row


WEIGHTS = """(() => {
  const w = {};
  document.querySelectorAll('#routing text.weight').forEach(t => {
    w[t.getAttribute('data-subset')] = Number(t.getAttribute('data-weight')); });
  const holds = [...document.querySelectorAll('#routing g.holds')].map(g =>
    [g.getAttribute('data-weights'), g.getAttribute('data-status'),
     Number(g.getAttribute('data-count'))]);
  return {weights: w, holds: holds};
})()"""


@pytest.mark.browser
async def test_headless_chromium_sees_a_canary_move_within_a_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moving: list[bool] = []

    def nack_the_move(response) -> str | None:  # type: ignore[no-untyped-def]
        return BROKEN if moving and response.type_url == ROUTE else None

    async with serving_page() as cp:
        cp.apply(MESH + "---\n" + canary(90, 10))
        async with (
            sidecars(cp, "client-a", "client-b"),
            sidecars(cp, "client-c", nack_when=nack_the_move),
            headless_chromium() as browser,
        ):
            await _synced(cp, 3)
            url = f"http://127.0.0.1:{cp.debug.port}/debug/ui?host={urllib.parse.quote(HOST)}"
            await browser.call("Page.navigate", url=url)
            seen = None
            for _ in range(100):
                seen = await browser.evaluate(WEIGHTS)
                if seen and seen["holds"]:
                    break
                await asyncio.sleep(0.05)
            assert seen == {
                "weights": {"v1": 90, "v2": 10},
                "holds": [["v1=90,v2=10", "SYNCED", 3]],
            }
            await browser.screenshot(tmp_path / "debug-page-before.png")

            # The canary moves: the page shows it, the two proxies that ACKed it and the one
            # that rejected it, within 1 s.
            moving.append(True)
            cp.apply(canary(50, 50))
            moved_at = time.monotonic()
            while True:
                seen = await browser.evaluate(WEIGHTS)
                elapsed = time.monotonic() - moved_at
                if seen == {
                    "weights": {"v1": 50, "v2": 50},
                    "holds": [["v1=50,v2=50", "NACKED", 1], ["v1=50,v2=50", "SYNCED", 2]],
                }:
                    break
                assert elapsed < 1.0, f"the page still shows {seen} after {elapsed:.2f} s"
                await asyncio.sleep(0.02)
            shot = await browser.screenshot(tmp_path / "debug-page.png")

            # Choosing another host (the script under the page's Content-Security-Policy).
            ratings = "ratings.default.svc.cluster.local"
            await browser.evaluate(
                f"(() => {{ const s = document.getElementById('host'); s.value = '{ratings}';"
                " s.dispatchEvent(new Event('change')); return 1; })()"
            )
            shown = None
            for _ in range(100):
                await asyncio.sleep(0.05)
                shown = await browser.evaluate(
                    "(() => { const r = document.getElementById('routing');"
                    " return r && r.getAttribute('data-host'); })()"
                )
                if shown == ratings:
                    break
            assert shown == ratings
            holds = (await browser.evaluate(WEIGHTS))["holds"]
            # No VirtualService: the service's own cluster.
            assert holds == [["-=100", "NACKED", 1], ["-=100", "SYNCED", 2]]
    assert shot.stat().st_size > 10_000
    # Written past pytest's capture, so CI's log names the artifact.
    with capsys.disabled():
        print(f"\ndebug page: weight change shown after {elapsed:.3f} s; screenshot {shot}")


def test_serve_has_the_page_on_its_debug_port(tmp_path: Path) -> None:
    """`controlplane serve` (file mode) installs the page: the directory's canary is on it."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH + "---\n" + canary(80, 20))
    with ControlPlaneProcess(config, free_port(), free_port(), tmp_path / "cp.log") as cp:
        status, page = get(f"http://127.0.0.1:{cp.debug_port}/debug/ui")
    assert status == 200, page
    assert f'<section id="routing" data-host="{HOST}">' in page
    assert 'data-subset="v2" data-weight="20"' in page


def test_many_proxies_list_those_not_in_sync_first_and_count_the_rest() -> None:
    """At a thousand proxies the table keeps its head: the ones behind first, every state
    counted per type, the rest summed up."""

    def proxy(i: int, status: str) -> dict[str, object]:
        state: dict[str, object] = {"status": status, "sent_version": "abc"}
        if status == "NACKED":
            state["nack"] = {"message": f"rejected {i}", "resources": ["local_15001"]}
        return {
            "node_id": f"sidecar~10.0.{i // 250}.{i % 250}~p{i:04d}.default~default.svc",
            "types": {"cds": {"status": "SYNCED"}, "rds": state},
        }

    proxies = [proxy(i, "NACKED" if i in (7, 900) else "SYNCED") for i in range(1000)]
    proxies[500]["types"]["rds"] = {"status": "STALE"}  # type: ignore[index]
    html = render_proxies(proxies)
    assert "<h2>Proxies (1000)</h2>" in html
    assert 'data-type="rds" data-count-of="NACKED">2 NACKED' in html
    assert 'data-type="rds" data-count-of="STALE">1 STALE' in html
    assert 'data-type="rds" data-count-of="SYNCED">997 SYNCED' in html
    rows = html.split('<tr class="proxy"')[1:]
    assert len(rows) == MAX_PROXY_ROWS
    behind = rows[:3]
    assert "rejected 7" in behind[0] and "rejected 900" in behind[2] and "STALE" in behind[1]
    assert f"and {1000 - MAX_PROXY_ROWS} more, in sync" in html
