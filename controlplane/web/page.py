"""The debug page: ``/debug/ui`` on the debug port, behind its access rules (loopback, or the
debug token), read-only.

Server-rendered HTML with inline SVG and no external asset: the proxies and their sync state
per type (what ``/debug/syncz`` and ``controlplane proxy-status`` say: SYNCED, STALE, NACKED
with Envoy's error), every resource with the conditions its status has (whatever conditions
the status module computes), and the routing of a chosen host (``routing.py``). A small
inline script asks ``/debug/ui/live`` a few times a second for the same sections, rendered
again by the server, and swaps them in when they changed: the picture follows a canary.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

from aiohttp import web

from controlplane.api.issues import ResourceKey
from controlplane.cache.compiled import CompiledCache
from controlplane.cache.interface import BY_SHORT_NAME
from controlplane.status.conditions import conditions
from controlplane.store import ResourceStatus, Snapshot
from controlplane.web.routing import (
    Holding,
    ProxyRoutes,
    Routing,
    default_host,
    hosts,
    routing,
)
from controlplane.xds.debug import DebugServer
from controlplane.xds.delivery import Delivery

ROUTE_TYPE = BY_SHORT_NAME["rds"]
TYPES = ("cds", "eds", "lds", "rds", "sds")
REFRESH_MS = 250  # the live sections are asked for this often

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2329;background:#fff}
h1{font-size:20px;margin:0 0 .2em}h2{font-size:16px;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #d0d7de;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f5f7}
.SYNCED,.True{background:#dcf5e3}.STALE{background:#fff3c4}.NACKED,.ERROR,.False{background:#ffd9d6}
.NOT-SENT,.Unknown{background:#eef0f2}.muted{color:#66707a}.err{color:#a4161a;font-size:12px}
code{font-size:12px}svg text{font:13px system-ui,sans-serif}
"""

_SCRIPT = """
(function(){
  var live = document.getElementById('live');
  var pick = document.getElementById('host');
  if (pick) pick.addEventListener('change', function(){ pick.form.submit(); });
  var url = 'ui/live' + (window.location.search ? window.location.search + '&' : '?') + 'have=';
  var busy = false;
  function tick(){
    if (busy) return; busy = true;
    var have = live.getAttribute('data-digest');
    fetch(url + have, {cache: 'no-store'}).then(function(r){ return r.json(); }).then(function(d){
      if (d.digest !== have && d.html !== undefined) {
        live.innerHTML = d.html; live.setAttribute('data-digest', d.digest);
      }
      document.getElementById('updated').textContent = d.at;
    }).catch(function(){}).then(function(){ busy = false; });
  }
  setInterval(tick, %d);
})();
"""


def _cls(value: str) -> str:
    return escape(value.replace(" ", "-"), quote=True)


Conditions = Callable[[ResourceKey, ResourceStatus], list[dict[str, Any]]]


def status_conditions(key: ResourceKey, status: ResourceStatus) -> list[dict[str, Any]]:
    """The conditions the status writer puts on the resource."""
    return conditions(status)


