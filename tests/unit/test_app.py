"""The composition root: parts start in order, stop in reverse, and a failed start unwinds
what already started; the CLI is one module per command, with defaults in `--help`."""

from __future__ import annotations

import asyncio
import socket
from argparse import _SubParsersAction
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controlplane.app import ControlPlane, Options
from controlplane.cli.main import COMMANDS, main, parser
from controlplane.sources import MeshCa
from controlplane.sources.files import DirectorySource
from controlplane.store import Store


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RecordingSource:
    """A source with nothing in it that records what the control plane asked, and when."""

    def __init__(self, fail_to_start: bool = False, stops_on_its_own: bool = False) -> None:
        self.events: list[str] = []
        self.control_plane: ControlPlane | None = None
        self.fail_to_start = fail_to_start
        self.stops_on_its_own = stops_on_its_own
        self.xds_port_open_at_stop: bool | None = None

    async def open(self, store: Store) -> None:
        self.events.append("open")

    def ready(self) -> bool:
        return True

    def mesh_ca(self) -> MeshCa | None:
        self.events.append("mesh_ca")
        return None

    def status_client(self) -> None:
        return None

    def is_leader(self) -> bool:
        return True

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        assert self.control_plane is not None and self.control_plane.xds is not None
        self.events.append("running")
        if self.fail_to_start:
            raise RuntimeError("the source's extras failed")
        try:
            yield
        finally:
            self.xds_port_open_at_stop = accepts(self.control_plane.xds.xds_port)
            self.events.append("stopped")

    def announce(self, host: str, xds_port: int, debug_port: int, debug_host: str) -> None:
        self.events.append("announce")

    async def wait(self) -> None:
        if not self.stops_on_its_own:
            await asyncio.Event().wait()

    def exit_code(self) -> int:
        return 3


def options() -> Options:
    return Options(xds_port=0, debug_port=0)


async def test_parts_start_in_order_and_stop_in_reverse() -> None:
    source = RecordingSource()
    control_plane = source.control_plane = ControlPlane(options(), source)
    async with control_plane:
        assert control_plane.xds is not None
        port = control_plane.xds.xds_port
        assert accepts(port) and accepts(control_plane.xds.debug_port)
        assert source.events == ["open", "mesh_ca", "running", "announce"]
    assert source.events[-1] == "stopped"
    assert source.xds_port_open_at_stop is True  # the source stopped before the xDS port
    assert not accepts(port)


async def test_a_failed_start_stops_what_already_started() -> None:
    source = RecordingSource(fail_to_start=True)
    control_plane = source.control_plane = ControlPlane(options(), source)
    with pytest.raises(RuntimeError, match="extras failed"):
        await control_plane.start()
    assert control_plane.xds is not None
    assert not accepts(control_plane.xds.xds_port)
    assert not accepts(control_plane.xds.debug_port)
    assert "announce" not in source.events


async def test_run_ends_when_the_source_stops_on_its_own_with_its_exit_status() -> None:
    source = RecordingSource(stops_on_its_own=True)
    source.control_plane = ControlPlane(options(), source)
    assert await source.control_plane.run() == 3
    assert source.events[-1] == "stopped"


async def test_a_file_mode_ca_that_cannot_load_stops_the_start(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "ca"
    not_a_directory.write_text("")
    control_plane = ControlPlane(options(), DirectorySource(tmp_path, not_a_directory))
    with pytest.raises(SystemExit, match=r"controlplane serve: --ca-dir .*ca: "):
        await control_plane.start()


def test_every_command_is_a_module_with_add_and_run() -> None:
    (commands,) = (a.choices for a in parser()._actions if isinstance(a, _SubParsersAction))
    assert list(commands) == [
        "serve", "bootstrap", "analyze", "describe", "diff", "redirect", "proxy-status", "proxy-config", "demo",
        "crds", "run", "webhook-cert", "sidecar", "gateway", "wait",
        "inject", "helper",  # part "templates" (issue 15)
    ]  # fmt: skip
    assert all(callable(m.add) and callable(m.run) for m in COMMANDS)


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--xds-port XDS_PORT (default: 15010)" in text
    assert "check them every N s (default: 30.0)" in text


async def test_the_mesh_ca_takes_its_trust_domain_from_the_mesh_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text("trustDomain: example.org\n")
    control_plane = ControlPlane(options(), DirectorySource(config, tmp_path / "ca"))
    async with control_plane:
        assert control_plane.xds is not None and control_plane.xds.security is not None
        assert control_plane.xds.security.ca.trust_domain == "example.org"
        assert control_plane.options.trust_domain == "example.org"


async def test_the_trust_domain_option_overrides_the_mesh_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text("trustDomain: example.org\n")
    chosen = Options(xds_port=0, debug_port=0, trust_domain="other.example")
    control_plane = ControlPlane(chosen, DirectorySource(config, tmp_path / "ca2"))
    async with control_plane:
        assert control_plane.xds is not None and control_plane.xds.security is not None
        assert control_plane.xds.security.ca.trust_domain == "other.example"
