"""How far each connected proxy has got: the xDS side's answer to "has my change arrived?".

Read by the Programmed condition (``status/programmed.py``) through ``ProxyProgress``: for
every identified stream, whether the proxy has ACKed, for every type it subscribed to, exactly
what the cache answers for it now (``current``), and the NACKs it sent for the version it was
last sent. Computed from the streams' own delivery state (``state.py``) and the shared views,
so a thousand proxies of one shape cost a thousand dictionary lookups, not a thousand diffs.
Nothing here builds a resource; asking the watch may make the cache compile a shape that a
push would have compiled anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.cache.interface import Proxy
from controlplane.xds.delivery import Delivery
from controlplane.xds.state import short


@dataclass(frozen=True)
class NackReport:
    """A NACK of the version a proxy was last sent, as Envoy worded it."""

    type: str  # short type name: LDS, RDS, CDS, EDS, SDS
    message: str
    resource_names: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class ProxyProgress:
    """One connected proxy: whether it runs what the cache answers now, and its NACKs."""

    stream: str
    node_id: str
    proxy: Proxy
    current: bool
    nacks: tuple[NackReport, ...] = ()


def proxy_progress(delivery: Delivery) -> list[ProxyProgress]:
    """The progress of every identified stream of ``delivery`` (see the module docstring)."""
    out = []
    views = delivery.views
    for stream in list(delivery.streams.values()):
        proxy = stream.proxy
        watch: Any = getattr(stream, "watch", None)
        states: Any = getattr(stream, "states", None)
        if proxy is None or watch is None or states is None:
            continue
        current = True
        nacks = []
        for type_url, state in list(states.items()):
            if not state.subscribed:
                continue
            nack = state.nack
            if nack is not None and nack.version == state.sent_version:
                nacks.append(
                    NackReport(
                        short(type_url).upper(), nack.message, tuple(nack.resource_names), nack.at
                    )
                )
            if not current:
                continue
            try:
                view = views.view(watch.resources(type_url), state.wildcard, state.names)
            except Exception:  # the push reports a compile failure; here it is "not yet"
                current = False
                continue
            if state.push_error is not None or views.version(view) != state.acked_version:
                current = False
        out.append(ProxyProgress(stream.id, proxy.node_id, proxy, current, tuple(nacks)))
    return out
