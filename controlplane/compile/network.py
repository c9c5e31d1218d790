"""Network-level building blocks shared by inbound and outbound listeners: the TCP proxy
filter, and the listener filters (original_dst, tls_inspector, http_inspector) a listener needs
given its filter chains, decided as istiod decides them (``populateListenerFilters``)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.v3 import range_pb2

from controlplane.compile.filters import (
    HTTP_INSPECTOR_FILTER,
    ORIGINAL_DST_FILTER,
    TCP_PROXY_FILTER,
    TLS_INSPECTOR_FILTER,
)
from controlplane.compile.protos import packed, uint32

HTTP_APPLICATION_PROTOCOLS = ("http/1.1", "h2c")
TLS_TRANSPORT = "tls"


def tcp_proxy(stat_prefix: str, clusters: Sequence[tuple[str, int]]) -> lc.Filter:
    """A TCP proxy to one cluster, or split by relative weight over several."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        proxy.weighted_clusters.CopyFrom(
            tcp_proxy_pb2.TcpProxy.WeightedCluster(
                clusters=[
                    tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight)
                    for name, weight in clusters
                ]
            )
        )
    return lc.Filter(name=TCP_PROXY_FILTER, typed_config=packed(proxy))


def tcp_proxy_chain(
    name: str, cluster: str, match: lc.FilterChainMatch | None = None
) -> lc.FilterChain:
    chain = lc.FilterChain(name=name, filters=[tcp_proxy(cluster, [(cluster, 1)])])
    if match is not None:
        chain.filter_chain_match.CopyFrom(match)
    return chain


def original_dst() -> lc.ListenerFilter:
    return lc.ListenerFilter(
        name=ORIGINAL_DST_FILTER, typed_config=packed(original_dst_pb2.OriginalDst())
    )


def destination_port_match(port: int) -> lc.FilterChainMatch:
    return lc.FilterChainMatch(destination_port=uint32(port))


def _port_predicate(ports: Sequence[int]) -> lc.ListenerFilterChainMatchPredicate:
    rules = [
        lc.ListenerFilterChainMatchPredicate(
            destination_port_range=range_pb2.Int32Range(start=p, end=p + 1)
        )
        for p in ports
    ]
    if len(rules) == 1:
        return rules[0]
    return lc.ListenerFilterChainMatchPredicate(
        or_match=lc.ListenerFilterChainMatchPredicate.MatchSet(rules=rules)
    )


def listener_filters(
    chains: Sequence[lc.FilterChain], with_original_dst: bool
) -> list[lc.ListenerFilter]:
    """The listener filters ``chains`` need, in Envoy's required order.

    A chain matching ``transport_protocol: tls`` needs the TLS inspector; one matching HTTP
    application protocols needs the HTTP inspector (which must come after the TLS one). Each
    inspector is switched off for the destination ports where no chain needs it, so that a
    server-first protocol on a declared TCP port is never held waiting for client bytes.
    """
    out = [original_dst()] if with_original_dst else []
    needs: dict[int, tuple[bool, bool]] = {}  # port (0 = any) -> (tls, http)
    for chain in chains:
        match = chain.filter_chain_match
        port = match.destination_port.value if match.HasField("destination_port") else 0
        tls, http = needs.get(port, (False, False))
        tls = tls or match.transport_protocol == TLS_TRANSPORT
        http = http or any(p in HTTP_APPLICATION_PROTOCOLS for p in match.application_protocols)
        needs[port] = (tls, http)
    for index, filter_name, message in (
        (0, TLS_INSPECTOR_FILTER, tls_inspector_pb2.TlsInspector()),
        (1, HTTP_INSPECTOR_FILTER, http_inspector_pb2.HttpInspector()),
    ):
        enabled = sorted(p for p, flags in needs.items() if flags[index])
        if not enabled:
            continue
        listener_filter = lc.ListenerFilter(name=filter_name, typed_config=packed(message))
        if 0 in enabled:
            # Wanted on unmatched ports: switch it off where every chain is explicit.
            off = sorted(p for p, flags in needs.items() if p and not flags[index])
            if off:
                listener_filter.filter_disabled.CopyFrom(_port_predicate(off))
        else:
            listener_filter.filter_disabled.CopyFrom(
                lc.ListenerFilterChainMatchPredicate(not_match=_port_predicate(enabled))
            )
        out.append(listener_filter)
    return out