class DebugPage:
    """Adds ``/debug/ui`` and ``/debug/ui/live`` to a debug server (before it starts).

    ``resource_conditions`` gives a resource's conditions; by default those the status writer
    computes, whatever they are, so a condition added there shows here."""

    def __init__(
        self,
        delivery: Delivery,
        compiled: CompiledCache,
        resource_conditions: Conditions = status_conditions,
    ) -> None:
        self.delivery = delivery
        self.compiled = compiled
        self.resource_conditions = resource_conditions

    @classmethod
    def install(
        cls, debug: DebugServer, resource_conditions: Conditions = status_conditions
    ) -> DebugPage:
        page = cls(debug.delivery, debug.compiled, resource_conditions)
        debug.app.add_routes(
            [web.get("/debug/ui", page._page), web.get("/debug/ui/live", page._live)]
        )
        return page

    # ---- handlers -------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        snapshot = self.compiled.store.snapshot
        host = self._host(snapshot, request.query.get("host"))
        body, digest = self.sections(snapshot, host)
        nonce = secrets.token_urlsafe(16)
        options = "".join(
            f'<option value="{escape(h, quote=True)}"{" selected" if h == host else ""}>'
            f"{escape(h)}</option>"
            for h in hosts(snapshot)
        )
        html = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<title>control plane</title>"
            f"<style>{_STYLE}</style></head><body>"
            "<h1>Control plane</h1>"
            '<form method="get" action="ui">routing of <select name="host" id="host">'
            f"{options}</select> "
            "<noscript><button>show</button></noscript>"
            '<span class="muted"> updated <span id="updated">'
            f"{escape(_now())}</span></span></form>"
            f'<div id="live" data-digest="{digest}">{body}</div>'
            f'<script nonce="{nonce}">{_SCRIPT % REFRESH_MS}</script></body></html>'
        )
        # Nothing from elsewhere, no framing: the page is the operator's, on loopback.
        policy = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'"
        )
        headers = {
            **_NO_STORE,
            "Content-Security-Policy": policy,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
        }
        return web.Response(text=html, content_type="text/html", headers=headers)

    async def _live(self, request: web.Request) -> web.Response:
        snapshot = self.compiled.store.snapshot
        host = self._host(snapshot, request.query.get("host"))
        body, digest = self.sections(snapshot, host)
        answer: dict[str, str] = {"digest": digest, "at": _now()}
        if request.query.get("have") != digest:  # the page has it already: say only so
            answer["html"] = body
        return web.Response(
            text=json.dumps(answer),
            content_type="application/json",
            headers=_NO_STORE,
        )

    @staticmethod
    def _host(snapshot: Snapshot, asked: str | None) -> str | None:
        if asked and asked in hosts(snapshot):
            return asked
        return default_host(snapshot)

    # ---- the sections ---------------------------------------------------------------------

    def sections(self, snapshot: Snapshot, host: str | None) -> tuple[str, str]:
        """The live part of the page, and a digest of it (the script swaps on a change)."""
        proxies = self.delivery.describe()
        parts = []
        if host is not None:
            parts.append(render_routing(routing(snapshot, host, self._proxy_routes())))
        parts.append(render_proxies(proxies))
        parts.append(render_resources(snapshot, self.resource_conditions))
        body = "".join(parts)
        return body, hashlib.sha256(body.encode()).hexdigest()[:16]

    def _proxy_routes(self) -> list[ProxyRoutes]:
        out = []
        for stream in list(self.delivery.streams.values()):
            proxy = stream.proxy
            state = getattr(stream, "states", {}).get(ROUTE_TYPE)
            if proxy is None or state is None:
                continue
            out.append(
                ProxyRoutes(
                    node_id=proxy.node_id,
                    namespace=proxy.namespace,
                    status=state.synced,
                    routes=state.sent_view,
                )
            )
        return out


