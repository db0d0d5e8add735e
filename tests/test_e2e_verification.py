"""After the rollback, the 5/30/120-minute checks run by themselves (here in seconds).

Time is made controllable the way game days do it: `verify_after_minutes` takes fractions of a
minute, so the three checks come due after about 1, 2 and 3 seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.config import Runbook
from bot.edges.http import HttpxProbe
from bot.model import ProcedureName, RunOutcome, RunRecord, RunStatus, Tier, VerificationResult
from bot.post_rollback.schedule import VerificationSchedule
from bot.service import Rollbot
from bot.store.runs import Store
from tests.sandbox import Sandbox
from tests.test_e2e_procedures import request

pytestmark = pytest.mark.e2e
QUICK = (0.02, 0.035, 0.05)  # minutes: about 1.2 s, 2.1 s and 3 s after the rollback


def quick(runbook: Runbook, minutes: tuple[float, ...] = QUICK) -> Runbook:
    env = runbook.environments["production"].model_copy(
        update={"verify_after_minutes": minutes})
    return runbook.model_copy(update={"environments": {**runbook.environments,
                                                       "production": env}})


class Announcements:
    def __init__(self) -> None:
        self.seen: list[tuple[str, VerificationResult]] = []

    async def __call__(self, result: VerificationResult, run: RunRecord, check_id: int) -> None:
        self.seen.append((f"v{check_id}", result))

    async def wait(self, n: int, timeout: float = 60) -> None:
        for _ in range(int(timeout * 10)):
            if len(self.seen) >= n:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{len(self.seen)} of {n} checks announced")


@pytest.fixture
async def bot(runbook: Runbook, store: Store) -> AsyncIterator[Rollbot]:
    async with httpx.AsyncClient() as client:
        yield Rollbot(runbook=quick(runbook), store=store, probe=HttpxProbe(client))


def wire(bot: Rollbot, verifier: VerificationSchedule) -> None:
    async def schedule(outcome: RunOutcome) -> None:
        if outcome.status is RunStatus.SUCCEEDED:
            await verifier.schedule_run(outcome.run_id)
    bot.finished_hooks.append(schedule)


async def test_three_checks_fire_in_order_and_are_stored(production: Sandbox,
                                                         bot: Rollbot) -> None:
    heard = Announcements()
    verifier = VerificationSchedule(rollbot=bot, announce=heard, sweep_s=1)
    await verifier.start()
    try:
        wire(bot, verifier)
        outcome = await bot.rollback(request(ProcedureName.SIMPLE))
        assert outcome.status is RunStatus.SUCCEEDED
        await heard.wait(3)
    finally:
        await verifier.stop()
    tiers = [r.tier for _, r in heard.seen]
    assert tiers == [Tier.IMMEDIATE, Tier.EXTENDED, Tier.COMPREHENSIVE]
    for _, result in heard.seen:
        assert result.ok, result.items
    names = [i.name for i in heard.seen[2][1].items]
    assert {"Services Up", "Health", "Version", "Smoke URLs", "Error logs", "Row counts",
            "Warnings", "Last 1000 log lines"} <= set(names)
    stored = await verifier.store.results(outcome.run_id)
    assert [r.tier for r in stored] == tiers
    assert await verifier.store.pending() == []


async def test_a_check_after_the_service_broke_again_fails(production: Sandbox,
                                                          bot: Rollbot) -> None:
    heard = Announcements()
    verifier = VerificationSchedule(rollbot=bot, announce=heard, sweep_s=1)
    wire(bot, verifier)
    bot.runbook = quick(bot.runbook, (0.03,))
    outcome = await bot.rollback(request(ProcedureName.SIMPLE))
    assert outcome.status is RunStatus.SUCCEEDED
    # someone redeploys the bad release by hand before the first check
    text = production.compose_file.read_text().replace("azora-api:v1.2.2", "azora-api:v1.2.3")
    production.compose_file.write_text(text)
    await asyncio.to_thread(production.compose_up)
    await verifier.start()
    try:
        await heard.wait(1)
    finally:
        await verifier.stop()
    result = heard.seen[0][1]
    assert not result.ok
    failed = {i.name: i.detail for i in result.items if not i.ok}
    assert "Health" in failed and "404" in failed["Health"]
    assert "Version" in failed and "v1.2.3" in failed["Version"]
    assert "Error logs" in failed and "payment service" in failed["Error logs"]


async def test_restart_between_checks_still_runs_each_once_and_says_late(
    production: Sandbox, bot: Rollbot
) -> None:
    heard = Announcements()
    first = VerificationSchedule(rollbot=bot, announce=heard, sweep_s=1)
    wire(bot, first)
    await first.start()
    outcome = await bot.rollback(request(ProcedureName.SIMPLE))
    await heard.wait(1)
    await first.stop()  # rollbot goes down after the +5 check
    await asyncio.sleep(3.5)  # the other two come due while it is down
    second = VerificationSchedule(rollbot=bot, announce=heard, sweep_s=1)
    await second.start()
    try:
        await heard.wait(3)
        await asyncio.sleep(1.5)  # a sweep more: nothing runs twice
    finally:
        await second.stop()
    assert [r.tier for _, r in heard.seen] == [Tier.IMMEDIATE, Tier.EXTENDED,
                                               Tier.COMPREHENSIVE]
    assert heard.seen[1][1].late_s > 0.5 and heard.seen[2][1].late_s > 0.1
    assert len(await first.store.results(outcome.run_id)) == 3


async def test_two_processes_on_one_database_run_each_check_once(production: Sandbox,
                                                                bot: Rollbot) -> None:
    heard = Announcements()
    a = VerificationSchedule(rollbot=bot, announce=heard, owner="a", sweep_s=0.5)
    b = VerificationSchedule(rollbot=bot, announce=heard, owner="b", sweep_s=0.5)
    wire(bot, a)
    await a.start()
    await b.start()
    try:
        await bot.rollback(request(ProcedureName.SIMPLE))
        await heard.wait(3)
        await asyncio.sleep(2)
    finally:
        await a.stop()
        await b.stop()
    assert sorted(name for name, _ in heard.seen) == sorted({name for name, _ in heard.seen})
    assert len(heard.seen) == 3


async def test_a_new_rollback_supersedes_the_pending_checks(production: Sandbox,
                                                           bot: Rollbot) -> None:
    verifier = VerificationSchedule(rollbot=bot)
    wire(bot, verifier)
    bot.runbook = quick(bot.runbook, (5.0, 30.0, 120.0))
    first = await bot.rollback(request(ProcedureName.SIMPLE))
    assert [c["run_id"] for c in await verifier.store.pending()] == [first.run_id] * 3
    second = await bot.rollback(request(ProcedureName.EMERGENCY, target="v1.2.1"))
    assert second.status is RunStatus.SUCCEEDED
    assert [c["run_id"] for c in await verifier.store.pending()] == [second.run_id] * 3
