"""The automatic rollback as a state machine: deploy → watch → countdown or offer → run.

CI's deploy hook hands a deploy to ``receive``; the machine records it, watches it, and when a
trigger fires counts down (or, for a failure only CI reports, offers the rollback to a person).
With no click the ``simple`` procedure runs to the previous version through ``Rollbot.rollback``
as *rollbot (automatic)*. Every decision is one conditional update of the deploy's row, so the
countdown's timer, a click and a restarted process cannot start two rollbacks. What happens is
told to a ``Notifier``: Slack, or the log; this module knows neither.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from bot.autorollback.contract import DeployEvent
from bot.autorollback.deploys import Deploy, DeployState, DeployStore, Quarantined
from bot.autorollback.notifier import LogNotifier, Notifier, Where
from bot.autorollback.sightings import Sightings, check_previous_version
from bot.autorollback.watch import Observation, WatchedHost, WatchResult, watch
from bot.edges.reach import Reached, open_sessions
from bot.errors import RollbotError
from bot.events import RunEvent, RunStarted
from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus
from bot.ports import DockerFacts
from bot.service import Rollbot
from bot.versions import parse_version

log = logging.getLogger(__name__)

AUTOMATIC = "rollbot (automatic)"
_POLL_S = 0.2
_T = TypeVar("_T")
_OPEN = (DeployState.COUNTDOWN, DeployState.INTERRUPTED, DeployState.OFFERED)


class Reception(StrEnum):
    """What became of a deploy CI announced (the hook maps it to an HTTP status)."""

    REFUSED = "refused"      # previous_version not acceptable: nothing recorded
    REPEATED = "repeated"    # the same deploy again: answered as before, watched once
    DISABLED = "disabled"    # recorded; automatic rollback is off for the environment
    ACCEPTED = "accepted"    # recorded; watching, counting down or offered


@dataclass(frozen=True)
class Received:
    """The machine's answer to CI: what it did, and the JSON body that says so."""

    reception: Reception
    answer: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """A person's click on a deploy: taken, or the sentence that says why not."""

    taken: bool
    reason: str = ""


def ci_failure(deploy: Deploy) -> str:
    """What CI reported, in the words the on-call person reads."""
    if deploy.stage == "migration_failed":
        return "CI reports: database migrations failed during the deploy"
    return "CI reports: the new version failed to start during the deploy"


def _docker(reached: list[Reached]) -> DockerFacts:
    session = reached[0].session
    assert session is not None  # open_sessions(strict=True) raised otherwise
    return session.docker


def _state_words(deploy: Deploy) -> str:
    return deploy.state.value.replace("_", " ")


