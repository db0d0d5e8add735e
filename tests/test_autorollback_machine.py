"""The automatic-rollback machine without Slack: CI's deploys, a person's choices, a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.autorollback.contract import parse_event
from bot.autorollback.deploys import Deploy, DeployState, DeployStore
from bot.autorollback.leases import LeaseStore, LeaseTimes
from bot.autorollback.machine import AutoRollback, Reception
from bot.autorollback.notifier import Where
from bot.autorollback.sightings import Sightings
from bot.autorollback.watch import WatchResult
from bot.config import AutoRollbackConfig, load_runbook
from bot.edges.http import HttpxProbe
from bot.errors import InvalidInput
from bot.events import Observer
from bot.model import RollbackRequest, RunOutcome
from bot.service import Rollbot
from bot.store.runs import Store

RUNBOOK = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml")


class Told:
    """A notifier that writes down what it was told, as a front would show it."""

    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self._fail = fail

    def _note(self, what: str, deploy: Deploy, **facts: Any) -> Where:
        self.events.append((what, deploy.id, facts))
        if self._fail:
            raise RuntimeError("the front is down")
        return {"shown": what}

    async def watching(self, deploy: Deploy, config: AutoRollbackConfig) -> Where | None:
        return self._note("watching", deploy)

    async def observed(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                       *, elapsed_s: float) -> None:
        self._note("observed", deploy)

    async def healthy(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                      *, elapsed_s: float) -> None:
        self._note("healthy", deploy)

    async def counting_down(self, deploy: Deploy, triggers: Sequence[str], *,
                            seconds: float) -> Where | None:
        return self._note("counting_down", deploy, triggers=list(triggers), seconds=seconds)

    async def offered(self, deploy: Deploy, triggers: Sequence[str]) -> Where | None:
        return self._note("offered", deploy, triggers=list(triggers))

    async def interrupted(self, deploy: Deploy) -> None:
        self._note("interrupted", deploy, detail=deploy.detail)

    async def taken_over(self, deploy: Deploy, *, seconds_left: float) -> Where | None:
        self._note("taken_over", deploy, state=deploy.state, seconds_left=seconds_left)
        return None

    async def cancelled(self, deploy: Deploy, *, by: str, offered: bool) -> None:
        self._note("cancelled", deploy, by=by, offered=offered)

    async def rolling_back(self, deploy: Deploy, request: RollbackRequest) -> Sequence[Observer]:
        self._note("rolling_back", deploy)
        return ()

    async def rolled_back(self, deploy: Deploy, outcome: RunOutcome) -> None:
        self._note("rolled_back", deploy, status=outcome.status)

    async def not_rolled_back(self, deploy: Deploy, reason: str) -> None:
        self._note("not_rolled_back", deploy, reason=reason)


@pytest.fixture
async def rollbot(store: Store) -> AsyncIterator[Rollbot]:
    async with httpx.AsyncClient() as client:
        yield Rollbot(runbook=RUNBOOK, store=store, probe=HttpxProbe(client))


def machine(rollbot: Rollbot, told: Told) -> AutoRollback:
    pool = rollbot.store.pool
    return AutoRollback(rollbot=rollbot, deploys=DeployStore(pool), sightings=Sightings(pool),
                        notifier=told)


def event(stage: str, *, version: str = "v1.2.3", previous: str = "v1.2.2",
          environment: str = "production") -> Any:
    body = (f'{{"environment": "{environment}", "version": "{version}", "previous_version": '
            f'"{previous}", "stage": "{stage}", "commit": "abc1234", "actor": "ci-bot"}}')
    return parse_event(body.encode())


async def test_ci_failure_is_offered_to_a_person_who_dismisses_it_and_nothing_runs(
    rollbot: Rollbot, store: Store
) -> None:
    told = Told()
    auto = machine(rollbot, told)
    received = await auto.receive(event("migration_failed"))
    assert received.reception is Reception.ACCEPTED
    assert received.answer["status"] == "offered to a person (trust_ci_failures is off)"
    assert "taken on CI's word" in received.answer["previous_version"]
    await auto.wait_idle(10)
    deploy_id = received.answer["deploy"]
    assert told.events == [("offered", deploy_id, {
        "triggers": ["CI reports: database migrations failed during the deploy"]})]
    # where the front showed it is kept for the later updates and the run
    assert (await DeployStore(store.pool).get(deploy_id)).front_ref == {"shown": "offered"}

    # CI sends the same deploy again: answered as before, offered once
    again = await auto.receive(event("migration_failed"))
    assert again.reception is Reception.REPEATED and again.answer["state"] == "offered"

    dismissed = await auto.cancel(deploy_id, by="U0BOB")
    assert dismissed.taken
    assert told.events[-1] == ("cancelled", deploy_id, {"by": "U0BOB", "offered": True})
    late = await auto.cancel(deploy_id, by="U0ALICE")
    assert (late.taken, late.reason) == (False, "Too late to cancel: this deploy is cancelled.")
    nothing = await auto.roll_back_now(deploy_id, by="U0ALICE")
    assert nothing.reason == "Nothing to do: this deploy is cancelled."
    await auto.wait_idle(10)
    assert await store.history() == []
    audit = await store.audit_entries()
    assert [a.actor for a in audit if a.kind == "auto_cancel"] == ["U0BOB"]
    assert [a.kind for a in audit if a.actor == "ci:ci-bot"] == ["deploy", "deploy"]


async def test_ci_may_not_aim_the_rollback_at_a_newer_version_or_an_unknown_environment(
    rollbot: Rollbot, store: Store
) -> None:
    auto = machine(rollbot, Told())
    refused = await auto.receive(event("start_failed", previous="v1.2.4"))
    assert refused.reception is Reception.REFUSED
    assert "is not lower than version v1.2.3" in refused.answer["error"]
    assert await DeployStore(store.pool).last_deployed("production") is None  # nothing recorded
    with pytest.raises(InvalidInput, match="There is no environment 'moon'"):
        await auto.receive(event("deployed", environment="moon"))
    with pytest.raises(InvalidInput, match="moon"):
        await auto.quarantined("moon", "v1.2.3")
    assert await auto.quarantined("production", "v1.2.3") is None
    assert [a.kind for a in await store.audit_entries()] == ["refusal"]
    # a hook signature is good once, by any rollbot process
    assert await auto.first_sighting("v0=" + "a" * 64)
    assert not await auto.first_sighting("v0=" + "a" * 64)


async def counting_down(store: Store, *, seconds: float, version: str = "v1.2.3",
                        held_by: str | None = None, lease_s: float = 60) -> Deploy:
    """A countdown some replica (``held_by``) began, its deadline ``seconds`` from now."""
    deploys = DeployStore(store.pool)
    deploy, _ = await deploys.record(environment="production", version=version,
                                     previous_version="v1.2.2", stage="start_failed",
                                     commit="abc1234", actor="ci-bot", run_url="")
    assert await deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.COUNTDOWN,
                              detail="health checks fail", countdown_s=seconds)
    if held_by is not None:
        assert await LeaseStore(store.pool, holder=held_by, ttl_s=lease_s).take(deploy.id)
    return await deploys.get(deploy.id)


def replica(rollbot: Rollbot, told: Told, name: str) -> AutoRollback:
    """A rollbot replica with short leases: a dead holder's work is taken within 0.6 s."""
    pool = rollbot.store.pool
    return AutoRollback(rollbot=rollbot, deploys=DeployStore(pool), sightings=Sightings(pool),
                        notifier=told, leases=LeaseStore(pool, holder=name, ttl_s=0.5),
                        lease_times=LeaseTimes(ttl_s=0.5, renew_s=0.1))


