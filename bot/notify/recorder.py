"""Turns what the engine reports (runs, checks, quarantines, countdowns) into outbox rows.

Its methods are the engine's hooks, attached at the composition root. Writing an event never
fails or holds up what reported it: a failed write is a WARNING, and every write is bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.autorollback.deploys import Deploy
from bot.events import RunEvent, RunStarted
from bot.model import RunRecord, VerificationResult
from bot.notify import notices
from bot.notify.config import Webhook
from bot.notify.notices import Notice
from bot.notify.outbox import Outbox

log = logging.getLogger(__name__)

_WRITE_S = 10.0  # a database that hangs loses the event (logged), never the run
GetRun = Callable[[int], Awaitable[RunRecord | None]]


class EventRecorder:
    """Writes each event once per webhook that asked for it, then wakes the delivery loop."""

    def __init__(self, *, outbox: Outbox, webhooks: Sequence[Webhook], get_run: GetRun,
                 written: Callable[[], None]) -> None:
        self._outbox = outbox
        self._webhooks = tuple(webhooks)
        self._get_run = get_run
        self._written = written
        self._pending: set[asyncio.Task[None]] = set()

    async def record(self, notice: Notice | None) -> None:
        if notice is None:
            return
        urls = [w.url for w in self._webhooks if notice.event in w.events]
        if not urls:
            return
        try:
            async with asyncio.timeout(_WRITE_S):
                added = await self._outbox.add(notice, urls)
        except Exception as exc:
            log.warning("could not write event %s (%s) to the outbox; it will not be sent: %s",
                        notice.event, notice.key, exc)
            return
        if added:
            self._written()

    async def _about_run(self, run_id: int, build: Callable[[RunRecord], Notice | None]) -> None:
        try:
            async with asyncio.timeout(_WRITE_S):
                run = await self._get_run(run_id)
        except Exception as exc:
            log.warning("could not read run #%s for its event; it will not be sent: %s",
                        run_id, exc)
            return
        if run is not None:
            await self.record(build(run))

    # --- the engine's hooks ------------------------------------------------------------------

    async def observe_run(self, event: RunEvent) -> None:
        """A ``Rollbot.run_observers`` entry: ``rollback.started`` (every kind of run)."""
        if isinstance(event, RunStarted) and self._webhooks:
            await self._about_run(event.run_id, notices.rollback_started)

    def run_ended(self, run: RunRecord) -> None:
        """A ``Store.ended_hooks`` entry (called synchronously): ``rollback.succeeded/failed``,
        however the run ended (its process, a Ctrl-C, the dead-run sweep)."""
        if not self._webhooks:
            return
        task = asyncio.get_running_loop().create_task(self.record(notices.rollback_ended(run)))
        self._pending.add(task)  # referenced until written; settle() waits for it
        task.add_done_callback(self._pending.discard)

    async def verification_checked(self, result: VerificationResult) -> None:
        """A ``VerificationSchedule.checked_hooks`` entry: ``verification.completed``."""
        if self._webhooks:
            await self._about_run(result.run_id,
                                  lambda run: notices.verification_completed(result, run))

    async def version_quarantined(self, run: RunRecord, version: str) -> None:
        """An ``AutoRollback.quarantine_hooks`` entry: ``version.quarantined``."""
        await self.settle()  # after the run's own end, in the outbox as in time
        await self.record(notices.version_quarantined(run, version))

    async def countdown_started(self, deploy: Deploy, triggers: Sequence[str],
                                seconds: float) -> None:
        """An ``AutoRollback.countdown_hooks`` entry: ``deploy.countdown``."""
        await self.record(notices.deploy_countdown(deploy, triggers, seconds=seconds))

    async def settle(self) -> None:
        """Wait for the writes still under way (before the pool closes)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
