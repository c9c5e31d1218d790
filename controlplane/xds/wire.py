"""Responses encoded straight to protobuf wire bytes from pre-encoded resource entries.

A response is its fields concatenated; a repeated message field is a sequence of
(tag, length, bytes) entries. Each resource's entry is encoded once (``CompiledResource``
caches it) and a response to any number of proxies is a join of shared entries plus a few
bytes of header. gRPC sends the bytes as they are (see ``server.py``), so a push to a
thousand proxies serializes nothing a thousand times.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.cache.interface import CompiledResource

# Field numbers of envoy.service.discovery.v3.DiscoveryResponse / DeltaDiscoveryResponse.
_SOTW_VERSION, _SOTW_RESOURCES, _SOTW_TYPE, _SOTW_NONCE = 1, 2, 4, 5
_DELTA_VERSION, _DELTA_RESOURCES, _DELTA_TYPE, _DELTA_NONCE, _DELTA_REMOVED = 1, 2, 4, 5, 6


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return varint((field << 3) | 2) + varint(len(payload)) + payload


def _string(field: int, value: str) -> bytes:
    return length_delimited(field, value.encode()) if value else b""


def sotw_response(
    version: str, type_url: str, nonce: str, resources: Sequence[CompiledResource]
) -> bytes:
    """A serialized DiscoveryResponse (one join: the shared entries are copied once)."""
    parts = [_string(_SOTW_VERSION, version)]
    parts.extend([r.sotw_entry for r in resources])
    parts.append(_string(_SOTW_TYPE, type_url))
    parts.append(_string(_SOTW_NONCE, nonce))
    return b"".join(parts)


def delta_response(
    version: str,
    type_url: str,
    nonce: str,
    resources: Sequence[CompiledResource],
    removed: Iterable[str],
    missing: Iterable[str] = (),
) -> bytes:
    """A serialized DeltaDiscoveryResponse (one join: the shared entries are copied once).
    ``missing`` names get an entry with no resource: VHDS's answer to an alias that
    matches nothing."""
    parts = [_string(_DELTA_VERSION, version)]
    parts.extend([r.delta_entry for r in resources])
    parts.extend(
        length_delimited(
            _DELTA_RESOURCES,
            discovery_pb2.Resource(name=name, aliases=[name]).SerializeToString(),
        )
        for name in missing
    )
    parts.append(_string(_DELTA_TYPE, type_url))
    parts.append(_string(_DELTA_NONCE, nonce))
    parts.extend(_string(_DELTA_REMOVED, name) for name in removed)
    return b"".join(parts)
