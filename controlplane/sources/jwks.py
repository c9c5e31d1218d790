"""The JSON Web Key Sets that RequestAuthentications name by ``jwksUri``, fetched by the
control plane so that proxies need no way out to the issuer (istiod's JwksResolver,
``pilot/pkg/model/jwks_resolver.go``).

``JwksFetcher`` watches the store for the URIs the effective RequestAuthentications name (a
``jwksUri``, or for a rule with an issuer alone the issuer's OpenID discovery document),
fetches each with the rule's timeout (5 s by default), and puts what it knows into the store
as a ``JwksKeySet`` pseudo-resource under ``jwks_key(uri)``: the compiler inlines its keys,
and only proxies whose rules name that URI are recompiled when it changes.

- A first fetch that fails is retried with exponential backoff (``retry_interval`` doubling
  up to ``refresh_interval``); until one succeeds, the key set has no keys and the compiler
  makes tokens of that issuer fail (istiod's fail-closed fallback). Nothing else waits for it.
- A good key set is refreshed every ``refresh_interval`` (istiod: 20 minutes). When a refresh
  fails, the last good key set stays in effect (tokens signed by its keys keep passing), the
  failure is logged once and recorded on the key set (``error``, ``failing_since``), which the
  RequestAuthentication's status and ``analyze`` report, and retries back off as above.
- A key set not refreshed successfully for ``eviction`` (istiod: 7 days) is dropped: tokens
  of its issuer are refused from then on, as istiod does when it evicts a cached key set.
- A response that is not a JSON Web Key Set is a failure like any other: it never replaces
  a good key set.
- As istiod does (``jwksBlockedIP``), no connection is made to a link-local address or a
  well-known cloud metadata address, whatever the URI's host resolves to (redirects
  included): the check is made on the address of each socket before it connects.

The store is touched only from the event loop that runs the fetcher (as every source does)
and only when what it would hold changes: the key set, or whether the issuer is failing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from controlplane.api.issues import ResourceKey
from controlplane.api.request_authn import (
    DISCOVERY_SUFFIX,
    JWKS_KEY_SET_KIND,
    JwksKeySetSpec,
    RequestAuthentication,
    fetch_timeout,
    jwks_key,
    jwks_key_set,
    key_source,
    parse_jwks,
)
from controlplane.store.snapshot import Snapshot
from controlplane.store.store import ChangeSet, Store, Submission

log = logging.getLogger("controlplane.jwks")

DEFAULT_REFRESH_INTERVAL = 20 * 60.0  # istiod's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL
DEFAULT_RETRY_INTERVAL = 1.0
# A key set not refreshed successfully for this long is dropped (istiod's
# JwtPubKeyEvictionDuration): tokens of its issuer are refused from then on.
DEFAULT_EVICTION = 7 * 24 * 3600.0
_MAX_BODY = 1 << 20  # a key set larger than 1 MiB is not one
# Cloud metadata services outside the link-local ranges (Alibaba, AWS IPv6, Oracle).
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "192.0.0.192")
)


def blocked_address(address: str) -> str | None:
    """Why the control plane refuses to fetch a key set from ``address``, or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip in _METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    return None


def _guarded_socket(addr_info: Any) -> socket.socket:
    """aiohttp's socket factory, refusing blocked addresses (see the module docstring)."""
    family, kind, proto, _, sockaddr = addr_info
    reason = blocked_address(str(sockaddr[0]))
    if reason is not None:
        raise OSError(f"connection blocked: {reason}")
    return socket.socket(family=family, type=kind, proto=proto)


class FetchError(Exception):
    """A key set could not be fetched or is not one."""


@dataclass
class _Uri:
    uri: str
    timeout: float
    spec: JwksKeySetSpec
    task: asyncio.Task[None] | None = None
    refreshed_at: float = 0.0  # the last successful fetch (monotonic)


