"""The netns harness leaves nothing behind: not after a clean stop, not after a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from controlplane.testing.netns import NetnsLab, sweep_stale_labs


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_stop_removes_namespaces_links_and_hosts_files() -> None:
    lab = NetnsLab().start()
    pod = lab.pod("tidy")
    assert pod.netns in namespaces() and lab.bridge in links()
    assert (Path("/etc/netns") / pod.netns / "hosts").exists()
    lab.stop()
    assert pod.netns not in namespaces()
    assert lab.bridge not in links() and pod.host_link not in links()
    assert not (Path("/etc/netns") / pod.netns).exists()


def test_a_lab_whose_process_died_is_swept_by_the_next_one() -> None:
    script = textwrap.dedent(
        """
        import os
        from controlplane.testing.netns import NetnsLab
        lab = NetnsLab().start()
        lab.pod("crashed")
        print(lab.token, lab.pods[0].netns, lab.bridge, flush=True)
        os._exit(9)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    token, netns, bridge = result.stdout.split()
    assert netns in namespaces() and bridge in links()
    assert token in sweep_stale_labs()
    assert netns not in namespaces() and bridge not in links()
