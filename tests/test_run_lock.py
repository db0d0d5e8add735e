"""The run lock lives in the holder's database session: a dead process frees it at once.

Two rollbot processes are two Stores on one database here (each its own pool and lock sessions);
a process dying is its lock session ending (pg_terminate_backend), as a SIGKILL ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.autorollback.deploys import DeployState, DeployStore
from bot.engine import Run
from bot.errors import RunLocked
from bot.model import (
    ProcedureName,
    RollbackRequest,
    RunOutcome,
    RunRecord,
    RunStatus,
    StepResult,
    StepStatus,
)
from bot.procedures.base import Procedure, RunFacts, Step, StepContext
from bot.recovery.interrupted import DeadRunReaper
from bot.recovery.offers import RecoveryOffer
from bot.recovery.store import RecoveryStore
from bot.store.dead_runs import StepTrace, dead_runs, interruption_words
from bot.store.run_lock import EnvironmentLock
from bot.store.runs import Store

STOPPED = "services STOPPED; compose file still names v1.2.3"


def req(who: str, env: str = "production") -> RollbackRequest:
    return RollbackRequest(environment=env, procedure=ProcedureName.SIMPLE, target=None,
                           requested_by=who)


@pytest.fixture
async def other(store: Store) -> AsyncIterator[Store]:
    """A second rollbot process on the same database."""
    s = await Store.open(store.dsn)
    try:
        yield s
    finally:
        await s.close()


async def die(store: Store, run_id: int) -> None:
    """The process running ``run_id`` is SIGKILLed: its session ends, nothing is written."""
    lock = store.run_lock(run_id)
    assert lock is not None
    pid = await lock._conn.fetchval("SELECT pg_backend_pid()")
    lock.on_lost(lambda _why: None)
    async with store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        # the signal is sent at once; the session ends (and frees its locks) a moment later
        for _ in range(100):
            if not await conn.fetchval(
                    "SELECT true FROM pg_stat_activity WHERE pid = $1", pid):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"session {pid} did not end")


async def record_steps(store: Store, run_id: int, *done: tuple[str, str, str, bool],
                       running: tuple[str, str, bool] | None = None) -> None:
    """Steps as the dead process recorded them: (key, title, host state, destructive)."""
    await store.start_run(run_id, from_version="v1.2.3", to_version="v1.2.2", backup=None,
                          checks=())
    now = datetime.now(UTC)
    for i, (key, title, state, destructive) in enumerate(done):
        await store.step_finished(run_id, position=i, destructive=destructive, host_state=state,
                                  result=StepResult(key=key, title=title,
                                                    status=StepStatus.SUCCEEDED,
                                                    started_at=now, finished_at=now))
    if running is not None:
        key, title, destructive = running
        await store.step_started(run_id, position=len(done), key=key, title=title,
                                 destructive=destructive, started_at=now)


async def test_two_sessions_racing_for_the_lock_one_wins_the_other_is_told_who(
        store: Store, other: Store) -> None:
    a, b = await asyncio.gather(store.begin_run(req("alice"), owner="host-a:1"),
                                other.begin_run(req("bob"), owner="host-b:2"),
                                return_exceptions=True)
    won = [r for r in (a, b) if isinstance(r, int)]
    lost = [r for r in (a, b) if isinstance(r, RunLocked)]
    assert len(won) == 1 and len(lost) == 1, (a, b)
    assert f"run #{won[0]}" in str(lost[0])
    # the raw lock: a second session cannot take it, another environment's is separate
    assert await EnvironmentLock.take(store.dsn, "production") is None
    staging = await EnvironmentLock.take(store.dsn, "staging")
    assert staging is not None
    await staging.release()


async def test_the_lock_is_freed_when_the_run_ends_and_the_next_run_takes_it(
        store: Store, other: Store) -> None:
    first = await store.begin_run(req("alice"), owner="host-a:1")
    assert store.held_locks() == ["production"]
    await store.finish_run(RunOutcome(run_id=first, status=RunStatus.SUCCEEDED,
                                      host_state="ok", message="done"))
    assert store.run_lock(first) is None and store.held_locks() == []
    second = await other.begin_run(req("bob"), owner="host-b:2")
    assert second > first
    assert (await other.get_run(first)).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]


async def test_a_dead_holder_frees_the_lock_at_once_and_its_run_is_interrupted(
        store: Store, other: Store) -> None:
    dead = await other.begin_run(req("alice"), owner="host-b:666")
    await record_steps(other, dead, ("check_current", "Check current version", "unchanged", False),
                       ("stop_services", "Stop services", STOPPED, True))
    assert await dead_runs(store.pool) == []  # alive: its session holds the lock
    with pytest.raises(RunLocked):
        await store.begin_run(req("bob"), owner="host-a:1")

    await die(other, dead)
    assert await dead_runs(store.pool) == [dead]  # no waiting for a heartbeat to go stale
    fresh = await store.begin_run(req("bob"), owner="host-a:1")
    record = await store.get_run(dead)
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert record.host_state == STOPPED
    assert "host-b:666" in record.message and "died" in record.message
    assert f"after step 2 'Stop services': {STOPPED}" in record.message
    assert "may be mid-procedure" in record.message
    assert (await store.active_run("production")).id == fresh  # type: ignore[union-attr]
    audit = await store.audit_entries(run_id=dead)
    assert any(a.kind == "run" and a.detail.startswith("interrupted:") for a in audit)


async def test_an_automatic_rollback_whose_run_died_is_failed_not_rolling_back_forever(
        store: Store, other: Store) -> None:
    deploys = DeployStore(store.pool)
    deploy, _ = await deploys.record(environment="production", version="v1.2.3",
                                     previous_version="v1.2.2", stage="deployed", commit="abc",
                                     actor="ci", run_url="")
    assert await deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.ROLLING_BACK)
    dead = await other.begin_run(req("rollbot (automatic)"), owner="host-b:666")
    await deploys.attach_run(deploy.id, dead)
    await die(other, dead)
    await store.begin_run(req("bob"), owner="host-a:1")  # finds the dead run and marks it
    assert (await deploys.get(deploy.id)).state is DeployState.FAILED


class Told:
    def __init__(self) -> None:
        self.runs: list[tuple[RunRecord, RecoveryOffer | None]] = []

    async def interrupted(self, run: RunRecord, offer: RecoveryOffer | None) -> None:
        self.runs.append((run, offer))


async def test_replicas_sweeping_at_once_mark_and_tell_a_dead_run_once(
        store: Store, other: Store) -> None:
    dead = await other.begin_run(req("alice"), owner="host-b:666")
    await record_steps(other, dead, ("check_current", "Check current version", "unchanged", False),
                       ("stop_services", "Stop services", STOPPED, True),
                       running=("switch_version", "Switch compose file to v1.2.2", True))
    await other.pool.execute("UPDATE runs SET facts = $2::jsonb WHERE id = $1", dead,
                             '{"compose_backup": "/srv/azora/docker-compose.yml.bak"}')
    told_a, told_b = Told(), Told()
    reapers = []
    for s, who, told in ((store, "host-a:1", told_a), (other, "host-c:2", told_b)):
        reaper = DeadRunReaper(store=s, recoveries=RecoveryStore(s.pool), who=who)
        reaper.notify_with(told)
        reapers.append(reaper)
    assert await reapers[0].sweep() == []  # alive: nothing to do
    await die(other, dead)
    swept = await asyncio.gather(*(r.sweep() for r in reapers))
    assert sorted(swept) == [[], [dead]]
    [(run, offer)] = told_a.runs + told_b.runs
    assert run.status is RunStatus.INTERRUPTED and run.host_state == STOPPED
    assert "Step 3 'Switch compose file to v1.2.2' was running" in run.message
    assert "may be half done" in run.message
    # production was left down: Resume / Put back are offered, with what the run had learned
    assert offer is not None and offer.done_steps == ("check_current", "stop_services")
    assert offer.host_state == STOPPED
    assert offer.run_facts().compose_backup == "/srv/azora/docker-compose.yml.bak"
    interruptions = [a for a in await store.audit_entries(run_id=dead) if a.kind == "run"]
    assert len(interruptions) == 1
    assert await reapers[0].sweep() == [] and await reapers[1].sweep() == []  # told once


async def test_an_interruption_found_by_the_next_rollback_is_still_told_by_a_replica(
        store: Store, other: Store) -> None:
    dead = await other.begin_run(req("alice"), owner="host-b:666")
    await die(other, dead)
    await store.begin_run(req("bob"), owner="cli:1")  # the terminal found it, and went on
    told = Told()
    reaper = DeadRunReaper(store=other, recoveries=RecoveryStore(other.pool), who="host-c:2")
    reaper.notify_with(told)
    assert await reaper.sweep() == [dead]
    [(run, offer)] = told.runs
    assert run.host_state == "unchanged: rollbot died before any step changed the host"
    assert offer is None  # a new run follows it: no buttons that could not work


def test_the_words_name_the_last_recorded_state_and_a_half_done_step() -> None:
    seen = datetime(2026, 11, 29, 3, 12, 44, tzinfo=UTC)
    steps = [StepTrace(0, "Check current version", "succeeded", "unchanged", False),
             StepTrace(1, "Stop services", "succeeded", STOPPED, True),
             StepTrace(2, "Switch compose file to v1.2.2", "running", "", True)]
    state, text = interruption_words(environment="production", owner="web-1:42",
                                     last_seen=seen, steps=steps)
    assert state == STOPPED
    assert "(web-1:42) died (last seen alive at 03:12:44 UTC)" in text
    assert f"after step 2 'Stop services': {STOPPED}." in text
    assert "Step 3 'Switch compose file to v1.2.2' was running when it died" in text

    state, text = interruption_words(environment="production", owner="web-1:42",
                                     last_seen=None, steps=steps[:1])
    assert state == "unchanged" and "Nothing had changed the host yet." in text
    state, _ = interruption_words(environment="production", owner="web-1:42", last_seen=None,
                                  steps=[StepTrace(0, "Stop services", "running", "", True)])
    assert state == "unknown: rollbot died during step 1 'Stop services'"


async def test_a_run_whose_lock_session_is_lost_stops_before_its_next_step(
        store: Store) -> None:
    """The database restarted under a live run: it must not go on as if it held the lock."""
    run_id = await store.begin_run(req("alice"), owner="host-a:1")
    ran: list[str] = []

    async def stop_services(_ctx: StepContext) -> str:
        ran.append("stop")
        await die(store, run_id)  # the lock's session ends while this step runs
        return "stopped"

    async def switch(_ctx: StepContext) -> str:
        ran.append("switch")
        return "switched"

    none: Any = None
    steps = (Step(key="stop_services", title="Stop services", action=stop_services, shows=(),
                  leaves=STOPPED, timeout_s=10, destructive=True),
             Step(key="switch_version", title="Switch compose file", action=switch, shows=(),
                  leaves="switched", timeout_s=10, destructive=True))
    run = Run(run_id=run_id, request=req("alice"),
              procedure=Procedure(name=ProcedureName.SIMPLE, title="t", initial_state="as found",
                                  steps=steps, succeeded_state="done"),
              context=StepContext(host=none, docker=none, probe=none, env=none,
                                  current="v1.2.3", target="v1.2.2", facts=RunFacts(),
                                  emit=lambda _l: None),
              checks=(), observers=[])
    store.guard(run)
    outcome = await run.execute()
    assert ran == ["stop"]  # the next step never started
    assert outcome.status is RunStatus.CANCELLED
    assert outcome.host_state == STOPPED
    assert outcome.message.startswith("Stopped before 'Switch compose file': rollbot lost the "
                                      "database session that held production's lock")
    assert "another rollbot process may now take the environment" in outcome.message
    await store.finish_run(outcome)  # the record is still written; nothing else is held
    assert store.run_lock(run_id) is None


async def test_without_slack_the_log_says_a_run_was_interrupted(
        store: Store, other: Store, caplog: pytest.LogCaptureFixture) -> None:
    dead = await other.begin_run(req("alice"), owner="host-b:666")
    await die(other, dead)
    reaper = DeadRunReaper(store=store, recoveries=RecoveryStore(store.pool), who="host-a:1")
    with caplog.at_level("WARNING", logger="bot.recovery.interrupted"):
        assert await reaper.sweep() == [dead]
    [line] = [r for r in caplog.records if r.name == "bot.recovery.interrupted"]
    assert line.levelname == "WARNING"
    assert f"run #{dead} in production" in line.getMessage()
    assert "(host-b:666) died" in line.getMessage()


async def test_a_run_of_an_older_rollbot_holding_no_lock_is_not_taken_for_dead(
        store: Store) -> None:
    """During a rolling upgrade an old replica's run holds no session lock: only its heartbeat
    going quiet for 60 s counts, as before."""
    legacy = int(await store.pool.fetchval(
        "INSERT INTO runs (environment, procedure, state, requested_by, owner)"
        " VALUES ('production', 'simple', 'running', 'alice', 'old:1') RETURNING id"))
    assert await dead_runs(store.pool) == []
    with pytest.raises(RunLocked, match=f"run #{legacy} "):
        await store.begin_run(req("bob"), owner="host-a:1")
    await store.pool.execute(
        "UPDATE runs SET heartbeat_at = now() - interval '2 minutes' WHERE id = $1", legacy)
    fresh = await store.begin_run(req("bob"), owner="host-a:1")
    assert (await store.get_run(legacy)).status is RunStatus.INTERRUPTED  # type: ignore[union-attr]
    assert (await store.active_run("production")).id == fresh  # type: ignore[union-attr]