class AutoRollback:
    """Watches deploys, counts down, rolls back and quarantines; tells a notifier."""

    def __init__(self, *, rollbot: Rollbot, deploys: DeployStore, sightings: Sightings,
                 notifier: Notifier | None = None) -> None:
        self._rollbot = rollbot
        self._deploys = deploys
        self._sightings = sightings
        self._notifier: Notifier = notifier or LogNotifier()
        self._tasks: set[asyncio.Task[None]] = set()

    def notify_with(self, notifier: Notifier) -> None:
        """Tell ``notifier`` from now on (the composition root's choice: Slack or the log)."""
        self._notifier = notifier

    # --- what CI's hooks ask ---------------------------------------------------------------

    async def receive(self, event: DeployEvent) -> Received:
        """Judge CI's deploy, record it and start watching it (``InvalidInput``: unknown env)."""
        env_name, env = self._rollbot.environment(event.environment)
        ci = f"ci:{event.actor or '?'}"
        stage = event.stage.value
        # The same deploy sent again is answered as before, not judged against what it caused.
        seen_before = await self._deploys.find(
            environment=env_name, version=event.version, previous_version=event.previous_version,
            stage=stage, commit=event.commit)
        note = ""
        if seen_before is None:
            verdict = await check_previous_version(
                sightings=self._sightings, deploys=self._deploys, environment=env_name,
                version=event.version, previous=event.previous_version)
            if not verdict.accepted:
                await self._rollbot.store.audit(
                    environment=env_name, actor=ci, kind="refusal",
                    detail=f"deploy hook refused ({stage} {event.version}): {verdict.reason}")
                return Received(Reception.REFUSED, {"error": verdict.reason})
            note = verdict.reason
        deploy, new = await self._deploys.record(
            environment=env_name, version=event.version, previous_version=event.previous_version,
            stage=stage, commit=event.commit, actor=event.actor, run_url=event.run_url)
        if not new:
            received = Received(Reception.REPEATED, {
                "deploy": deploy.id, "state": deploy.state.value,
                "status": "already received; watched once"})
        elif not env.auto_rollback.enabled:
            await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.HEALTHY,
                                     detail="automatic rollback is disabled for this "
                                            "environment")
            received = Received(Reception.DISABLED, {"deploy": deploy.id,
                                                     "status": "automatic rollback disabled"})
        else:
            self._spawn(self._handle(deploy))
            if stage == "deployed":
                status = "watching"
            elif env.auto_rollback.trust_ci_failures:
                status = "counting down"
            else:
                status = "offered to a person (trust_ci_failures is off)"
            received = Received(Reception.ACCEPTED, {"deploy": deploy.id, "status": status})
        if note:
            received.answer["previous_version"] = note
        await self._rollbot.store.audit(environment=env_name, actor=ci, kind="deploy",
                                        detail=f"{stage} {event.version} (from "
                                               f"{event.previous_version}): {received.answer}")
        return received

    async def first_sighting(self, signature: str) -> bool:
        """True the first time any rollbot process sees this hook signature (else a replay)."""
        return await self._deploys.first_sighting(signature)

    async def quarantined(self, environment: str, version: str) -> Quarantined | None:
        """Who quarantined ``version`` and why, or None when CI may deploy it."""
        env_name, _ = self._rollbot.environment(environment)
        return await self._deploys.quarantined(env_name, version)

    async def record_refusal(self, detail: str) -> None:
        """A hook request refused before its body was read (bad signature, replay): audited."""
        log.warning("%s", detail)
        try:
            await self._rollbot.store.audit(
                environment=self._rollbot.runbook.default_environment, actor="ci",
                kind="refusal", detail=detail)
        except Exception as exc:
            log.error("AUDIT WRITE FAILED (%s): %s", detail, exc)

    # --- the state machine -----------------------------------------------------------------

    async def _handle(self, deploy: Deploy) -> None:
        if deploy.stage == "deployed":
            triggers = await self._watch(deploy)
            if not triggers:
                return
        else:
            triggers = [ci_failure(deploy)]
            _, env = self._rollbot.environment(deploy.environment)
            if not env.auto_rollback.trust_ci_failures:
                # Only CI says so: a person decides, nothing runs by itself.
                await self._offer(deploy, triggers)
                return
        await self._countdown(deploy, triggers)

    async def _watch(self, deploy: Deploy) -> list[str]:
        env_name, env = self._rollbot.environment(deploy.environment)
        cfg = env.auto_rollback
        deploy = await self._remember(deploy, await self._tell(
            deploy, self._notifier.watching(deploy, cfg)))
        started = time.monotonic()
        last_told = -math.inf   # the start itself is not an update

        async def paced(result: WatchResult, *, done: bool = False) -> None:
            # At most once per interval: a 30-minute watch is one bounded message (or log line
            # per check). Looks come on that cadence, so waiting out a few ms of jitter drops none.
            nonlocal last_told
            wait = last_told + cfg.interval_seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            last_told = time.monotonic()
            elapsed = last_told - started
            if done:
                await self._tell(deploy, self._notifier.healthy(deploy, cfg, result,
                                                                elapsed_s=elapsed))
            else:
                await self._tell(deploy, self._notifier.observed(deploy, cfg, result,
                                                                 elapsed_s=elapsed))

        async def shown(_obs: Observation, result: WatchResult) -> None:
            await paced(result)

        # Every host of a fleet, each over its own connection; one host as before.
        async with open_sessions(env_name, env, store=self._rollbot.store, actor=AUTOMATIC,
                                 run_id=None, strict=True) as reached:
            fleet = [WatchedHost(r.name, r.env, r.session.docker)
                     for r in reached if r.session is not None] if env.hosts else []
            result = await watch(env=env, probe=self._rollbot.probe, deployed=deploy.version,
                                 docker=None if fleet else _docker(reached), fleet=fleet,
                                 on_observation=shown)
        if not result.failed:
            await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.HEALTHY,
                                     detail=f"{len(result.observations)} checks green")
            await paced(result, done=True)
        return result.triggers

    async def _offer(self, deploy: Deploy, triggers: list[str]) -> None:
        """CI's own failure report without trust: offered to a person, no countdown."""
        if not await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.OFFERED,
                                        detail="; ".join(triggers)):
            return
        deploy = await self._deploys.get(deploy.id)
        await self._remember(deploy, await self._tell(deploy,
                                                      self._notifier.offered(deploy, triggers)))

    async def _countdown(self, deploy: Deploy, triggers: list[str]) -> None:
        _, env = self._rollbot.environment(deploy.environment)
        seconds = env.auto_rollback.countdown_seconds
        if not await self._deploys.move(deploy.id, (DeployState.WATCHING,),
                                        DeployState.COUNTDOWN, detail="; ".join(triggers),
                                        countdown_s=seconds):
            return
        deploy = await self._deploys.get(deploy.id)
        await self._remember(deploy, await self._tell(deploy, self._notifier.counting_down(
            deploy, triggers, seconds=seconds)))
        deadline = datetime.now(UTC) + timedelta(seconds=seconds)
        while datetime.now(UTC) < deadline:
            await asyncio.sleep(_POLL_S)
            if (await self._deploys.get(deploy.id)).state is not DeployState.COUNTDOWN:
                return  # cancelled, or someone chose "Roll back now"
        if await self._deploys.move(deploy.id, (DeployState.COUNTDOWN,),
                                    DeployState.ROLLING_BACK, by=AUTOMATIC):
            await self._roll_back(await self._deploys.get(deploy.id), by=AUTOMATIC)

    async def _roll_back(self, deploy: Deploy, *, by: str) -> None:
        """The ``simple`` procedure to the previous version, like any rollback (then quarantine)."""
        request = RollbackRequest(
            environment=deploy.environment, procedure=ProcedureName.SIMPLE,
            target=parse_version(deploy.previous_version), requested_by=AUTOMATIC,
            reason=f"automatic rollback of {deploy.version}: {deploy.detail}", approved_by=(by,))

        async def attach(event: RunEvent) -> None:
            # As soon as the run exists: its thread and history link are found through the deploy.
            if isinstance(event, RunStarted):
                await self._deploys.attach_run(deploy.id, event.run_id)

        observers = await self._tell(deploy, self._notifier.rolling_back(deploy, request)) or ()
        try:
            outcome: RunOutcome | None = await self._rollbot.rollback(
                request, observers=[attach, *observers])
            problem = ""
        except RollbotError as exc:
            outcome, problem = None, str(exc)
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("automatic rollback of deploy #%s failed (ref %s)", deploy.id, ref)
            outcome, problem = None, f"something went wrong inside rollbot (ref {ref})"
        ok = outcome is not None and outcome.status is RunStatus.SUCCEEDED
        await self._deploys.move(deploy.id, (DeployState.ROLLING_BACK,),
                                 DeployState.ROLLED_BACK if ok else DeployState.FAILED)
        if outcome is None:
            await self._tell(deploy, self._notifier.not_rolled_back(deploy, problem))
        else:
            await self._tell(deploy, self._notifier.rolled_back(deploy, outcome))

    # --- what people decide ----------------------------------------------------------------

    async def roll_back_now(self, deploy_id: int, *, by: str) -> Decision:
        """Skip the countdown (or take the offer): the rollback starts now, once."""
        if not await self._deploys.move(deploy_id, _OPEN, DeployState.ROLLING_BACK, by=by):
            deploy = await self._deploys.get(deploy_id)
            return Decision(False, f"Nothing to do: this deploy is {_state_words(deploy)}.")
        self._spawn(self._roll_back(await self._deploys.get(deploy_id), by=by))
        return Decision(True)

    async def cancel(self, deploy_id: int, *, by: str) -> Decision:
        """Stop the countdown (or dismiss the offer); nothing is rolled back."""
        deploy = await self._deploys.get(deploy_id)
        if not await self._deploys.move(deploy_id, _OPEN, DeployState.CANCELLED, by=by):
            deploy = await self._deploys.get(deploy_id)
            return Decision(False, f"Too late to cancel: this deploy is {_state_words(deploy)}.")
        offered = deploy.state is DeployState.OFFERED
        did = ("dismissed the rollback offered for" if offered
               else "cancelled the automatic rollback of")
        await self._rollbot.store.audit(environment=deploy.environment, actor=by,
                                        kind="auto_cancel",
                                        detail=f"{did} {deploy.version}: {deploy.detail}")
        await self._tell(deploy, self._notifier.cancelled(deploy, by=by, offered=offered))
        return Decision(True)

    async def resume_after_restart(self) -> None:
        """Countdowns and watches a stopped rollbot left: reported; they wait for a person."""
        for deploy in await self._deploys.interrupt_countdowns():
            await self._tell(deploy, self._notifier.interrupted(deploy))

    async def quarantine_rolled_back(self, outcome: RunOutcome) -> None:
        """A ``Rollbot.finished_hooks`` entry: a version rolled back (by anyone) is quarantined.

        CI's ``/hooks/deploy/allowed`` then refuses it. ``from_version`` is pre-flight's
        "current": after a deploy that did not finish (the compose file names a newer release
        than still runs) it is the file's, failed one.
        """
        run = await self._rollbot.store.get_run(outcome.run_id)
        if (run is not None and outcome.status is RunStatus.SUCCEEDED
                and run.from_version and run.from_version != run.to_version):
            await self._deploys.quarantine(environment=run.environment, version=run.from_version,
                                           by=run.requested_by, run_id=run.id,
                                           reason=run.reason or "rolled back")

    # --- tasks -----------------------------------------------------------------------------

    async def _tell(self, deploy: Deploy, told: Awaitable[_T]) -> _T | None:
        """Tell the notifier; a failure to show something never stops the machine."""
        try:
            return await told
        except Exception:
            log.exception("the notifier failed to show deploy #%s (%s %s)", deploy.id,
                          deploy.environment, deploy.version)
            return None

    async def _remember(self, deploy: Deploy, where: Where | None) -> Deploy:
        """Keep where the notifier showed the deploy, for its later updates and the run."""
        if where is None:
            return deploy
        await self._deploys.set_front_ref(deploy.id, where)
        return replace(deploy, front_ref=where)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        async def wrapped() -> None:
            try:
                await coro
            except Exception:
                log.exception("automatic rollback task failed")
        task = asyncio.create_task(wrapped())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self, timeout_s: float) -> None:
        """Let watches, countdowns and rollbacks finish (at shutdown, and in tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
