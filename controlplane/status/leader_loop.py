"""The loop both status writers run (``writer.py`` for Istio's kinds, ``gatewayapi.py`` for the
Gateway API's): woken by the store (or every ``poll`` seconds), it asks whether this replica
leads (``leader.py``), lets the writer catch up when it has just become leader, runs one
round of writes and, when some write failed, backs off before the next try. The apiserver
calls run on one worker thread of the writer's own, so xDS never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("controlplane.status")

RETRY_BACKOFF = 1.0  # seconds between rounds while writes fail


class LeaderLoop:
    """A leader-only, woken-on-change write loop; subclasses write in ``_write_round``."""

    def __init__(self, name: str, is_leader: Callable[[], bool], poll: float) -> None:
        self.name = name
        self.is_leader = is_leader
        self.poll = poll
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._leading = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- what a writer fills in -----------------------------------------------------------

    def _next_wait(self) -> float:
        """How long to sleep when nothing wakes the loop."""
        return self.poll

    def _before_round(self) -> None:
        """Called each time the loop wakes, leader or not."""

    def _became_leader(self) -> None:
        """This replica now leads: forget what was written (another leader may have written
        since) so the next round writes everything again."""

    async def _write_round(self) -> bool:
        """Write what changed; True when some write failed and should be retried."""
        raise NotImplementedError

    # ---- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._next_wait())
            except TimeoutError:
                pass
            self._wake.clear()
            self._before_round()
            leading = self.is_leader()
            if leading and not self._leading:
                log.info("%s: this replica now writes status", self.name)
                self._became_leader()
            elif self._leading and not leading:
                log.info("%s: another replica writes status now", self.name)
            self._leading = leading
            if leading and await self._write_round():
                await asyncio.sleep(RETRY_BACKOFF)  # back off before retrying failures
                self._wake.set()
