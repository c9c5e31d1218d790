"""Compiled resources: an Envoy message, its serialized bytes and its version, built once.

Type URLs live here and only here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# VHDS (Delta only): one virtual host of a route configuration, named ``<config>/<host>``.
VIRTUAL_HOST = "type.googleapis.com/envoy.config.route.v3.VirtualHost"

# The order Envoy needs: clusters before their endpoints, listeners before their routes.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST, SECRET)
SHORT_NAMES = {
    CLUSTER: "cds",
    ENDPOINT: "eds",
    LISTENER: "lds",
    ROUTE: "rds",
    VIRTUAL_HOST: "vhds",
    SECRET: "sds",
}
BY_SHORT_NAME = {v: k for k, v in SHORT_NAMES.items()}
# Types whose first request with no names subscribes to everything.
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


def type_url_of(message: Message) -> str:
    return "type.googleapis.com/" + message.DESCRIPTOR.full_name


class CompiledResource:
    """One named xDS resource. Serialization and hashing happen once, on first use."""

    __slots__ = ("name", "type_url", "message", "_value", "_version", "_sotw", "_delta")

    def __init__(self, name: str, message: Message) -> None:
        self.name = name
        self.type_url = type_url_of(message)
        self.message = message
        self._value: bytes | None = None
        self._version: str | None = None
        self._sotw: bytes | None = None
        self._delta: bytes | None = None

    @property
    def value(self) -> bytes:
        if self._value is None:
            self._value = self.message.SerializeToString(deterministic=True)
        return self._value

    @property
    def version(self) -> str:
        """A content hash: equal resources have equal versions, on any proxy."""
        if self._version is None:
            self._version = hashlib.blake2b(self.value, digest_size=8).hexdigest()
        return self._version

    @property
    def any(self) -> any_pb2.Any:
        # Not kept: the encoded entries below are what pushes use, so a second copy of the
        # bytes inside a message would only cost memory.
        return any_pb2.Any(type_url=self.type_url, value=self.value)

    @property
    def delta_resource(self) -> discovery_pb2.Resource:
        """The Delta xDS envelope (name, version, resource)."""
        return discovery_pb2.Resource(name=self.name, version=self.version, resource=self.any)

    @property
    def sotw_entry(self) -> bytes:
        """This resource as one encoded entry of DiscoveryResponse.resources, built once and
        joined into the responses of every proxy that gets it."""
        if self._sotw is None:
            self._sotw = discovery_pb2.DiscoveryResponse(resources=[self.any]).SerializeToString(
                deterministic=True
            )
        return self._sotw

    @property
    def delta_entry(self) -> bytes:
        """This resource as one encoded entry of DeltaDiscoveryResponse.resources."""
        if self._delta is None:
            self._delta = discovery_pb2.DeltaDiscoveryResponse(
                resources=[self.delta_resource]
            ).SerializeToString(deterministic=True)
        return self._delta

    @property
    def size(self) -> int:
        """Serialized size in bytes."""
        return len(self.value)

    def __repr__(self) -> str:
        return f"CompiledResource({self.type_url.rsplit('.', 1)[-1]} {self.name!r} {self.version})"


class OnDemandMap(Mapping[str, CompiledResource]):
    """Every resource of one type an on-demand proxy may have (``all``), of which a wildcard
    subscription gets only ``eager``; the rest are sent when the proxy names them (on-demand
    CDS, VHDS). Iterating gives every resource, so comparing two maps compares all of them.
    """

    __slots__ = ("_all", "eager")

    def __init__(
        self, everything: Mapping[str, CompiledResource], eager: Mapping[str, CompiledResource]
    ) -> None:
        self._all = everything
        self.eager = eager

    def __getitem__(self, name: str) -> CompiledResource:
        return self._all[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)
