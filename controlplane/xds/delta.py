"""Delta (incremental) ADS: per-resource versions, only changes on the wire.

Per type the server knows which version of each resource the proxy holds: the shared view
it was last brought up to (``TypeState.sent_view``) plus per-proxy exceptions
(``overrides``: declared in ``initial_resource_versions`` on reconnect, or kept after a
NACK). A push sends the resources whose version differs and names the deleted ones in
``removed_resources``. A rejected version is remembered and not offered again until the
resource changes.

Subscriptions: the first request of Listener or Cluster with no names (or ``*``) is a
wildcard subscription; other names are added by ``resource_names_subscribe`` and dropped by
``resource_names_unsubscribe``.
"""

from __future__ import annotations

import logging
import sys
import time
from functools import partial

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.cache.interface import (
    CLUSTER,
    ENDPOINT,
    PUSH_ORDER,
    ROUTE,
    VIRTUAL_HOST,
    WILDCARD_TYPES,
)
from controlplane.xds import wire
from controlplane.xds.state import Nack, Pending, TypeState
from controlplane.xds.stream import BaseStream

log = logging.getLogger("controlplane.xds")
_MAX_PENDING = 32


class DeltaStream(BaseStream):
    protocol = "delta"

    def _handle(self, request: discovery_pb2.DeltaDiscoveryRequest) -> bool:
        type_url = request.type_url
        found = self._type_state(type_url, request.response_nonce)
        if found is None:
            return False
        state, first = found
        if request.response_nonce:
            pending = state.pending.pop(request.response_nonce, None)
            if pending is not None:
                if request.HasField("error_detail"):
                    self._nacked(state, request.response_nonce, pending, request.error_detail)
                else:
                    self._acked(state, pending.version, pending.change_seen_at)
                    if state.nacked:
                        for name in pending.names:
                            state.nacked.pop(name, None)
        subscribe = list(request.resource_names_subscribe)
        unsubscribe = list(request.resource_names_unsubscribe)
        if first:
            state.subscribed = True
            state.wildcard = type_url in WILDCARD_TYPES and (not subscribe or "*" in subscribe)
            state.names = self.delivery.canonical_names(
                frozenset(sys.intern(n) for n in subscribe if n != "*")
            )
            # What the proxy already has (it reconnected): only differences are sent.
            state.overrides = dict(request.initial_resource_versions)
            if type_url == VIRTUAL_HOST:
                state.force_names.update(state.names)
            return True
        if not subscribe and not unsubscribe:
            return False
        if "*" in subscribe and type_url in WILDCARD_TYPES:
            state.wildcard = True
        if "*" in unsubscribe:
            state.wildcard = False
        dropped = {n for n in unsubscribe if n != "*"}
        added = {sys.intern(n) for n in subscribe if n != "*"}
        state.names = self.delivery.canonical_names((state.names | added) - dropped)
        if type_url == VIRTUAL_HOST:
            # Asked on demand: answered even when no virtual host matches (see _responses).
            state.force_names.update(added - dropped)
        for name in dropped:
            # The proxy forgets what it unsubscribed from: nothing to remove, and a later
            # subscription must send it again.
            if not state.wildcard:
                state.overrides[name] = None
                state.nacked.pop(name, None)
        return True

    def _vhds_namespaces(self, state: TypeState) -> list[str]:
        """Envoy subscribes to VHDS with no names: each route configuration with ``vhds`` is
        a namespace (``<config>/...``), and its listener does not warm until one resource of
        that namespace arrives. An empty ``<config>/`` is sent once per route configuration
        the proxy subscribed to."""
        routes = self.states.get(ROUTE)
        if routes is None:
            return []
        new = routes.names - state.namespaces
        if not new:
            return []
        state.namespaces = state.namespaces | new
        return sorted(f"{name}/" for name in new)

    def _empty_response(self, type_url: str, nonce: str) -> bytes:
        return wire.delta_response("", type_url, nonce, resources=[], removed=())

    def _nacked(
        self,
        state: TypeState,
        nonce: str,
        pending: Pending,
        error: object,
    ) -> None:
        message = getattr(error, "message", "")
        names = pending.names
        for name in names:
            state.nacked[name] = pending.view[name].version
            state.overrides[name] = pending.prior(name)
        self._report_nack(
            state,
            Nack(
                version=pending.version,
                nonce=nonce,
                message=message,
                at=time.time(),
                resource_names=names,
            ),
        )

    def _responses(self) -> list[bytes]:
        resources = self._current_resources()
        views = self.delivery.views
        out: list[bytes] = []
        for type_url in PUSH_ORDER:
            state = self.states.get(type_url)
            if state is None or not state.subscribed:
                continue
            available = resources[type_url]
            first = not state.sent_version
            namespaces = self._vhds_namespaces(state) if type_url == VIRTUAL_HOST else []
            settled = not first and not state.overrides and not state.force_names
            sent_from = state.sent_from
            if (
                settled
                and not namespaces
                and sent_from is not None
                and sent_from[0] is available
                and sent_from[1] is state.names
                and sent_from[2] == state.wildcard
            ):
                # The same map and the same subscription as last time: nothing moved. Saves
                # rebuilding per-proxy views (on-demand proxies each name their own).
                continue
            view = views.view(available, state.wildcard, state.names)
            state.sent_from = (available, state.names, state.wildcard)
            if view is state.sent_view and settled and not namespaces:
                continue
            diff = views.diff(state.sent_view, view)
            candidates = set(diff.changed)
            candidates.update(diff.removed, state.overrides, state.force_names)
            send: list[str] = []
            removed: list[str] = []
            missing: list[str] = namespaces
            kept: dict[str, str | None] = {}
            for name in candidates:
                have = state.client_version(name)
                want = view.get(name)
                if want is None:
                    if have is not None and (state.wildcard or name in state.names):
                        removed.append(name)
                    elif type_url == VIRTUAL_HOST and name in state.force_names:
                        # VHDS: an alias nothing matches is answered with an empty resource
                        # of that name, so Envoy stops waiting (and answers 404).
                        missing.append(name)
                    continue
                forced = name in state.force_names
                if want.version == have and not forced:
                    continue
                if state.nacked.get(name) == want.version and not forced:
                    kept[name] = have  # rejected before: wait for a new version
                    continue
                send.append(name)
            if type_url == CLUSTER and not first:
                # Envoy re-warms a changed cluster and waits for its endpoints again, so
                # forget the proxy's copy of those endpoints.
                eds = self.states.get(ENDPOINT)
                if eds is not None and eds.subscribed:
                    eds.force_names.update(n for n in send if state.client_version(n))
            version = views.version(view)
            was_synced = state.acked_version == state.sent_version
            before_view, before_overrides = state.sent_view, state.overrides
            state.sent_view = view
            state.overrides = kept
            state.force_names.clear()
            if not send and not removed and not missing and not first:
                # Nothing the proxy lacks (e.g. it declared these versions on reconnect).
                state.sent_version = version
                if was_synced:
                    state.acked_version = version
                continue
            send.sort()
            removed.sort()
            missing.sort()
            selected = [view[n] for n in send]
            size = sum(r.size for r in selected)
            nonce, response = self._encoded(
                state,
                ("delta", type_url, version, tuple(removed), tuple(missing)),
                selected,
                partial(
                    wire.delta_response,
                    version,
                    type_url,
                    resources=selected,
                    removed=removed,
                    missing=missing,
                ),
            )
            out.append(response)
            change_seen_at = self._change_seen_at()
            state.pending[nonce] = Pending(
                version, change_seen_at, tuple(send), view, before_view, before_overrides
            )
            if len(state.pending) > _MAX_PENDING:
                # A proxy that never answers must not grow this without bound.
                del state.pending[next(iter(state.pending))]
            state.sent_version = version
            state.sent_nonce = nonce
            state.sent_at = time.time()
            state.change_seen_at = change_seen_at
            self._count(type_url, len(selected), size)
        return out
