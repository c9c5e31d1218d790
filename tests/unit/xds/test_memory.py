"""After a push wave: the full garbage collection runs then, and what survives is frozen."""

from __future__ import annotations

import gc
import weakref

from controlplane.xds import memory


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settle_collects_old_cycles_and_freezes_the_survivors() -> None:
    try:
        kept = _Node()
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle only the cyclic collector can free
        gone = weakref.ref(a)
        memory.settle()
        assert gc.get_freeze_count() > 0
        del a, b
        assert gone() is not None  # frozen: ordinary collections leave it alone
        gc.collect()
        assert gone() is not None
        memory.settle()  # the next quiet moment looks at frozen objects again
        assert gone() is None
        assert kept.other is None
    finally:
        gc.unfreeze()
