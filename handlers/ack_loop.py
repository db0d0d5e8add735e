"""The ack path's own event loop, in a thread: what Slack waits for never waits for rollbot's work.

``rollbot serve`` runs two loops. The main loop owns the engine (the store, SSH, the Slack client,
the schedulers) and does all work after an acknowledgement. The ack loop, in a thread of its own,
runs the HTTP server, the signature check, the replay guard and Bolt's ``ack()``. A Bolt listener
acks on the ack loop and hands its work to the main loop through ``WorkHandoff``, bounded: when
too much work is waiting, the request is answered with a sentence saying so, never dropped silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

SWITCH_INTERVAL_S = 0.0005
MAX_WORK_IN_FLIGHT = 100  # listeners' work at once; a rollback itself runs as a spawned task
BUSY = ("rollbot is busy: too many requests are being worked on right now. Nothing was done; "
        "try again in a minute.")


class AckLoop:
    """An event loop running in a daemon thread until ``stop``."""

    def __init__(self, name: str = "rollbot-ack") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def start(self) -> None:
        # Both loops share the GIL: a thread waiting for it gets it only when the holder has run
        # for the switch interval (5 ms by default), so every step of an ack could wait that long
        # behind the main loop's work. 0.5 ms keeps the ack's waits short.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the ack loop; await its result from the calling loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def stop(self) -> None:
        """Cancel what is left on the loop, stop it and join the thread."""
        if not self._thread.is_alive():
            return

        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        await self.run(cancel_rest())
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 30)


class WorkHandoff:
    """Coroutines handed from the ack loop to the main loop, at most ``limit`` running at once."""

    def __init__(self, main: asyncio.AbstractEventLoop, *, limit: int | None = None) -> None:
        self._main = main
        self._limit = limit or MAX_WORK_IN_FLIGHT
        self._lock = threading.Lock()  # taken on the ack loop and released on the main loop
        self._running: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def submit(self, work: Coroutine[Any, Any, None]) -> bool:
        """Start ``work`` on the main loop; False (and ``work`` discarded) when full or closed."""
        with self._lock:
            full = self._closed or len(self._running) >= self._limit
            if not full:
                future = asyncio.run_coroutine_threadsafe(work, self._main)
                self._running.add(future)
        if full:
            work.close()  # never started: no "coroutine was never awaited" warning
            return False
        future.add_done_callback(self._done)
        return True

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._running.discard(future)
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.error("work after an acknowledgement failed: %s", exc, exc_info=exc)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the main loop and await its result (a modal's check, a hook, health)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._main))

    async def close(self, timeout_s: float) -> None:
        """Take no more work; wait (from the main loop) for the work already handed over."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        if running:
            await asyncio.wait([asyncio.wrap_future(f) for f in running], timeout=timeout_s)
