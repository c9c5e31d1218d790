"""File mode: the helpers of the example injection templates, run for real beside an app.

The Pod is injected the file-mode way (``load_template_path`` on
examples/injection-templates/templates, as ``controlplane inject --templates`` does) and
the helper container it gets is run as the kubelet would run it, inside the app's pod (a
network namespace of a ``NetnsLab``): its command, its environment from the downward API,
its volumes as directories shared with the app, each mounted at its place in a mount
namespace of its own, read-only where the template says so. (One difference: the helper
runs as root, not as the template's UID 65534, which cannot read this machine's Python.)

* log collection: the app writes its log (with a rotation and a line written in two
  pieces); the collector, whose configuration is the example ConfigMap's pointed at a
  receiver in another pod, delivers every line, once, in order, with the pod's name.
* config sync: a config server in another pod hands out a new 2 MB version on every
  request; while the helper keeps the directory current every 50 ms, a reader in the app's
  pod reads the file in a loop and never sees anything but a whole version. The same
  reader beside a writer that writes in place (no rename) does see half files, so the
  check can fail.
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from controlplane.inject.injector import InjectionConfig
from controlplane.inject.templates import inject, load_template_path
from controlplane.testing.netns import NetnsLab
from controlplane.testing.ports import free_port
from tests.netns.helper_apps import config_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "injection-templates"
PODS = {p["metadata"]["name"]: p for p in yaml.safe_load_all((EXAMPLES / "pods.yaml").read_text())}


def injected(name: str, annotations: dict[str, str] | None = None) -> dict:
    pod = json.loads(json.dumps(PODS[name]))
    pod["metadata"]["namespace"] = "shop"
    pod["metadata"]["annotations"].update(annotations or {})
    return inject(pod, InjectionConfig(), load_template_path(EXAMPLES / "templates"))


def container(pod: dict, name: str) -> dict:
    spec = pod["spec"]
    return next(c for c in spec["initContainers"] + spec["containers"] if c["name"] == name)


def kubelet_argv(
    pod: dict, spec: dict, volumes: dict[str, Path], instead: list[str] | None = None
) -> list[str]:
    """``spec`` (a container of ``pod``) as a command line: each volume mount a bind mount
    of ``volumes[name]`` at its mountPath in a private mount namespace (read-only if it says
    so), the downward-API environment set, ``controlplane`` being this checkout. ``instead``:
    another command to run in the same container (to look at what it sees)."""
    script = []
    for mount in spec.get("volumeMounts", []):
        source, target = str(volumes[mount["name"]]), mount["mountPath"]
        script.append(f"mkdir -p {shlex.quote(source)}")
        # The mount point: a tmpfs over the first missing parent keeps the host untouched.
        script.append(
            f't={shlex.quote(target)}; p=$t; while [ ! -e "$p" ]; do m=$p; p=$(dirname "$p"); done; '
            f'if [ -n "${{m:-}}" ]; then mount -t tmpfs tmpfs "$p" && mkdir -p "$t"; fi; unset m'
        )
        script.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
        if mount.get("readOnly"):
            script.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
    fields = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": "shop"}
    env = [
        f"{e['name']}={fields[e['valueFrom']['fieldRef']['fieldPath']]}"
        for e in spec.get("env", [])
        if "valueFrom" in e
    ]
    argv = [*spec.get("command", []), *spec.get("args", [])]
    assert argv[0] == "controlplane"
    argv = instead or [sys.executable, "-m", "controlplane", *argv[1:]]
    script.append('exec env "$@"')
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-ec",
        "; ".join(script),
        "sh",
        *env,
        *argv,
    ]


def wait_for(predicate, timeout: float, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what() if callable(what) else what)


@pytest.fixture
def lab(tmp_path: Path):
    with NetnsLab(tmp_path / "lab") as running:
        yield running


def test_the_log_collector_delivers_every_line_of_the_apps_log_to_its_receiver(
    lab: NetnsLab, tmp_path: Path
):
    app, sink = lab.pod("web"), lab.pod("sink")
    port = free_port()
    received = tmp_path / "received.jsonl"
    sink.start_app(
        [sys.executable, "-m", "tests.netns.helper_apps", "ingest", str(port), str(received)],
        "ingest",
    )

    pod = injected("web")
    collector = container(pod, "log-collector")
    assert collector["restartPolicy"] == "Always"
    # The collector's ConfigMap is the example's, pointed at this lab's receiver.
    configmap = yaml.safe_load((EXAMPLES / "log-collector-config.yaml").read_text())
    config = yaml.safe_load(configmap["data"]["collector.yaml"])
    config["output"] = {"http": f"http://{sink.ip}:{port}/ingest"}
    config["pollSeconds"] = 0.1
    config_dir, logs = tmp_path / "log-collector-config", tmp_path / "app-logs"
    config_dir.mkdir()
    logs.mkdir()
    (config_dir / "collector.yaml").write_text(yaml.safe_dump(config))
    volumes = {"app-logs": logs, "log-collector-config": config_dir}
    app.start(kubelet_argv(pod, collector, volumes), "log-collector")
    # A native sidecar: running before the app starts (it would miss nothing either way
    # but a file rotated away before it first looked).
    wait_for(lambda: "following" in app.log("log-collector"), 30, "the collector to start")

    # The app's own container mounts the same emptyDir where the Pod's annotation says.
    web = container(pod, "web")
    assert web["volumeMounts"] == [{"name": "app-logs", "mountPath": "/var/log/nginx"}]
    app.start_app([sys.executable, "-m", "tests.netns.helper_apps", "write-logs", str(logs)], "app")

    expected = [f"request {i} served" for i in range(81)]

    def delivered() -> list[dict]:
        try:
            records = [json.loads(line) for line in received.read_text().splitlines()]
        except FileNotFoundError:
            return []
        return records if len(records) >= len(expected) else []

    records = wait_for(
        delivered, 30, lambda: f"81 lines at the receiver; log:\n{app.log('log-collector')}"
    )
    time.sleep(0.5)  # nothing more (no line twice) arrives after
    records = [json.loads(line) for line in received.read_text().splitlines()]
    assert [r["line"] for r in records] == expected
    assert {r["pod"] for r in records} == {"web"} and {r["namespace"] for r in records} == {"shop"}
    assert {r["file"] for r in records} == {"/var/log/app/app.log"}  # the collector's view
    # Its view is read-only: the collector could not have written to the app's logs.
    proc = app.run(kubelet_argv(pod, collector, volumes, ["touch", "/var/log/app/x"]))
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr


def test_config_sync_keeps_the_directory_current_and_a_reader_never_sees_half_a_file(
    lab: NetnsLab, tmp_path: Path
):
    app, server = lab.pod("catalog"), lab.pod("config")
    port = free_port()
    server.start_app(
        [sys.executable, "-m", "tests.netns.helper_apps", "config-server", str(port)], "server"
    )
    pod = injected(
        "catalog",
        {
            "config-sync.controlplane.io/source": f"http://{server.ip}:{port}/catalog",
            "config-sync.controlplane.io/interval-seconds": "0.05",
        },
    )
    syncer = container(pod, "config-sync")
    synced = tmp_path / "synced-config"
    app.start(kubelet_argv(pod, syncer, {"synced-config": synced}), "config-sync")
    wait_for(
        lambda: (synced / ".synced").exists(), 30, lambda: f"first sync:\n{app.log('config-sync')}"
    )
    assert (synced / "old.conf").exists() or int((synced / "version").read_text()) > 2

    reader = app.run(
        [
            sys.executable,
            "-m",
            "tests.netns.helper_apps",
            "read-config",
            str(synced / "app.conf"),
            "4",
        ],
        timeout=60,
    )
    summary = json.loads(reader.stdout.splitlines()[-1])
    assert summary["partial_count"] == 0, summary
    assert len(summary["versions"]) >= 5, summary  # it did change under the reader
    assert summary["versions"] == sorted(summary["versions"])
    assert not (synced / "old.conf").exists()  # gone from the source: removed
    # What the app sees: the files, the readiness mark, at most one temporary file in flight.
    names = sorted(p.name for p in synced.iterdir() if not p.name.endswith(".tmp"))
    assert names == [".synced", "app.conf", "version"]

    # The same reader beside a writer that writes in place sees half files: the check bites.
    naive = tmp_path / "naive" / "app.conf"
    naive.parent.mkdir()
    naive.write_text(config_text(0))
    stop = threading.Event()

    def write_in_place() -> None:
        version = 0
        while not stop.is_set():
            version += 1
            with open(naive, "w") as out:
                text = config_text(version)
                for start in range(0, len(text), 65536):
                    out.write(text[start : start + 65536])
                    out.flush()

    writer = threading.Thread(target=write_in_place)
    writer.start()
    try:
        reader = app.run(
            [sys.executable, "-m", "tests.netns.helper_apps", "read-config", str(naive), "2"],
            timeout=60,
        )
    finally:
        stop.set()
        writer.join()
    assert json.loads(reader.stdout.splitlines()[-1])["partial_count"] > 0
