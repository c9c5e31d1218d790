"""`controlplane proxy-status` and `controlplane proxy-config`: what a running control plane
sent each connected proxy, read from its debug port."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.cli import Commands

TYPES = ("cds", "lds", "eds", "rds", "sds")
CONFIG_TYPES = {
    "clusters": "cds",
    "listeners": "lds",
    "endpoints": "eds",
    "routes": "rds",
    "secrets": "sds",
}


class ControlPlaneUnreachable(Exception):
    pass


def fetch(address: str, path: str) -> Any:
    url = f"http://{address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read().decode())
        except ValueError:
            body = {}
        raise ControlPlaneUnreachable(body.get("error") or f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ControlPlaneUnreachable(f"cannot reach the control plane at {url}: {exc}") from None


def _cell(state: dict[str, Any] | None) -> str:
    """``SYNCED:<version>``, ``STALE:<acked>><sent>``, ``NACKED:<sent>``, ``ERROR:<acked>``
    (versions shortened)."""
    if not state:
        return "-"
    status = str(state.get("status", "?"))
    sent = str(state.get("sent_version") or "")[:8]
    acked = str(state.get("acked_version") or "")[:8] or "none"
    if status == "SYNCED":
        return f"SYNCED:{sent}"
    if status == "STALE":
        return f"STALE:{acked}>{sent}"
    if status == "NACKED":
        return f"NACKED:{sent}"
    if status == "ERROR":
        return f"ERROR:{acked}"
    return status.replace(" ", "-")


def _since(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(proxies: list[dict[str, Any]]) -> str:
    """A table of every proxy, then one line per type that is not SYNCED, saying why."""
    header = ["NODE ID", "IDENTITY", "CONNECTED SINCE", "PROTOCOL", *[t.upper() for t in TYPES]]
    rows = [header]
    details: list[str] = []
    for proxy in sorted(proxies, key=lambda p: str(p["node_id"])):
        types = proxy.get("types", {})
        rows.append(
            [
                str(proxy["node_id"]),
                str(proxy.get("identity") or "-"),
                _since(float(proxy["connected_at"])),
                str(proxy.get("protocol", "")),
                *[_cell(types.get(t)) for t in TYPES],
            ]
        )
        for t in TYPES:
            state = types.get(t)
            if not state or state.get("status") == "SYNCED":
                continue
            line = (
                f"  {proxy['node_id']} {t}: {state['status']}: "
                f"sent {state.get('sent_version') or '-'}, "
                f"acked {state.get('acked_version') or '-'}"
            )
            nack = state.get("nack")
            if state.get("status") == "NACKED" and nack:
                names = ", ".join(nack.get("resources", [])[:5]) or "-"
                line += f"; rejected [{names}]: {nack.get('message', '').strip()}"
            error = state.get("error")
            if error:
                line += f"; not being updated: {error.get('message', '').strip()}"
            details.append(line)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if details:
        lines += ["", "Not in sync:", *details]
    return "\n".join(lines) + "\n"


def proxy_status(address: str, output: str = "table", out: TextIO | None = None) -> int:
    out = out or sys.stdout
    proxies = fetch(address, "/debug/syncz")["proxies"]
    if output == "json":
        out.write(json.dumps(proxies, indent=2, sort_keys=True) + "\n")
    elif not proxies:
        out.write("no proxies connected\n")
    else:
        out.write(render_status(proxies))
    return 0


def proxy_config(
    address: str,
    node_id: str,
    kind: str | None = None,
    output: str = "json",
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    query = {"proxy": node_id}
    if kind:
        query["type"] = CONFIG_TYPES[kind]
    dump = fetch(address, "/debug/config_dump?" + urllib.parse.urlencode(query))
    by_name = {v: k for k, v in CONFIG_TYPES.items()}
    resources = {by_name.get(k, k): v for k, v in dump["resources"].items()}
    if kind:
        data: Any = resources.get(kind, [])
    else:
        data = {"node_id": dump["node_id"], **resources}
    if output == "yaml":
        out.write(yaml.safe_dump(data, sort_keys=False))
    else:
        out.write(json.dumps(data, indent=2) + "\n")
    return 0


def add(commands: Commands) -> None:
    parser = command(
        commands, "proxy-status", "every connected proxy and whether it is in sync, per type"
    )
    parser.add_argument(
        "--debug-address", default="127.0.0.1:15014", help="the control plane's debug port"
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return proxy_status(args.debug_address, args.output)
    except ControlPlaneUnreachable as exc:
        print(f"controlplane proxy-status: {exc}", file=sys.stderr)
        return 1
