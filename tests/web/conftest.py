"""An in-process control plane with the debug page installed, simulated sidecars that follow
it over ADS, and a real headless Chromium driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controlplane.cache import CacheMux, CompiledCache, XdsMetrics
from controlplane.store import Store
from controlplane.testing.ads_client import SimulatedProxy
from controlplane.testing.ports import free_port
from controlplane.web import DebugPage
from controlplane.xds.debug import DebugServer
from controlplane.xds.server import XdsServer
from tests.xds.conftest import ControlPlane
from tests.xds.mesh import local_node

INSTALL = Path(__file__).with_name("install-chromium.sh")


@asynccontextmanager
async def serving_page(
    debug_host: str = "127.0.0.1", debug_token: str | None = None
) -> AsyncIterator[ControlPlane]:
    """As tests/xds/conftest.serving, with /debug/ui installed on the debug port."""
    store = Store()
    metrics = XdsMetrics()
    hub = CompiledCache(store, debounce=0.02, max_delay=1.0, metrics=metrics)
    cache = CacheMux(hub)
    xds = XdsServer(cache, metrics=metrics)
    debug = DebugServer(xds, hub, debug_token=debug_token)
    DebugPage.install(debug)
    hub.start()
    await xds.start("127.0.0.1", free_port())
    await debug.start(debug_host, free_port())
    try:
        yield ControlPlane(store, hub, xds, debug, cache)
    finally:
        await debug.stop()
        await xds.stop(grace=0.1)
        await hub.stop()


@asynccontextmanager
async def sidecars(
    cp: ControlPlane, *names: str, nack_when: Callable[[Any], str | None] | None = None
) -> AsyncIterator[list[SimulatedProxy]]:
    """Simulated sidecars in namespace default that subscribe as Envoy does and ACK (or NACK
    what ``nack_when`` says), until the block ends."""
    stop = asyncio.Event()
    proxies = []
    for name in names:
        me = local_node(name)
        metadata = {k: v for k, v in me.metadata.fields.items()}
        proxies.append(
            SimulatedProxy(
                cp.target,
                me.id,
                {k: v.string_value for k, v in metadata.items()},
                nack_when=nack_when,
            )
        )
    tasks = [asyncio.create_task(p.run(stop)) for p in proxies]
    try:
        yield proxies
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task


def chromium_binary() -> str:
    """Debian's chromium, installed by the project's script if missing; skip, saying why, only
    when it cannot be installed here."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    result = subprocess.run(
        ["bash", str(INSTALL)], capture_output=True, text=True, timeout=900, check=False
    )
    lines = result.stdout.strip().splitlines()
    if lines and Path(lines[-1]).exists():
        return lines[-1]
    pytest.skip(f"no chromium and it cannot be installed here: {result.stderr.strip()[-400:]}")


@dataclass
class Browser:
    """One headless Chromium tab spoken to over the DevTools protocol (a websocket)."""

    ws: aiohttp.ClientWebSocketResponse
    ids: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        mine = self.ids
        await self.ws.send_str(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive(timeout=20)).data)
            if message.get("id") == mine:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read().decode())


@asynccontextmanager
async def headless_chromium() -> AsyncIterator[Browser]:
    binary = chromium_binary()
    port = free_port()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # as root in a container, Chromium's sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1400",
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pages: list[dict[str, Any]] = []
        for _ in range(300):
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"chromium exited: {err[-2000:]}")
            with suppress(OSError, ValueError):
                pages = [
                    t for t in _json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"
                ]
                if pages:
                    break
            await asyncio.sleep(0.1)
        assert pages, "chromium's DevTools endpoint did not come up in 30 s"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws,
        ):
            browser = Browser(ws)
            await browser.call("Page.enable")
            await browser.call("Runtime.enable")
            yield browser
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
