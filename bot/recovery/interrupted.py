"""Runs whose rollbot process died: every ``rollbot serve`` looks for them; each is told once.

A sweep every few seconds marks the active runs whose lock is free as interrupted (one
conditional UPDATE, so one replica wins), offers Resume / Put back when the run left production
down, then tells a front about every interruption not told yet, including those the next
rollback found (``Store.begin_run``, in the terminal too). Slack edits the run's live message;
without Slack, the log says it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from bot.model import RunRecord
from bot.recovery.offers import RecoveryOffer, interrupted_offer
from bot.recovery.store import RecoveryStore
from bot.store.dead_runs import claim_untold, dead_runs, mark_interrupted
from bot.store.runs import Store

log = logging.getLogger(__name__)

SWEEP_S = 3.0  # a dead run is marked and shown within this (plus a database round trip)


class InterruptionNotifier(Protocol):
    """Shows that a run was interrupted because its process died; never decides anything."""

    async def interrupted(self, run: RunRecord, offer: RecoveryOffer | None) -> None: ...


class LogInterruptions:
    """The notifier without Slack: one WARNING line per interrupted run."""

    async def interrupted(self, run: RunRecord, offer: RecoveryOffer | None) -> None:
        ways = (f" Production is DOWN: `rollbot resume {run.id}` or `rollbot put-back {run.id}`."
                if offer is not None else "")
        log.warning("run #%s in %s (%s → %s, requested by %s) was interrupted: %s%s", run.id,
                    run.environment, run.from_version or "?", run.to_version or "?",
                    run.requested_by, run.message, ways)


class DeadRunReaper:
    """Finds dead runs (any replica), marks them interrupted and has them told, each once."""

    def __init__(self, *, store: Store, recoveries: RecoveryStore, who: str,
                 interval_s: float = SWEEP_S) -> None:
        self._store = store
        self._recoveries = recoveries
        self._who = who  # this process (host:pid), named as the one that found the run dead
        self._interval = interval_s
        self._notifier: InterruptionNotifier = LogInterruptions()
        self._task: asyncio.Task[None] | None = None

    def notify_with(self, notifier: InterruptionNotifier) -> None:
        self._notifier = notifier

    async def sweep(self) -> list[int]:
        """One pass; returns the runs this process told about."""
        store, me = self._store, self._who
        for run_id in await dead_runs(store.pool):
            # The offer is written before the marking commits, so whichever replica tells
            # about the interruption finds the offer with it.
            async with store.pool.acquire() as conn, conn.transaction():
                found = await mark_interrupted(conn, run_id, found_by=me)
                if found is not None:
                    await self._offer(run_id, host_state=found.host_state)
            if found is not None:
                await store.tell_ended(run_id)  # counted once, by the replica that marked it
        told = []
        for interruption in await claim_untold(store.pool, by=me):
            run = await store.get_run(interruption.run_id)
            if run is None:
                continue
            offer = await self._recoveries.get(run.id)
            try:
                await self._notifier.interrupted(
                    run, offer if offer is not None and offer.state == "offered" else None)
            except Exception:
                log.exception("could not tell that run #%s was interrupted", run.id)
            told.append(run.id)
        return told

    async def _offer(self, run_id: int, *, host_state: str) -> None:
        """Resume / Put back, when the dead run left production down."""
        continues = await self._store.pool.fetchval(
            "SELECT continues_run FROM runs WHERE id = $1", run_id)
        run = await self._store.get_run(run_id)
        if run is None or continues is not None:
            return  # a Resume's own steps are not the whole story: a fresh rollback instead
        offer = interrupted_offer(run, host_state=host_state,
                                  facts=await self._recoveries.facts(run_id))
        if offer is not None:
            await self._recoveries.offer(offer)

    async def start(self) -> None:
        """Sweep now (dead runs from before this start), then every ``interval_s``."""
        await self._sweep_logged()
        self._task = asyncio.create_task(self._forever(), name="rollbot-dead-runs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._sweep_logged()

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except Exception:  # the database restarting, say: the next sweep tries again
            log.exception("looking for interrupted runs failed")
