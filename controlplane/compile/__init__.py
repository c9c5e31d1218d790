"""Pure compilation: (snapshot, proxy) -> the Envoy resources that proxy should have.

No I/O, no asyncio. The layout, as istiod's: one generator per xDS type (``cds``, ``eds``,
``lds``, ``rds``; ``sds`` builds secrets, which are per identity, not per snapshot),
registered by type URL in ``compiler.py``; the ``SnapshotCompiler`` of a snapshot dispatches
to them and memoizes every resource (``memo.py``) under a key of exactly its inputs, so
proxies that would get an identical resource share one ``CompiledResource``; what each build
read is recorded through ``tracking.py``. Helpers per concern: ``routes``/``http_routes``,
``clusters``/``cluster_policy``, ``endpoints``, ``inbound``/``outbound``/``tcp``/``network``,
``tls``, ``authn``, ``rbac``, ``filters`` (names), ``naming``.

This module only hands names on.
"""

from controlplane.compile import resources as types
from controlplane.compile.compiler import GENERATORS, ProxyResources, SnapshotCompiler
from controlplane.compile.resources import CompiledResource
from controlplane.compile.tracking import SHAPE_DERIVED, TrackedSnapshot, recording_proxy

__all__ = [
    "GENERATORS",
    "SHAPE_DERIVED",
    "CompiledResource",
    "ProxyResources",
    "SnapshotCompiler",
    "TrackedSnapshot",
    "recording_proxy",
    "types",
]
