"""What each proxy should have, per type URL, versioned and shared between proxies of one
shape: the line between compiling (``controlplane.compile``) and delivering
(``controlplane.xds``).

- ``interface.py``: the ``ConfigCache`` Protocol the xDS server asks (resources for a proxy
  and a type URL, and a ``Watch`` that wakes the proxy's stream when they may have changed),
  and the compile names the server needs;
- ``compiled.py``: ``CompiledCache``, the compiler's output kept current with the store
  (debounced by ``debounce.py``), shared by proxy shape (``shapes.py``);
- ``secrets.py``: ``SecretCache``, SDS certificates per authenticated identity, renewed
  before they expire;
- ``credentials.py``: ``GatewayCredentials``, the Secrets Gateway servers name by
  ``credentialName``, per namespace, served by ``SecretCache`` beside the workload's own;
- ``mux.py``: ``CacheMux``, one cache made of several, routed by type URL;
- ``shapes.py`` also holds the memos that streams share (subscription views, their versions
  and diffs; encoded responses); ``metrics.py`` the Prometheus metrics of caches and server.

Imports ``compile``, ``store`` and ``ca``; imported by ``xds`` and the composition root.
"""

from controlplane.cache.compiled import CompiledCache
from controlplane.cache.credentials import GatewayCredentials
from controlplane.cache.debounce import Debouncer
from controlplane.cache.interface import ConfigCache, ResourceMap, Watch
from controlplane.cache.metrics import XdsMetrics
from controlplane.cache.mux import CacheMux
from controlplane.cache.secrets import SecretCache

__all__ = [
    "CacheMux",
    "CompiledCache",
    "ConfigCache",
    "Debouncer",
    "GatewayCredentials",
    "ResourceMap",
    "SecretCache",
    "Watch",
    "XdsMetrics",
]
