"""The automatic-rollback machine without Slack: CI's deploys, a person's choices, a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.autorollback.contract import parse_event
from bot.autorollback.deploys import Deploy, DeployState, DeployStore
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


async def test_a_restart_during_a_countdown_tells_a_person_and_a_broken_front_stops_nothing(
    rollbot: Rollbot, store: Store
) -> None:
    deploys = DeployStore(store.pool)
    deploy, _ = await deploys.record(environment="production", version="v1.2.3",
                                     previous_version="v1.2.2", stage="start_failed",
                                     commit="abc1234", actor="ci-bot", run_url="")
    assert await deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.COUNTDOWN,
                              detail="health checks fail", countdown_s=60)
    told = Told(fail=True)  # even when showing it fails, the machine goes on
    await machine(rollbot, told).resume_after_restart()
    assert told.events == [("interrupted", deploy.id, {
        "detail": "rollbot restarted during the countdown; nothing was rolled back"})]
    assert (await deploys.get(deploy.id)).state is DeployState.INTERRUPTED
    # the person decides: cancelling works from the interrupted state, once
    assert (await machine(rollbot, told).cancel(deploy.id, by="U0BOB")).taken
    assert (await deploys.get(deploy.id)).state is DeployState.CANCELLED
