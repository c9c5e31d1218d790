"""The traffic-capture rules of an injected pod, as the init container installs them.

Pure: ports and the proxy's UID in, ``iptables-restore`` input (or the equivalent ``iptables``
command lines) out. The rules are Istio's REDIRECT mode, in the nat table:

- inbound TCP (PREROUTING) goes to the sidecar's inbound capture port (15006), except the
  excluded ports;
- outbound TCP (OUTPUT) goes to the outbound capture port (15001), except traffic of the proxy
  itself (owner match on its UID and GID: its own connections to the mesh and the control
  plane), traffic to 127.0.0.1, traffic from the inbound pass-through address 127.0.0.6 (the
  proxy reaching its own app), and the excluded destination ports;
- a connection the proxy makes to its own pod's address over loopback is an inbound call to
  itself and goes to the inbound capture port.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Istio's HBONE port is always let through, as istio-iptables does.
HBONE_PORT = 15008
PASSTHROUGH_SOURCE = "127.0.0.6/32"
LOCALHOST = "127.0.0.1/32"
CHAINS = ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT")


@dataclass(frozen=True)
class CaptureConfig:
    """What the init container is told (``controlplane redirect`` flags)."""

    proxy_uid: int = 1337
    proxy_gid: int | None = None  # defaults to the UID, as Istio's injector sets both
    inbound_capture_port: int = 15006
    outbound_capture_port: int = 15001
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("inbound_capture_port", "outbound_capture_port"):
            _check_port(name, getattr(self, name))
        for port in (*self.exclude_inbound_ports, *self.exclude_outbound_ports):
            _check_port("excluded port", port)
        if self.proxy_uid < 0 or (self.proxy_gid is not None and self.proxy_gid < 0):
            raise ValueError("proxy uid and gid must not be negative")

    @property
    def gid(self) -> int:
        return self.proxy_uid if self.proxy_gid is None else self.proxy_gid


def _check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"{name} {port} must be between 1 and 65535")


def parse_ports(text: str) -> tuple[int, ...]:
    """``15020,15021`` -> (15020, 15021); raises ValueError naming a bad entry."""
    out: list[int] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if not item.isdigit():
            raise ValueError(f"{item!r} is not a port number")
        port = int(item)
        _check_port("port", port)
        if port not in out:
            out.append(port)
    return tuple(out)


def nat_rules(config: CaptureConfig) -> list[str]:
    """The rules as ``-A CHAIN ...`` lines (iptables-restore syntax), in order."""
    uid, gid = str(config.proxy_uid), str(config.gid)
    rules = [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
    ]
    for port in _unique((HBONE_PORT, *config.exclude_inbound_ports)):
        rules.append(f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN")
    rules += [
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {config.inbound_capture_port}",
    ]
    for port in config.exclude_outbound_ports:
        rules.append(f"-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN")
    rules += [
        f"-A ISTIO_OUTPUT -s {PASSTHROUGH_SOURCE} -o lo -j RETURN",
        # The proxy calling its own pod's address: an inbound call, captured as one.
        f"-A ISTIO_OUTPUT ! -d {LOCALHOST} -o lo -p tcp -m tcp ! --dport {HBONE_PORT} "
        f"-m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT ! -d {LOCALHOST} -o lo -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN",
        f"-A ISTIO_OUTPUT -d {LOCALHOST} -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {config.outbound_capture_port}",
    ]
    return rules


def restore_text(config: CaptureConfig) -> str:
    """Input for ``iptables-restore``: the whole nat table of the pod, replaced at once.

    Replacing (rather than appending to) the table makes a second run leave exactly the same
    rules, so an init container that restarts does not stack duplicates.
    """
    lines = ["*nat"]
    lines += [f":{chain} - [0:0]" for chain in CHAINS]
    lines += nat_rules(config)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def commands(config: CaptureConfig, iptables: str = "iptables") -> list[list[str]]:
    """The same rules as ``iptables`` invocations (for reading, or shells without restore)."""
    out = [[iptables, "-t", "nat", "-N", chain] for chain in CHAINS]
    for rule in nat_rules(config):
        out.append([iptables, "-t", "nat", *rule.split()])
    return out


def _unique(ports: Iterable[int]) -> list[int]:
    out: list[int] = []
    for port in ports:
        if port not in out:
            out.append(port)
    return out
