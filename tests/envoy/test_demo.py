"""The demo itself, in a short mode: its table must show traffic following the weights."""

from __future__ import annotations

import os
from pathlib import Path

from controlplane.cli.demo import STEPS, format_table, run_canary_demo


def test_demo_shifts_traffic_step_by_step_and_reports_ack_latency(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_canary_demo(requests=200, workdir=tmp_path, say=lines.append)
    table = format_table(result)
    assert [s.intended for s in result.steps] == list(STEPS)
    for step in result.steps:
        assert step.other == 0, table
        observed_v2 = step.observed_percent[1]
        assert abs(observed_v2 - step.intended[1]) <= 10, table
    assert result.steps[0].ack_latency_ms is None
    latencies = [s.ack_latency_ms for s in result.steps[1:]]
    assert all(lat is not None and 0 < lat < 3000 for lat in latencies), table
    assert 0 < result.envoy_start_to_ack_ms < 10000
    assert "median change -> ACK" in table
    assert any("step 4/4" in line for line in lines)
    # Every process was stopped: the backends' addresses are free again.
    from controlplane.testing.ports import port_is_free

    assert port_is_free("127.0.0.11", 9080) and port_is_free("127.0.0.12", 9080)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "controlplane", "demo", "--requests", "100000"]
    command += ["--workdir", str(tmp_path)]
    # As from a terminal: a test run started in the background inherits SIGINT ignored, and
    # Python then never turns Ctrl-C into KeyboardInterrupt. A small launcher restores the
    # default and execs the demo (a preexec_fn would run Python in a forked copy of this
    # process, whose gRPC threads make that unsafe).
    launcher = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    demo = subprocess.Popen(
        [sys.executable, "-c", launcher, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        seen = []
        deadline = time.time() + 60
        for line in demo.stdout:  # wait until Envoy runs and traffic flows
            seen.append(line)
            if "step 1/4" in line or time.time() > deadline:
                break
        assert any("step 1/4" in line for line in seen), "".join(seen)
        children = _processes_mentioning(str(tmp_path))
        assert len(children) >= 3, children  # the demo, the control plane and Envoy
        demo.send_signal(signal.SIGINT)
        rest = demo.communicate(timeout=30)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, rest
    assert "interrupted" in rest
    assert _processes_mentioning(str(tmp_path)) == []


def test_the_ingress_demo_sends_the_canary_in_through_a_gateway(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_canary_demo(requests=200, workdir=tmp_path, say=lines.append, ingress=True)
    table = format_table(result)
    for step in result.steps:
        assert step.other == 0, table
        assert abs(step.observed_percent[1] - step.intended[1]) <= 10, table
    assert all(s.ack_latency_ms is not None for s in result.steps[1:]), table
    assert any("ingress gateway (router)" in line for line in lines), lines
    assert any("Host: reviews.example.com" in line for line in lines), lines
    # The gateway (a router node) is what the requests went through: it was served.
    log = (tmp_path / "controlplane.log").read_text()
    assert "router~127.0.0.1~istio-ingressgateway-demo" in log
