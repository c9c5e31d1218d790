"""CSDS (Client Status Discovery Service): what each connected proxy was sent and whether it
ACKed or NACKed it, in Envoy's own ``ClientConfig`` form, so standard tooling can read it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

from envoy.admin.v3 import config_dump_shared_pb2 as dump
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2
from google.protobuf import timestamp_pb2

from controlplane.cache.interface import PUSH_ORDER
from controlplane.xds.delivery import Delivery
from controlplane.xds.state import TypeState

_CONFIG_STATUS = {
    "SYNCED": csds_pb2.SYNCED,
    "STALE": csds_pb2.STALE,
    "NACKED": csds_pb2.ERROR,
    "NOT SENT": csds_pb2.NOT_SENT,
    "ERROR": csds_pb2.ERROR,  # the control plane cannot build this proxy's updates
}


def _timestamp(at: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if at:
        ts.FromNanoseconds(int(at * 1e9))
    return ts


def _string_matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if kind == "exact":
        return bool(value == matcher.exact)
    if kind == "prefix":
        return value.startswith(matcher.prefix)
    if kind == "suffix":
        return value.endswith(matcher.suffix)
    if kind == "contains":
        return matcher.contains in value
    if kind == "safe_regex":
        return re.fullmatch(matcher.safe_regex.regex, value) is not None
    return True


def _selected(node_id: str, matchers: Iterable[node_pb2.NodeMatcher]) -> bool:
    matchers = list(matchers)
    if not matchers:
        return True
    return any(not m.HasField("node_id") or _string_matches(m.node_id, node_id) for m in matchers)


def _type_configs(
    state: TypeState, with_contents: bool
) -> Iterable[csds_pb2.ClientConfig.GenericXdsConfig]:
    status = state.synced
    nack = state.nack if status == "NACKED" else None
    rejected = set(nack.resource_names) if nack else set()
    for name in sorted(state.sent_view):
        resource = state.sent_view[name]
        config = csds_pb2.ClientConfig.GenericXdsConfig(
            type_url=state.type_url,
            name=name,
            version_info=resource.version,
            last_updated=_timestamp(state.sent_at),
            config_status=_CONFIG_STATUS.get(status, csds_pb2.UNKNOWN),
        )
        if with_contents:
            config.xds_config.CopyFrom(resource.any)
        if nack is not None and (name in rejected or not rejected):
            config.client_status = dump.NACKED
            config.error_state.CopyFrom(
                dump.UpdateFailureState(
                    details=nack.message,
                    version_info=nack.version,
                    last_update_attempt=_timestamp(nack.at),
                )
            )
        elif state.push_error is not None:
            config.client_status = dump.REQUESTED
            config.error_state.CopyFrom(
                dump.UpdateFailureState(
                    details=state.push_error.message,
                    last_update_attempt=_timestamp(state.push_error.at),
                )
            )
        elif status == "SYNCED":
            config.client_status = dump.ACKED
        else:
            config.client_status = dump.REQUESTED
        yield config


def client_configs(
    delivery: Delivery, request: csds_pb2.ClientStatusRequest
) -> list[csds_pb2.ClientConfig]:
    """One ClientConfig per connected proxy the request's node matchers select."""
    out = []
    for stream in list(delivery.streams.values()):
        proxy = getattr(stream, "proxy", None)
        if proxy is None or not _selected(proxy.node_id, request.node_matchers):
            continue
        node = getattr(stream, "node", None) or base_pb2.Node(id=proxy.node_id)
        config = csds_pb2.ClientConfig(node=node)
        states: dict[str, TypeState] = getattr(stream, "states", {})
        for type_url in PUSH_ORDER:
            state = states.get(type_url)
            if state is not None:
                config.generic_xds_configs.extend(
                    _type_configs(state, not request.exclude_resource_contents)
                )
        out.append(config)
    return out


class ClientStatusService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    async def FetchClientStatus(  # noqa: N802 (gRPC's name)
        self, request: csds_pb2.ClientStatusRequest, context: Any
    ) -> csds_pb2.ClientStatusResponse:
        return csds_pb2.ClientStatusResponse(config=client_configs(self.delivery, request))

    async def StreamClientStatus(  # noqa: N802 (gRPC's name)
        self, request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest], context: Any
    ) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in request_iterator:
            yield csds_pb2.ClientStatusResponse(config=client_configs(self.delivery, request))