async def until(check: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the time")


async def test_a_restart_leaves_a_live_replicas_countdown_alone_and_carries_on_a_dead_ones(
    rollbot: Rollbot, store: Store
) -> None:
    deploys = DeployStore(store.pool)
    live = await counting_down(store, seconds=60, version="v1.2.3", held_by="live-replica")
    dead = await counting_down(store, seconds=30, version="v1.2.4", held_by="dead-replica",
                               lease_s=0.2)
    told = Told()
    restarted = replica(rollbot, told, "restarted")
    await restarted.resume_after_restart()
    await until(lambda: asyncio.sleep(0, result=bool(told.events)))
    await asyncio.sleep(0.5)  # several polls: the live replica's countdown stays its own
    [(what, deploy_id, facts)] = told.events
    assert (what, deploy_id, facts["state"]) == ("taken_over", dead.id, DeployState.COUNTDOWN)
    assert 25 < facts["seconds_left"] <= 30  # the time left to its deadline, not 30 again
    assert (await deploys.get(live.id)).state is DeployState.COUNTDOWN
    leases = LeaseStore(store.pool, holder="onlooker", ttl_s=1)
    assert await leases.holder_of(live.id) == "live-replica"
    assert await leases.holder_of(dead.id) == "restarted"
    # a person stops the countdown carried on here; the hand-over at shutdown releases the rest
    assert (await restarted.cancel(dead.id, by="U0BOB")).taken
    await restarted.wait_idle(5)  # the countdown sees the cancel at its next look
    assert await restarted.hand_over() == []
    assert await store.history() == []


async def test_two_replicas_carry_a_dead_replicas_countdown_on_once_to_its_deadline(
    rollbot: Rollbot, store: Store
) -> None:
    deploy = await counting_down(store, seconds=1.5, held_by="dead-replica", lease_s=0.1)
    started = time.monotonic()
    told_a, told_b = Told(), Told()
    a, b = replica(rollbot, told_a, "a"), replica(rollbot, told_b, "b")
    await a.resume_after_restart()
    await b.resume_after_restart()

    async def decided() -> bool:
        state = (await DeployStore(store.pool).get(deploy.id)).state
        return state is not DeployState.COUNTDOWN
    await until(decided)
    fired = time.monotonic() - started
    await a.wait_idle(30)
    await b.wait_idle(30)
    events = told_a.events + told_b.events
    assert [e[0] for e in events].count("taken_over") == 1
    assert [e[0] for e in events].count("rolling_back") == 1   # never twice
    assert 1.3 < fired < 4  # at the deadline set by the dead replica, not 1.5 s after takeover
    # one run (pre-flight refuses it: this test's example host is not reachable), told once
    assert [e[0] for e in events].count("rolled_back") == 1
    assert len(await store.history()) == 1
    await a.hand_over()
    await b.hand_over()


async def test_a_countdown_found_long_past_its_deadline_waits_for_a_person(
    rollbot: Rollbot, store: Store
) -> None:
    # every replica was down for minutes: nothing rolls back by itself on stale news
    deploy = await counting_down(store, seconds=-300)
    told = Told(fail=True)  # even when showing it fails, the machine goes on
    auto = replica(rollbot, told, "back")
    await auto.resume_after_restart()
    deploys = DeployStore(store.pool)

    async def interrupted() -> bool:  # recorded, then told (the telling comes a moment later)
        return (await deploys.get(deploy.id)).state is DeployState.INTERRUPTED and bool(
            told.events)
    await until(interrupted)
    assert told.events == [("interrupted", deploy.id, {
        "detail": "the countdown ended while no rollbot replica was running; nothing was "
                  "rolled back"})]
    # the person decides: cancelling works from the interrupted state, once
    assert (await auto.cancel(deploy.id, by="U0BOB")).taken
    assert (await deploys.get(deploy.id)).state is DeployState.CANCELLED
    await auto.hand_over()
    assert await store.history() == []


async def test_a_watch_that_cannot_reach_its_host_waits_for_a_person_and_is_not_retried(
    rollbot: Rollbot, store: Store
) -> None:
    # this test's example host does not exist: the watch cannot open its SSH connection
    told = Told()
    a, b = replica(rollbot, told, "a"), replica(rollbot, told, "b")
    await a.resume_after_restart()
    await b.resume_after_restart()
    received = await a.receive(event("deployed"))
    deploy_id = received.answer["deploy"]

    async def interrupted() -> bool:
        return (await DeployStore(store.pool).get(deploy_id)).state is DeployState.INTERRUPTED
    await until(interrupted)
    await asyncio.sleep(1.5)  # many lease polls: nobody takes it again
    assert [e[0] for e in told.events] == ["watching", "interrupted"]
    assert told.events[1][2]["detail"] == (
        "the watch or countdown failed: known_hosts file /secrets/known_hosts does not exist, "
        "so the host key of prod-user@prod-host:22 cannot be verified. Nothing was sent; "
        "nothing was rolled back")
    await a.hand_over()
    await b.hand_over()
    assert await store.history() == []
