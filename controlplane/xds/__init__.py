"""xDS delivery: SotW and Delta ADS and CSDS on one grpc.aio server, the hub that turns store
changes into pushes, and the debug port.

How a change travels (and why it is cheap):

1. The store reports a change set (keys). The hub debounces bursts (``hub.py``).
2. ``SnapshotCompiler.following`` turns the keys into dependency tokens
   (``store/dependencies.py``); the new compiler inherits every memoized build whose recorded
   tokens the change did not touch, and the new snapshot inherits untouched indexes.
3. Proxies are grouped into *shapes* (``cache.py``): the values of the Proxy fields the
   compiler actually read. Each shape is compiled once; a shape the change did not touch
   keeps its resources and its streams are not woken at all.
4. A woken stream (``sotw.py``, ``delta.py``, common loop in ``stream.py``) compares the
   shared view it last sent with the new one (diffs are memoized per pair of views) and
   writes only what moved, as bytes joined from per-resource entries encoded once
   (``wire.py``).

``state.py`` holds per-stream, per-type state (sent, ACKed, NACKed); ``csds.py`` and
``debug.py`` expose it; ``metrics.py`` renders Prometheus metrics. The Python ADS client of
the tests and the benchmark is ``controlplane/testing/ads_client.py``.
"""