_NO_STORE = {"Cache-Control": "no-store"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- proxies ------------------------------------------------------------------------------


MAX_PROXY_ROWS = 200  # past this, rows in sync are counted, not listed


def _in_sync(proxy: Mapping[str, Any]) -> bool:
    types: Mapping[str, Any] = proxy.get("types") or {}
    return all(s.get("status") == "SYNCED" for s in types.values())


def render_proxies(proxies: list[dict[str, Any]]) -> str:
    """A row per proxy, those not in sync first; a count per type and state above."""
    counts: dict[str, dict[str, int]] = {}
    for proxy in proxies:
        for t, state in (proxy.get("types") or {}).items():
            status = str(state.get("status", "?"))
            counts.setdefault(t, {})[status] = counts.setdefault(t, {}).get(status, 0) + 1
    summary = " · ".join(
        f"{t.upper()}: "
        + ", ".join(
            f'<span class="{_cls(s)}" data-type="{t}" data-count-of="{_cls(s)}">{n} {escape(s)}'
            "</span>"
            for s, n in sorted(counts[t].items())
        )
        for t in TYPES
        if t in counts
    )
    ordered = sorted(proxies, key=lambda p: (_in_sync(p), str(p.get("node_id"))))
    hidden = ordered[MAX_PROXY_ROWS:]
    rows = []
    for proxy in ordered[:MAX_PROXY_ROWS]:
        types: Mapping[str, Any] = proxy.get("types") or {}
        cells = []
        for t in TYPES:
            state = types.get(t)
            if not state:
                cells.append('<td class="muted">-</td>')
                continue
            status = str(state.get("status", "?"))
            detail = ""
            nack = state.get("nack")
            if status == "NACKED" and nack:
                names = ", ".join(nack.get("resources", [])[:5])
                detail = (
                    f'<div class="err nack">{escape(str(nack.get("message", "")).strip())}'
                    + (f" [{escape(names)}]" if names else "")
                    + "</div>"
                )
            error = state.get("error")
            if error:
                detail += f'<div class="err">{escape(str(error.get("message", "")))}</div>'
            version = str(state.get("sent_version") or "")[:8]
            cells.append(
                f'<td class="{_cls(status)}" data-type="{t}" data-status="{_cls(status)}">'
                f'{escape(status)} <code class="muted">{escape(version)}</code>{detail}</td>'
            )
        node = escape(str(proxy.get("node_id")), quote=True)
        rows.append(
            f'<tr class="proxy" data-node="{node}"><td><code>{node}</code></td>'
            f"<td>{escape(str(proxy.get('identity') or '-'))}</td>"
            f"<td>{escape(str(proxy.get('protocol', '')))}</td>{''.join(cells)}</tr>"
        )
    head = "".join(f"<th>{t.upper()}</th>" for t in TYPES)
    table = (
        f"<table><tr><th>proxy</th><th>identity</th><th>protocol</th>{head}</tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else '<p class="muted">no proxies connected</p>'
    )
    behind = sum(1 for p in hidden if not _in_sync(p))
    more = (
        f'<p class="muted" id="more-proxies">and {len(hidden)} more'
        + (f", {behind} of them not in sync" if behind else ", in sync")
        + " (every one: <code>controlplane proxy-status</code>)</p>"
        if hidden
        else ""
    )
    return (
        f'<section id="proxies"><h2>Proxies ({len(proxies)})</h2><p>{summary}</p>'
        f"{table}{more}</section>"
    )


# ---- resources ----------------------------------------------------------------------------


def render_resources(snapshot: Snapshot, resource_conditions: Conditions) -> str:
    rows = []
    for key, status in sorted(snapshot.status.items(), key=lambda kv: str(kv[0])):
        listed = resource_conditions(key, status)
        conds = "".join(
            f'<span class="cond {_cls(str(c.get("status")))}" '
            f'data-type="{escape(str(c.get("type")), quote=True)}" '
            f'data-status="{escape(str(c.get("status")), quote=True)}" '
            f'title="{escape(str(c.get("message", "")), quote=True)}">'
            f"{escape(str(c.get('type')))}={escape(str(c.get('status')))}"
            f" <span class='muted'>{escape(str(c.get('reason', '')))}</span></span><br>"
            for c in listed
        )
        messages = "".join(
            f"<div>{escape(str(c.get('type')))}: {escape(str(c.get('message', '')))}</div>"
            for c in listed
            if c.get("status") != "True"
        )
        rows.append(
            f'<tr class="resource" data-key="{escape(str(key), quote=True)}">'
            f"<td>{escape(key.kind)}</td><td>{escape(key.namespace or '')}</td>"
            f"<td>{escape(key.name)}</td><td>{escape(str(status.generation or '-'))}</td>"
            f'<td>{conds}</td><td class="err">{messages}</td></tr>'
        )
    table = (
        "<table><tr><th>kind</th><th>namespace</th><th>name</th><th>generation</th>"
        "<th>conditions</th><th>why not</th></tr>" + "".join(rows) + "</table>"
    )
    return f'<section id="resources"><h2>Resources ({len(rows)})</h2>{table}</section>'


# ---- routing ------------------------------------------------------------------------------

_COLOURS = ("#3572b0", "#e07b00", "#2f9e44", "#9c36b5", "#c92a2a", "#0b7285")


def _colour(subsets: list[str], name: str) -> str:
    if name not in subsets:
        subsets.append(name)
    return _COLOURS[subsets.index(name) % len(_COLOURS)]


def _t(x: float, y: float, text: str, extra: str = "") -> str:
    return f'<text x="{x:.0f}" y="{y:.0f}" {extra}>{escape(text)}</text>'


def render_routing(view: Routing) -> str:
    """The host, each HTTP route with arrows to its subsets (thickness by weight), the
    subsets and the workloads they select, then the proxies grouped by the weights they hold."""
    order = [s.name for s in view.subsets]
    for row in view.routes:
        for split in row.splits:
            if split.subset not in order:
                order.append(split.subset)
    colours: list[str] = list(order)
    width, x_route, x_subset, x_work = 960, 20, 430, 640
    subset_y = {name: 40 + 64 * i for i, name in enumerate(order)}
    route_y = [40 + 64 * i for i in range(len(view.routes))]
    top = max([*subset_y.values(), *route_y, 40]) + 100
    svg: list[str] = []
    title = view.virtual_service or "no VirtualService applies"
    svg.append(_t(x_route, 20, f"{view.host}  ·  {title}", 'font-weight="600"'))
    for i, row in enumerate(view.routes):
        y = route_y[i]
        svg.append(
            f'<rect x="{x_route}" y="{y}" width="250" height="44" rx="6" fill="#f3f5f7" '
            'stroke="#8c959f"/>'
        )
        svg.append(_t(x_route + 10, y + 27, f"http[{i}] {row.label}"[:34]))
        for split in row.splits:
            colour = _colour(colours, split.subset)
            ys = subset_y.get(split.subset, y) + 22
            stroke = max(1.5, split.weight / 8)
            svg.append(
                f'<path d="M{x_route + 250},{y + 22} C{x_route + 320},{y + 22} '
                f'{x_subset - 70},{ys} {x_subset},{ys}" fill="none" stroke="{colour}" '
                f'stroke-width="{stroke:.1f}" opacity="{0.35 if split.weight == 0 else 0.9}"/>'
            )
            svg.append(
                _t(
                    x_subset - 52,
                    ys - 7,
                    f"{split.weight}%",
                    f'class="weight" data-route="{i}" '
                    f'data-subset="{escape(split.subset, quote=True)}" '
                    f'data-weight="{split.weight}" fill="{colour}" font-weight="600" '
                    'stroke="#fff" stroke-width="4" paint-order="stroke"',
                )
            )
    known = {s.name: s for s in view.subsets}
    for name in order:
        y = subset_y[name]
        colour = _colour(colours, name)
        subset = known.get(name)
        svg.append(
            f'<rect x="{x_subset}" y="{y}" width="190" height="44" rx="6" fill="#fff" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        labels = ", ".join(f"{k}={v}" for k, v in (subset.labels if subset else {}).items())
        svg.append(_t(x_subset + 10, y + 19, f"subset {name or '(all)'}", 'font-weight="600"'))
        svg.append(
            _t(x_subset + 10, y + 36, labels or ("not defined" if name else ""), 'fill="#66707a"')
        )
        workloads = ", ".join(subset.workloads) if subset else ""
        svg.append(
            _t(
                x_work,
                y + 27,
                workloads or ("no workload selected" if subset else ""),
                f'class="workloads" data-subset="{escape(name, quote=True)}"',
            )
        )
    svg.append(_t(x_route, top - 14, "Routes sent to each proxy for this host, by sync state:"))
    y = top
    if not view.holdings:
        svg.append(_t(x_route, y + 16, "no connected proxy has a route for this host", ""))
        y += 30
    for holding in view.holdings:
        svg.append(_holding(holding, colours, x_route, y))
        y += 40
    height = y + 10
    details = []
    if view.ignored:
        details.append(
            "<p class='err'>Also claiming this host, not applied (istiod applies the oldest; "
            f"IST0109): {escape(', '.join(view.ignored))}</p>"
        )
    if view.destination_rule:
        details.append(
            f"<p class='muted'>DestinationRule: {escape(', '.join(view.destination_rule))}</p>"
        )
    return (
        f'<section id="routing" data-host="{escape(view.host, quote=True)}">'
        f"<h2>Routing of {escape(view.host)}</h2>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(svg)}</svg>{"".join(details)}</section>'
    )


def _short(node_id: str) -> str:
    """``sidecar~10.0.0.1~reviews-v1-abc.default~default.svc.cluster.local`` -> the pod part."""
    parts = node_id.split("~")
    return parts[2] if len(parts) == 4 else node_id


_HOLDS = {
    "SYNCED": "SYNCED (ACKed)",
    "STALE": "STALE (sent, no ACK yet)",
    "NACKED": "NACKED (rejected)",
}


def _holding(holding: Holding, colours: list[str], x: float, y: float) -> str:
    bar, left = [], x + 270.0
    for subset, weight in holding.weights:
        w = 3.0 * weight
        if w:
            bar.append(
                f'<rect x="{left:.0f}" y="{y}" width="{w:.0f}" height="24" '
                f'fill="{_colour(colours, subset)}"/>'
            )
            if w > 40:
                bar.append(_t(left + 6, y + 17, f"{subset or '-'} {weight}%", 'fill="#fff"'))
        left += w
    count = len(holding.proxies)
    names = ", ".join(_short(p) for p in holding.proxies[:4]) + (" ..." if count > 4 else "")
    fill = {"SYNCED": "#dcf5e3", "STALE": "#fff3c4", "NACKED": "#ffd9d6"}.get(
        holding.status, "#eef0f2"
    )
    return (
        f'<g class="holds" data-weights="{escape(holding.key, quote=True)}" '
        f'data-status="{_cls(holding.status)}" data-count="{count}">'
        f'<rect x="{x}" y="{y}" width="260" height="24" rx="4" fill="{fill}"/>'
        + _t(
            x + 8,
            y + 17,
            f"{count} {'proxy' if count == 1 else 'proxies'} {_HOLDS.get(holding.status, holding.status)}",
        )
        + "".join(bar)
        + _t(x + 590, y + 17, names, 'fill="#66707a"')
        + "</g>"
    )
