"""Giving memory back after push waves.

A push wave (a connect storm, a change reaching every proxy) allocates and frees large
response buffers. glibc keeps the freed memory in its heaps, so resident memory stays at the
wave's peak and grows with the number of proxies although nothing is kept per proxy.
``malloc_trim`` returns it; the xDS server (``delivery.py``) calls it when pushing has gone
quiet.

The configuration the control plane holds (resources, compiled messages, indexes) is
hundreds of thousands of long-lived objects. Python's cyclic garbage collector would walk
all of them in every full collection, a pause of 100 ms or more that lands in the middle of
a push wave. ``settle`` runs that collection while pushing is quiet instead, and then
freezes what survived: later collections look only at objects made since.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_loaded = False


def trim() -> bool:
    """Return free heap memory to the system (glibc only; elsewhere a no-op)."""
    global _trim, _loaded
    if not _loaded:
        _loaded = True
        name = ctypes.util.find_library("c")
        try:
            _trim = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):
            _trim = None
    if _trim is None:
        return False
    _trim(0)
    return True


def settle() -> None:
    """Collect cyclic garbage now, including among objects frozen earlier (some of the old
    configuration is garbage by now), and freeze the survivors."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
