"""Giving memory back after push waves.

A push wave (a connect storm, a change reaching every proxy) allocates and frees large
response buffers. glibc keeps the freed memory in its heaps, so resident memory stays at the
wave's peak and grows with the number of proxies although nothing is kept per proxy.
``malloc_trim`` returns it; the hub calls it when pushing has gone quiet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
