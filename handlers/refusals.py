"""Audit entries for refused requests, rate-limited so that a flood cannot fill the pool.

The first ``burst`` refusals of a window are written one by one; the rest are counted, and written
as one entry ("N more … refused since HH:MM UTC") when the window ends or at shutdown. The flood
still gets its 401s; only the audit writes are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)

Write = Callable[[str], Awaitable[None]]


class RefusalAudit:
    """Counts refusals per window; lives on one event loop (the ack path's)."""

    def __init__(self, write: Write, *, burst: int = 20, window_s: float = 60.0,
                 what: str = "Slack requests", why: str = "bad signature or replayed") -> None:
        self._write = write
        self._what, self._why = what, why
        self._burst = burst
        self._window_s = window_s
        self._window_start = time.monotonic()
        self._written = 0
        self._held = 0
        self._held_since: datetime | None = None
        self._last = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def record(self, detail: str) -> None:
        """One refused request: written now, or counted when the window's burst is spent."""
        self._roll_window()
        if self._written < self._burst:
            self._written += 1
            log.warning("%s", detail)
            self._spawn(detail)
            return
        if self._held == 0:
            self._held_since = datetime.now(UTC)
            log.warning("more than %d refused requests in %.0f s: counting the rest, one audit "
                        "entry for them at the end of the minute", self._burst, self._window_s)
        self._held += 1
        self._last = detail

    def start(self) -> None:
        """Write the counted refusals at the end of each window, even when no request comes."""
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._window_s / 4)
            self._roll_window()

    def _roll_window(self) -> None:
        if time.monotonic() - self._window_start < self._window_s:
            return
        self._flush()
        self._window_start = time.monotonic()
        self._written = 0

    def _flush(self) -> None:
        if self._held == 0 or self._held_since is None:
            return
        since = self._held_since.strftime("%H:%M:%S")
        detail = (f"{self._held} more {self._what} refused since {since} UTC ({self._why}; "
                  f"over {self._burst} in {self._window_s:.0f} s, so counted instead of "
                  f"written one by one); the last: {self._last}")
        self._held, self._held_since = 0, None
        log.warning("%s", detail)
        self._spawn(detail)

    def _spawn(self, detail: str) -> None:
        async def write() -> None:
            try:
                await self._write(detail)
            except Exception as exc:
                log.error("AUDIT WRITE FAILED (%s): %s", detail, exc)
        task = asyncio.create_task(write())  # after the answer, never before it
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
