"""State-of-the-World ADS: one stream per proxy, every type multiplexed on it.

Listeners and clusters are sent whole (the proxy deletes what a response leaves out). For
the other types (routes, endpoints, secrets) Envoy updates only the resources a response
contains, so after the first response only the resources whose version moved are sent:
an endpoint change sends one ClusterLoadAssignment, not all of them.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.cache.interface import CLUSTER, ENDPOINT, PUSH_ORDER, WILDCARD_TYPES
from controlplane.xds import wire
from controlplane.xds.state import Nack, Pending, TypeState
from controlplane.xds.stream import BaseStream, proxy_from_request_node

log = logging.getLogger("controlplane.xds")

__all__ = ["SotwStream", "proxy_from_request_node"]


class SotwStream(BaseStream):
    protocol = "sotw"

    def _handle(self, request: discovery_pb2.DiscoveryRequest) -> bool:
        found = self._type_state(request.type_url, request.response_nonce)
        if found is None:
            return False
        state, _ = found
        nonce = request.response_nonce
        if not nonce:
            state.subscribe(request.resource_names, initial=True)
            state.names = self.delivery.canonical_names(state.names)
            state.force = True
            return True
        if nonce != state.sent_nonce:
            # A reply to an older response: the newer one is on its way. An ACK of it still
            # says which version the proxy runs.
            older = state.pending.pop(nonce, None)
            if older is not None and not request.HasField("error_detail"):
                self._acked(state, older.version, older.change_seen_at)
            return False
        pending = state.pending.pop(nonce, None)
        if request.HasField("error_detail"):
            if pending is not None:
                self._nacked(state, nonce, request.error_detail.message)
        elif pending is not None:
            self._acked(state, request.version_info or pending.version, pending.change_seen_at)
        if state.subscribe(request.resource_names, initial=False):
            state.names = self.delivery.canonical_names(state.names)
            return True
        return False

    def _empty_response(self, type_url: str, nonce: str) -> bytes:
        return wire.sotw_response("", type_url, nonce, resources=[])

    def _nacked(self, state: TypeState, nonce: str, message: str) -> None:
        nack = Nack(
            version=state.sent_version,
            nonce=nonce,
            message=message,
            at=time.time(),
            resource_names=tuple(state.sent_view),
        )
        self._report_nack(state, nack)

    def _responses(self) -> list[bytes]:
        resources = self._current_resources()
        views = self.delivery.views
        out: list[bytes] = []
        for type_url in PUSH_ORDER:
            state = self.states.get(type_url)
            if state is None or not state.subscribed:
                continue
            view = views.view(resources[type_url], state.wildcard, state.names)
            urgent = state.force or bool(state.force_names)
            if view is state.sent_view and not urgent:
                continue
            version = views.version(view)
            if version == state.sent_version and not urgent:
                state.sent_view = view
                continue
            first = not state.sent_version
            if state.force or first or type_url in WILDCARD_TYPES:
                names = list(view)
            else:
                diff = views.diff(state.sent_view, view)
                extra = [n for n in state.force_names if n in view and n not in diff.changed]
                names = sorted([*diff.changed, *extra])
            if type_url == CLUSTER and not first:
                # Envoy re-warms a changed cluster and waits for its endpoints again.
                eds = self.states.get(ENDPOINT)
                if eds is not None and eds.subscribed:
                    changed = views.diff(state.sent_view, view).changed
                    eds.force_names.update(n for n in changed if n in state.sent_view)
            if not names and not state.force and not first and type_url not in WILDCARD_TYPES:
                # Only removals, which SotW does not signal for these types: the proxy
                # drops them when their cluster or listener goes. (Listeners and clusters
                # are the whole state each time: an empty list removes the last of them, as
                # when a gateway loses its only Gateway.)
                if state.acked_version == state.sent_version:
                    state.acked_version = version
                state.sent_version, state.sent_view = version, view
                state.force_names.clear()
                continue
            selected = [view[n] for n in names]
            size = sum(r.size for r in selected)
            nonce, response = self._encoded(
                state,
                ("sotw", type_url, version),
                selected,
                partial(wire.sotw_response, version, type_url, resources=selected),
            )
            out.append(response)
            change_seen_at = self._change_seen_at()
            state.pending[nonce] = Pending(version, change_seen_at)
            while len(state.pending) > 4:
                del state.pending[next(iter(state.pending))]
            state.sent_version = version
            state.sent_nonce = nonce
            state.sent_at = time.time()
            state.sent_view = view
            state.change_seen_at = change_seen_at
            state.force = False
            state.force_names.clear()
            self._count(type_url, len(selected), size)
        return out
