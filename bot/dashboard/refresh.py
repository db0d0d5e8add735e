"""The loop that keeps open home tabs current: poll the fingerprint, claim, publish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.dashboard.reader import DashboardReader
from bot.dashboard.state import Dashboard
from bot.dashboard.viewers import HomeViewers

log = logging.getLogger(__name__)

POLL_S = 1.0

# Publishes the dashboard to these users (the front renders it per user); returns those it
# could not reach, for another try.
Publish = Callable[[Dashboard, Sequence[str]], Awaitable[Sequence[str]]]


class DashboardRefresher:
    """Republishes to recent viewers when the state changes, whichever replica changed it."""

    def __init__(self, *, reader: DashboardReader, viewers: HomeViewers,
                 publish: Publish | None = None, poll_s: float = POLL_S) -> None:
        self.reader = reader
        self._viewers = viewers
        self._publish = publish
        self._poll = poll_s
        self._task: asyncio.Task[None] | None = None

    def publish_with(self, publish: Publish) -> None:
        """The front that renders and publishes (Slack's home tab); nothing is published before."""
        self._publish = publish

    async def opened(self, user: str) -> None:
        """A user opened the tab: publish to them now, unless they got it moments ago."""
        fingerprint = await self.reader.fingerprint()
        if await self._viewers.opened(user, fingerprint=fingerprint):
            await self._deliver(await self.reader.read(), [user])

    async def refresh_once(self) -> list[str]:
        """One poll: the users published to."""
        if not await self._viewers.anyone_recent():  # one small query while nobody looks
            return []
        fingerprint = await self.reader.fingerprint()
        users = await self._viewers.claim_stale(fingerprint)
        if users:
            try:
                await self._deliver(await self.reader.read(), users)
            except Exception:
                for user in users:  # claimed but not published: the next poll tries again
                    await self._viewers.failed(user)
                raise
        return users

    async def _deliver(self, dashboard: Dashboard, users: Sequence[str]) -> None:
        if self._publish is None:
            return
        for user in await self._publish(dashboard, users):
            await self._viewers.failed(user)

    def start(self) -> None:
        """Poll until ``stop``; `rollbot serve` runs it, on every replica."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh_once()
            except Exception as exc:  # the database blinked: the next poll tries again
                log.warning("home tab refresh failed: %s", exc)
            await asyncio.sleep(self._poll)
