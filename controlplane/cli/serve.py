"""`controlplane serve`: the control plane in file mode."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from controlplane.api.issues import Issue, Level, ResourceKey
from controlplane.cache import CacheMux, CompiledCache, XdsMetrics
from controlplane.cache.interface import SECRET
from controlplane.sources.files import FileSource
from controlplane.store import ChangeSet, Snapshot, Store
from controlplane.xds.debug import DebugServer
from controlplane.xds.server import XdsServer

log = logging.getLogger("controlplane")


class ContextIssueLogger:
    """Logs, once, each in-context problem the store finds (a source logs the rest)."""

    def __init__(self, store: Store) -> None:
        self._seen: dict[ResourceKey, frozenset[Issue]] = {}
        store.subscribe(self._on_change)

    def _on_change(self, snapshot: Snapshot, change: ChangeSet) -> None:
        for key in change.status_changed | change.changed:
            status = snapshot.status.get(key)
            issues = frozenset(
                i for i in (status.issues if status else ()) if i.code.id.startswith("CP03")
            )
            before = self._seen.get(key, frozenset())
            for issue in sorted(issues - before, key=str):
                located = issue.with_context(None, status.origin if status else None)
                suffix = ""
                if issue.severity is Level.ERROR and status is not None and not status.reconciled:
                    suffix = " (keeping the last good version)"
                level = logging.ERROR if issue.severity is Level.ERROR else logging.WARNING
                log.log(level, "%s%s", located, suffix)
            for issue in sorted(before - issues, key=str):
                log.info(
                    "resolved: %s", issue.with_context(None, status.origin if status else None)
                )
            if issues:
                self._seen[key] = issues
            else:
                self._seen.pop(key, None)


async def serve(
    config_dir: Path,
    *,
    host: str = "127.0.0.1",
    xds_port: int = 15010,
    debug_port: int = 15014,
    debounce: float = 0.1,
    max_delay: float = 10.0,
    ca_dir: Path | None = None,
    trust_domain: str = "cluster.local",
    workload_cert_ttl: float = 24 * 3600.0,
    require_token: bool = False,
    token_audience: str = "controlplane-xds",
    xds_tls: bool = False,
    endpoint_max_delay: float = 1.0,
) -> None:
    if not config_dir.is_dir():
        raise SystemExit(f"controlplane serve: {config_dir} is not a directory")
    store = Store()
    ContextIssueLogger(store)
    source = FileSource(config_dir, store)
    source.scan()
    metrics = XdsMetrics()
    hub = CompiledCache(
        store,
        debounce=debounce,
        max_delay=max_delay,
        endpoint_max_delay=endpoint_max_delay,
        metrics=metrics,
    )
    security = None
    credentials = None
    if ca_dir is not None:
        from controlplane.ca import CAError
        from controlplane.cli.security import enable_security

        try:
            security = enable_security(
                ca_dir=ca_dir,
                trust_domain=trust_domain,
                workload_ttl=workload_cert_ttl,
                require_token=require_token,
                audience=token_audience,
            )
        except (CAError, ValueError, OSError) as exc:
            raise SystemExit(f"controlplane serve: --ca-dir {ca_dir}: {exc}") from None
        credentials = security.server_credentials() if xds_tls else None
    elif xds_tls or require_token:
        raise SystemExit("controlplane serve: --xds-tls and --require-token need --ca-dir")
    if security is None:
        xds = XdsServer(CacheMux(hub), metrics=metrics)
    else:
        xds = XdsServer(
            CacheMux(hub, {SECRET: security.provider}),
            authenticator=security.authenticator,
            metrics=metrics,
            services=[security.certificates],
        )
    debug = DebugServer(xds, hub)
    hub.start()
    bound_xds = await xds.start(host, xds_port, credentials)
    if security is not None:
        security.start()
    bound_debug = await debug.start(host, debug_port)
    snapshot = store.snapshot
    log.info(
        "serving %d resources from %s: xDS on %s:%d, debug on http://%s:%d",
        sum(len(v) for v in snapshot.resources.values()),
        config_dir,
        host,
        bound_xds,
        host,
        bound_debug,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(source.run(), name="file-source")
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        watcher.cancel()
        if security is not None:
            await security.stop()
        await debug.stop()
        await xds.stop(grace=0.5)
        await hub.stop()
