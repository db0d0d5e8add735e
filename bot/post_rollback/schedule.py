"""Runs the verification checks when they are due (APScheduler 3, ``AsyncIOScheduler``).

PostgreSQL holds the schedule; APScheduler only arms timers for what the database says is pending.
At start every pending check is armed again (a check whose time passed while rollbot was down runs
at once and says how late it is), a sweep picks up checks scheduled by other processes, and each
check is claimed in the database before it runs, so it runs once however many processes there are.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import EnvironmentConfig
from bot.edges.reach import open_sessions
from bot.edges.session import open_session
from bot.model import RunOutcome, RunRecord, RunStatus, Tier, VerificationItem, VerificationResult
from bot.post_rollback.fleet_checks import CheckedHost, run_fleet_tier
from bot.post_rollback.verification import VerificationStore, late_by, row_counts, run_tier
from bot.service import Rollbot

log = logging.getLogger(__name__)

Announce = Callable[[VerificationResult, RunRecord, int], Awaitable[None]]
Checked = Callable[[VerificationResult], Awaitable[None]]


class VerificationSchedule:
    """Schedules and performs the 5/30/120-minute checks of successful rollbacks."""

    def __init__(self, *, rollbot: Rollbot, announce: Announce | None = None,
                 owner: str | None = None, sweep_s: float = 30.0) -> None:
        self._rollbot = rollbot
        self.store = VerificationStore(rollbot.store.pool)
        self._announce = announce
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:verify"
        self._sweep_s = sweep_s
        self._scheduler: AsyncIOScheduler | None = None
        # Called once a scheduled check's result is stored, before it is announced
        # (the composition root writes the report here).
        self.checked_hooks: list[Checked] = []

    def announce_with(self, announce: Announce) -> None:
        self._announce = announce

    async def after_run(self, outcome: RunOutcome) -> None:
        """A ``Rollbot.finished_hooks`` entry: successful runs get their checks."""
        if outcome.status is RunStatus.SUCCEEDED:
            await self.schedule_run(outcome.run_id)

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.start()
        self._scheduler.add_job(self.rearm, "interval", seconds=self._sweep_s,
                                id="rollbot-verify-sweep", max_instances=1, coalesce=True)
        await self.rearm()

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def schedule_run(self, run_id: int) -> list[datetime]:
        """After a successful rollback: plan its checks (and note the row counts it left)."""
        run = await self._rollbot.store.get_run(run_id)
        if run is None or run.status is not RunStatus.SUCCEEDED:
            return []
        env_name, env = self._rollbot.environment(run.environment)
        baseline: dict[str, int] = {}
        _, db_env = env.database_member  # a fleet's shared database is counted on its host
        try:
            async with open_session(env_name, db_env, store=self._rollbot.store,
                                    actor="rollbot:verify", run_id=run_id) as session:
                baseline = await row_counts(session.host, db_env)
        except Exception as exc:  # the checks still run; only the row comparison lacks a base
            log.warning("run #%s: could not count rows for the verification baseline: %s",
                        run_id, exc)
        due = await self.store.schedule(run, after_minutes=env.verify_after_minutes,
                                        start=run.finished_at or datetime.now(UTC),
                                        baseline=baseline)
        await self.rearm()
        return due

    async def rearm(self) -> None:
        """Arm a timer for every pending check in the database (idempotent)."""
        if self._scheduler is None:
            return
        now = datetime.now(UTC)
        for check in await self.store.pending():
            self._scheduler.add_job(
                self._fire, "date", run_date=max(check["due_at"], now), args=[check["id"]],
                id=f"rollbot-verify-{check['id']}", replace_existing=True,
                misfire_grace_time=None, coalesce=True)

    async def _fire(self, check_id: int) -> None:
        claimed = await self.store.claim(check_id, owner=self._owner)
        if claimed is None:
            return  # another process has it, or a newer rollback superseded it
        try:
            result, run = await self.perform(claimed)
        except Exception:
            log.exception("verification check %s failed to run; released for a retry", check_id)
            await self.store.release(check_id)
            return
        await self.store.record(check_id, result)
        await self._tell_checked(result, f"check {check_id}")
        if self._announce is not None:
            try:
                await self._announce(result, run, check_id)
            except Exception:
                log.exception("announcing verification check %s failed", check_id)

    async def perform(self, check: dict[str, Any]) -> tuple[VerificationResult, RunRecord]:
        run = await self._rollbot.store.get_run(int(check["run_id"]))
        assert run is not None
        env_name, env = self._rollbot.environment(run.environment)
        tier = Tier(check["tier"])
        started = datetime.now(UTC)
        actor = f"rollbot:verify:{tier.value}"
        baseline = await self.store.baseline(run.id)
        since = run.finished_at or run.created_at
        if env.hosts:
            items = await self._perform_on_fleet(env_name, env, run=run, tier=tier, actor=actor,
                                                 baseline=baseline, since=since)
        else:
            async with open_session(env_name, env, store=self._rollbot.store, actor=actor,
                                    run_id=run.id) as session:
                items = await run_tier(tier=tier, run=run, env=env, host=session.host,
                                       docker=session.docker, probe=self._rollbot.probe,
                                       baseline=baseline, since=since)
        result = VerificationResult(run_id=run.id, tier=tier, due_at=check["due_at"],
                                    ran_at=started, late_s=late_by(check["due_at"], started),
                                    items=tuple(items))
        return result, run

    async def _perform_on_fleet(self, env_name: str, env: EnvironmentConfig, *,
                                run: RunRecord, tier: Tier, actor: str,
                                baseline: dict[str, int], since: datetime
                                ) -> list[VerificationItem]:
        """Every host over its own SSH connection; one that cannot be reached fails its checks
        by name (when none can be, the check is retried like a one-host check)."""
        async with open_sessions(env_name, env, store=self._rollbot.store, actor=actor,
                                 run_id=run.id, strict=False) as reached:
            db_name, _ = env.database_member
            database = next((r.session.host for r in reached
                             if r.name == db_name and r.session is not None), None)
            return await run_fleet_tier(
                tier=tier, run=run, env=env, database=database, probe=self._rollbot.probe,
                baseline=baseline, since=since,
                hosts=[CheckedHost(name=r.name, env=r.env,
                                   host=r.session.host if r.session else None,
                                   docker=r.session.docker if r.session else None,
                                   unreachable=r.problem) for r in reached])

    async def check_now(self, run_id: int, tier: Tier) -> tuple[VerificationResult, RunRecord]:
        """Run a check again on request (a button); not part of the schedule.

        Its result is news all the same: the ``checked_hooks`` hear of it as of a scheduled one
        (the metrics count it, the events out send ``verification.completed``).
        """
        now = datetime.now(UTC)
        result, run = await self.perform({"run_id": run_id, "tier": tier.value, "due_at": now})
        await self._tell_checked(result, f"the on-demand {tier.value} check of run #{run_id}")
        return result, run

    async def _tell_checked(self, result: VerificationResult, what: str) -> None:
        for hook in self.checked_hooks:
            try:
                await hook(result)
            except Exception:
                log.exception("after-check hook failed for %s", what)
