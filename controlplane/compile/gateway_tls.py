"""Gateway servers with TLS settings: the filter chains of an HTTPS or TLS server.

``compile/gateway.py`` builds every gateway listener and hands each server that has TLS
settings on an HTTPS/TLS port to ``tls_server_chains``. Terminated servers (SIMPLE, MUTUAL,
ISTIO_MUTUAL) get an SNI-matched chain with a DownstreamTlsContext and the HTTP connection
manager on the server's ``https.<number>.<port name>.<gateway>.<namespace>`` routes;
PASSTHROUGH servers get SNI-matched tcp_proxy chains from VirtualService ``tls:`` routes.

This module belongs to the TLS part of issue 13 ("gwtls"); until it lands, a TLS server
yields no chain (and its Gateway's ``tls`` fields are reported as not supported yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envoy.config.listener.v3 import listener_components_pb2 as lc

if TYPE_CHECKING:
    from controlplane.compile.gateway import GatewayServer, ListenerPort
    from controlplane.compile.proxy import Proxy
    from controlplane.store.reads import SnapshotReader


def tls_server_chains(
    snapshot: SnapshotReader, proxy: Proxy, listener: ListenerPort, server: GatewayServer
) -> list[lc.FilterChain]:
    """The filter chains of one server with TLS settings on ``listener`` (reads through
    ``snapshot``: VirtualService ``tls`` routes for PASSTHROUGH, ``tcp`` routes for a
    terminated TLS server, see ``gateway.tcp_route_filter``)."""
    return []