class JwksFetcher:
    """Fetches and refreshes the key sets of the store's RequestAuthentications (module doc)."""

    def __init__(
        self,
        store: Store,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        eviction: float = DEFAULT_EVICTION,
    ) -> None:
        self.store = store
        self.refresh_interval = refresh_interval
        self.eviction = eviction
        self.retry_interval = min(retry_interval, refresh_interval)
        self._uris: dict[str, _Uri] = {}
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0  # attempts so far (tests, metrics)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=_guarded_socket),
            headers={"Accept": "application/json"},
            trust_env=False,
        )
        self.store.subscribe(self._on_change)
        self._sync(self.store.snapshot)
        try:
            yield
        finally:
            for entry in self._uris.values():
                if entry.task is not None:
                    entry.task.cancel()
            await asyncio.gather(
                *(e.task for e in self._uris.values() if e.task is not None),
                return_exceptions=True,
            )
            await self._session.close()

    # ---- which URIs -------------------------------------------------------------------------

    def _on_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        # Never apply to the store from inside its own listener call (other listeners have
        # yet to see this snapshot): look again once it returned.
        if "RequestAuthentication" in change.kinds:
            asyncio.get_running_loop().call_soon(self._resync)

    def _resync(self) -> None:
        if self._session is not None and not self._session.closed:
            self._sync(self.store.snapshot)

    def _sync(self, snapshot: Snapshot) -> None:
        wanted: dict[str, float] = {}
        for ra in snapshot.of_kind(RequestAuthentication).values():
            for rule in ra.spec.jwt_rules:
                source = key_source(rule)
                if source is not None:
                    wanted[source] = max(wanted.get(source, 0.0), fetch_timeout(rule))
        for uri in sorted(set(self._uris) - set(wanted)):
            entry = self._uris.pop(uri)
            if entry.task is not None:
                entry.task.cancel()
            self._publish_delete(jwks_key(uri))
        for uri, timeout in sorted(wanted.items()):
            known = self._uris.get(uri)
            if known is not None:
                known.timeout = timeout
                continue
            entry = _Uri(uri, timeout, JwksKeySetSpec(uri=uri))
            self._uris[uri] = entry
            entry.task = asyncio.get_running_loop().create_task(
                self._keep_fresh(entry), name=f"jwks {uri}"
            )

    # ---- fetching ---------------------------------------------------------------------------

    async def _keep_fresh(self, entry: _Uri) -> None:
        failures = 0
        while True:
            try:
                text = await self._fetch_key_set(entry.uri, entry.timeout)
            except FetchError as exc:
                failures += 1
                self._failed(entry, str(exc))
                delay = min(self.refresh_interval, self.retry_interval * 2 ** (failures - 1))
            else:
                failures = 0
                self._fetched(entry, text)
                delay = self.refresh_interval
            await asyncio.sleep(delay)

    async def _fetch_key_set(self, uri: str, timeout: float) -> str:
        """The key set at ``uri`` (through OpenID discovery for an issuer's document)."""
        if uri.endswith(DISCOVERY_SUFFIX):
            doc = await self._get(uri, timeout)
            try:
                found = json.loads(doc).get("jwks_uri")
            except (ValueError, AttributeError) as exc:
                raise FetchError(f"OpenID discovery document is not JSON ({exc})") from None
            if not isinstance(found, str) or not found:
                raise FetchError("OpenID discovery document names no jwks_uri")
            uri = found
        text = await self._get(uri, timeout)
        _, reason = parse_jwks(text)
        if reason is not None:
            raise FetchError(f"response is not a JSON Web Key Set: {reason}")
        return text

    async def _get(self, uri: str, timeout: float) -> str:
        assert self._session is not None
        self.fetches += 1
        try:
            async with self._session.get(
                uri, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=True
            ) as response:
                if response.status != 200:
                    raise FetchError(f"GET {uri}: HTTP {response.status}")
                body = await response.content.read(_MAX_BODY + 1)
        except aiohttp.ClientConnectorError as exc:
            # A blocked address is refused by our socket factory: say why, not "[None]".
            blocked = exc.os_error.errno is None and str(exc.os_error).startswith("connection")
            text = str(exc.os_error) if blocked else f"{type(exc).__name__}: {exc}"
            raise FetchError(f"GET {uri}: {text}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FetchError(f"GET {uri}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        if len(body) > _MAX_BODY:
            raise FetchError(f"GET {uri}: response larger than {_MAX_BODY} bytes")
        return body.decode("utf-8", errors="replace")

    # ---- what the store holds ---------------------------------------------------------------

    def _fetched(self, entry: _Uri, text: str) -> None:
        entry.refreshed_at = time.monotonic()
        old = entry.spec
        if old.error:
            log.info("JWKS from %s fetched again after failing since %s", entry.uri, _at(old))
        if old.jwks == text and not old.error:
            return
        fetched_at = old.fetched_at if old.jwks == text else time.time()
        if old.jwks is not None and old.jwks != text:
            log.info("JWKS from %s changed: proxies that use it are updated", entry.uri)
        self._publish(entry, JwksKeySetSpec(uri=entry.uri, jwks=text, fetched_at=fetched_at))

    def _failed(self, entry: _Uri, reason: str) -> None:
        old = entry.spec
        if old.jwks is not None and time.monotonic() - entry.refreshed_at >= self.eviction:
            log.warning(
                "JWKS from %s not refreshed for %.0f s (%s): the key set is dropped, tokens of "
                "its issuer are refused until it is fetched again",
                entry.uri,
                self.eviction,
                reason,
            )
            began = old.failing_since or time.time()
            self._publish(entry, JwksKeySetSpec(uri=entry.uri, error=reason, failing_since=began))
            return
        if old.error == reason:
            return
        if not old.error:
            if old.jwks is None:
                log.warning(
                    "JWKS from %s could not be fetched (%s): tokens of its issuer are refused "
                    "until it is",
                    entry.uri,
                    reason,
                )
            else:
                log.warning(
                    "JWKS from %s could not be refreshed (%s): the key set fetched at %s stays "
                    "in effect",
                    entry.uri,
                    reason,
                    _at(old),
                )
        since = old.failing_since if old.error else time.time()
        self._publish(entry, old.model_copy(update={"error": reason, "failing_since": since}))

    def _publish(self, entry: _Uri, spec: JwksKeySetSpec) -> None:
        entry.spec = spec
        self.store.apply(upserts=[Submission(jwks_key_set(spec))])

    def _publish_delete(self, key: ResourceKey) -> None:
        if self.store.snapshot.of_kind(JWKS_KEY_SET_KIND).get(key) is not None:
            self.store.apply(deletes=[key])


def _at(spec: JwksKeySetSpec) -> str:
    moment = spec.failing_since if spec.error else spec.fetched_at
    if moment is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
