"""What a generator does when one resource fails to compile for one proxy: pass it over and
say so once in the log.

The store's compile check (``check.py``) refuses a resource that fails to compile against the
mesh before any proxy sees it; a failure it could not see (one that shows for one proxy
only) is caught where the resource is used, and the resource is passed over there.
"""

from __future__ import annotations

import logging

from controlplane.api.networking import VirtualService
from controlplane.api.text import printable
from controlplane.compile.proxy import Proxy

log = logging.getLogger("controlplane.compile")


def log_passed_over(vs: VirtualService, hostname: str, port: int, proxy: Proxy) -> None:
    """Log (with the exception being handled) that ``vs`` is passed over for ``proxy``."""
    log.exception(
        "VirtualService %s/%s failed to compile for %s port %d (proxy %s): passed over",
        vs.metadata.namespace,
        vs.metadata.name,
        hostname,
        port,
        printable(proxy.node_id),
    )
