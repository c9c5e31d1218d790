"""On-demand delivery: virtual hosts over VHDS and outbound clusters over on-demand CDS, for a
sidecar that opts in (node metadata ``ON_DEMAND: "true"``, ``Proxy.on_demand``).

Such a sidecar's route configurations carry no virtual host, only ``vhds`` (ADS, Delta). A
request whose Host no virtual host matches makes Envoy's ``envoy.filters.http.on_demand``
filter (first in the outbound HTTP filters, ``outbound.on_demand_filter``) subscribe to
``<route configuration>/<Host>``; the answer is the virtual host the full table would have
matched for that Host, renamed to that alias and with that Host as its only domain (so two
aliases never carry the same domain, which Envoy would reject). A change to one service's
routes then reaches only the proxies that asked for its host, and carries that one host.

Why no virtual host at all, not even the proxy's own namespace's: whatever the route
configuration carries is resent whole on every change to any of it, and a namespace can be
most of the mesh; the first request to a host costs one round trip to the control plane
(about a millisecond on loopback), once per host and proxy.

The same filter fetches clusters: a route's cluster that Envoy does not have is subscribed
to by name. A wildcard CDS subscription of an on-demand proxy gets every cluster except the
outbound clusters of HTTP service ports (``OnDemandMap.eager``); those are sent by name. TCP
ports (and sniffed ports, whose TCP chains name their cluster) keep their clusters eager:
only HTTP routes pass through the filter.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from controlplane.compile.protos import ads_source
from controlplane.compile.resources import CompiledResource, OnDemandMap

__all__ = [
    "VirtualHostMap",
    "alias_host",
    "on_demand_route_configuration",
]

_NOTHING: Mapping[str, CompiledResource] = {}
# Separates a route configuration's name from a virtual host's in the keys of the canonical
# hosts: never in a Host header, so never confused with an alias ``<config>/<host>``.
_CANONICAL = "#"
_MAX_REMEMBERED = 20_000


def on_demand_route_configuration(name: str) -> route_pb2.RouteConfiguration:
    """A route configuration whose virtual hosts all come over VHDS."""
    return route_pb2.RouteConfiguration(
        name=name,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        vhds=route_pb2.Vhds(config_source=ads_source()),
    )


def alias_host(alias: str) -> tuple[str, str] | None:
    """``"9080/reviews:9080"`` -> (``"9080"``, ``"reviews:9080"``); None if not an alias."""
    config, sep, host = alias.partition("/")
    if not sep or not config or not host:
        return None
    return config, host


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


class _HostIndex:
    """One route configuration's virtual hosts by domain, matched as Envoy matches a Host:
    exact, then ``*.suffix`` (longest first), then ``prefix.*`` (longest first), then ``*``."""

    __slots__ = ("exact", "ignore_port", "prefixes", "star", "suffixes")

    def __init__(self, config: route_pb2.RouteConfiguration) -> None:
        self.ignore_port = config.ignore_port_in_host_matching
        self.exact: dict[str, rc.VirtualHost] = {}
        suffixes: list[tuple[str, rc.VirtualHost]] = []
        prefixes: list[tuple[str, rc.VirtualHost]] = []
        self.star: rc.VirtualHost | None = None
        for host in config.virtual_hosts:
            for domain in host.domains:
                domain = domain.lower()
                if domain == "*":
                    self.star = self.star or host
                elif domain.startswith("*"):
                    suffixes.append((domain[1:], host))
                elif domain.endswith("*"):
                    prefixes.append((domain[:-1], host))
                else:
                    self.exact.setdefault(domain, host)
        self.suffixes = sorted(suffixes, key=lambda x: -len(x[0]))
        self.prefixes = sorted(prefixes, key=lambda x: -len(x[0]))

    def match(self, host: str) -> rc.VirtualHost | None:
        host = host.lower()
        if self.ignore_port:
            host = _strip_port(host)
        found = self.exact.get(host)
        if found is not None:
            return found
        for suffix, vhost in self.suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                return vhost
        for prefix, vhost in self.prefixes:
            if host.startswith(prefix) and len(host) > len(prefix):
                return vhost
        return self.star


class VirtualHostMap(OnDemandMap):
    """The virtual hosts an on-demand proxy may ask for, from its full route configurations.

    Iterating gives one canonical entry per virtual host (``<config>#<host name>``: what
    changes when a route changes, so two maps compare by their content); looking up an alias
    ``<config>/<Host>`` gives that Host's virtual host, renamed to the alias with the Host as
    its only domain (built once per map and alias). An alias no host matches is absent.
    """

    __slots__ = ("_configs", "_indexes", "_previous", "_resolved")

    def __init__(self, configs: Mapping[str, route_pb2.RouteConfiguration]) -> None:
        canonical = {
            f"{name}{_CANONICAL}{host.name}": CompiledResource(
                f"{name}{_CANONICAL}{host.name}", host
            )
            for name, config in configs.items()
            for host in config.virtual_hosts
        }
        super().__init__(canonical, _NOTHING)
        self._configs = configs
        self._indexes: dict[str, _HostIndex] = {}
        # alias -> (the virtual host it was built from, the resource; None: no match)
        self._resolved: dict[str, tuple[rc.VirtualHost | None, CompiledResource | None]] = {}
        self._previous: dict[str, tuple[rc.VirtualHost | None, CompiledResource | None]] = {}

    def inherit(self, previous: VirtualHostMap) -> None:
        """Take over what ``previous`` (the same proxies' map before a change) resolved: an
        alias whose virtual host did not change keeps its very resource (no copy, no hash,
        and streams skip it by identity), so a change to one host rebuilds and resends only
        the aliases of that host."""
        self._previous = previous._resolved

    def __getitem__(self, name: str) -> CompiledResource:
        if _CANONICAL in name:
            return super().__getitem__(name)
        entry = self._resolved.get(name)
        if entry is None:
            entry = self._resolve(name)
            # Hosts are whatever clients send: remember a bounded number per map.
            if len(self._resolved) < _MAX_REMEMBERED:
                self._resolved[name] = entry
        found = entry[1]
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except KeyError:
            return False
        return True

    def _resolve(self, alias: str) -> tuple[rc.VirtualHost | None, CompiledResource | None]:
        matched = self._match(alias)
        if matched is None:
            return None, None
        before = self._previous.get(alias)
        # Route configurations hold copies of the built hosts: compare content.
        if before is not None and before[0] is not None and before[0] == matched:
            return before
        copy = rc.VirtualHost()
        copy.CopyFrom(matched)
        copy.name = alias
        del copy.domains[:]
        copy.domains.append(alias.partition("/")[2].lower())
        return matched, CompiledResource(alias, copy)

    def _match(self, alias: str) -> rc.VirtualHost | None:
        parsed = alias_host(alias)
        if parsed is None:
            return None
        config_name, host = parsed
        config = self._configs.get(config_name)
        if config is None:
            return None
        index = self._indexes.get(config_name)
        if index is None:
            index = self._indexes[config_name] = _HostIndex(config)
        return index.match(host)
