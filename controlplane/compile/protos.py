"""Small builders for Envoy protobuf pieces used across generators."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, config_source_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

# The longest duration Envoy accepts (its strict duration check: seconds and nanoseconds
# together must fit an int64 of nanoseconds, about 292 years), shorter than protobuf's own
# limit. Istio accepts durations up to protobuf's; anything longer than Envoy's is, for a
# proxy, forever, so it is sent as Envoy's longest rather than refused.
ENVOY_MAX_DURATION_SECONDS = (2**63 - 1 - 999_999_999) // 1_000_000_000


def duration(seconds: float) -> duration_pb2.Duration:
    if seconds >= ENVOY_MAX_DURATION_SECONDS:
        return duration_pb2.Duration(seconds=ENVOY_MAX_DURATION_SECONDS)
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1_000_000_000:  # 0.9999999999 s rounds up to a whole second
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return duration_pb2.Duration(seconds=whole, nanos=nanos)


def uint32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def packed(message: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )
