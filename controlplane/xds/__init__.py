"""xDS delivery: SotW and Delta ADS and CSDS on one grpc.aio server, and the debug port. This
package speaks the protocol only; what each proxy should have comes from a ``ConfigCache``
(``controlplane.cache``), which the server is built with.

How a change travels (and why it is cheap):

1. The store reports a change set (keys). The compiled-config cache debounces bursts and
   publishes (``controlplane/cache/compiled.py``); proxy shapes the change did not touch keep
   their resources, and only the watches of touched shapes wake their streams. A
   certificate rotation (``controlplane/cache/secrets.py``) wakes only the streams holding
   that identity's secret.
2. A woken stream (``sotw.py``, ``delta.py``, common loop in ``stream.py``) asks its watch for
   each subscribed type, compares the shared view it last sent with the new one (diffs are
   memoized per pair of views, ``delivery.py``) and writes only what moved, as bytes joined
   from per-resource entries encoded once (``wire.py``), shared between streams sent the
   same response.

``server.py`` builds the gRPC server from the cache, an authenticator (``identity.py``),
metrics and push limits; ``delivery.py`` is the state its streams share (push slots, nonces,
memos, the registry of connected streams); ``state.py`` holds per-stream, per-type state
(sent, ACKed, NACKed); ``csds.py`` and ``debug.py`` expose it. The Python ADS client of
the tests and the benchmark is ``controlplane/testing/ads_client.py``.
"""
