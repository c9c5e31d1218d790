"""The init container's capture rules: pure generation, and the CLI's dry run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controlplane.inject.iptables import CaptureConfig, commands, parse_ports, restore_text


def test_default_rules_capture_inbound_to_15006_and_outbound_to_15001() -> None:
    text = restore_text(CaptureConfig())
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" in lines
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in lines
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in lines
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in lines
    assert lines[-2] == "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"


def test_proxy_traffic_is_exempt_by_uid_and_gid_before_the_catch_all_redirect() -> None:
    lines = restore_text(CaptureConfig(proxy_uid=1500, proxy_gid=1600)).splitlines()
    uid_return = lines.index("-A ISTIO_OUTPUT -m owner --uid-owner 1500 -j RETURN")
    gid_return = lines.index("-A ISTIO_OUTPUT -m owner --gid-owner 1600 -j RETURN")
    catch_all = lines.index("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    assert uid_return < catch_all and gid_return < catch_all
    # The proxy reaching its own app from 127.0.0.6 is let through first of all.
    first_output = next(i for i, line in enumerate(lines) if line.startswith("-A ISTIO_OUTPUT"))
    assert lines[first_output] == "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN"


def test_excluded_ports_return_before_capture() -> None:
    config = CaptureConfig(exclude_inbound_ports=(15020, 15021), exclude_outbound_ports=(5432,))
    lines = restore_text(config).splitlines()
    inbound_redirect = lines.index("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
    for port in (15008, 15020, 15021):
        assert lines.index(f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN") < inbound_redirect
    excluded = lines.index("-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN")
    assert excluded < lines.index("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")


def test_rules_are_the_same_on_every_run() -> None:
    assert restore_text(CaptureConfig()) == restore_text(CaptureConfig())


def test_command_list_creates_the_chains_then_adds_each_rule() -> None:
    config = CaptureConfig()
    argv = commands(config)
    assert argv[0] == ["iptables", "-t", "nat", "-N", "ISTIO_INBOUND"]
    rules = [" ".join(a[3:]) for a in argv if a[3] == "-A"]
    assert rules == [line for line in restore_text(config).splitlines() if line.startswith("-A")]


def test_port_lists_are_parsed_and_bad_entries_named() -> None:
    assert parse_ports("15020, 15021,,15020") == (15020, 15021)
    with pytest.raises(ValueError, match="'http'"):
        parse_ports("15020,http")
    with pytest.raises(ValueError, match="70000"):
        parse_ports("70000")
    with pytest.raises(ValueError, match="inbound_capture_port"):
        CaptureConfig(inbound_capture_port=0)


def test_redirect_dry_run_prints_the_rules_without_touching_iptables() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "redirect",
            "--proxy-uid",
            "1337",
            "--inbound-capture-port",
            "15006",
            "--outbound-capture-port",
            "15001",
            "--exclude-inbound-ports",
            "15020,15021",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    expected = CaptureConfig(exclude_inbound_ports=(15020, 15021))
    assert result.stdout == restore_text(expected)


def test_redirect_rejects_a_bad_port_list_with_exit_status_2() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "redirect",
            "--exclude-outbound-ports",
            "x",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "'x' is not a port number" in result.stderr
