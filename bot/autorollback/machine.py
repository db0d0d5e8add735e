"""The automatic rollback as a state machine: deploy → watch → countdown or offer → run.

CI's deploy hook hands a deploy to ``receive``; the machine records it, watches it, and when a
trigger fires counts down (or, for a failure only CI reports, offers the rollback to a person).
With no click the ``simple`` procedure runs to the previous version through ``Rollbot.rollback``
as *rollbot (automatic)*. Every decision is one conditional update of the deploy's row, so the
countdown's timer, a click and another replica cannot start two rollbacks. The watch and the
countdown run on the replica holding the deploy's lease (``leases.py``); when it dies another
replica carries them on from the row: the watch for the time it has left, the countdown to its
stored deadline. What happens is told to a ``Notifier``: Slack, or the log; this module knows
neither.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.autorollback.contract import DeployEvent
from bot.autorollback.course import AUTOMATIC, CountdownHook, DeployCourse, ci_failure
from bot.autorollback.deploys import Deploy, DeployState, DeployStore, Quarantined
from bot.autorollback.leases import LeaseStore, LeaseTimes, holder_id
from bot.autorollback.notifier import Notifier
from bot.autorollback.sightings import Sightings, check_previous_version
from bot.model import RunOutcome, RunRecord, RunStatus
from bot.service import Rollbot

__all__ = ["AUTOMATIC", "AutoRollback", "Decision", "Received", "Reception", "ci_failure"]

log = logging.getLogger(__name__)

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


def _state_words(deploy: Deploy) -> str:
    return deploy.state.value.replace("_", " ")


class AutoRollback:
    """Watches deploys, counts down, rolls back and quarantines; tells a notifier."""

    def __init__(self, *, rollbot: Rollbot, deploys: DeployStore, sightings: Sightings,
                 notifier: Notifier | None = None, leases: LeaseStore | None = None,
                 lease_times: LeaseTimes | None = None) -> None:
        self._rollbot = rollbot
        self._deploys = deploys
        self._sightings = sightings
        # Told of each version quarantined after a rollback (the signed events out).
        self.quarantine_hooks: list[Callable[[RunRecord, str], Awaitable[None]]] = []
        times = lease_times or LeaseTimes()
        self._course = DeployCourse(
            rollbot=rollbot, deploys=deploys, notifier=notifier, lease_times=times,
            leases=leases or LeaseStore(rollbot.store.pool, holder=holder_id(),
                                        ttl_s=times.ttl_s))

    @property
    def countdown_hooks(self) -> list[CountdownHook]:
        """Told of each countdown as it starts (the signed events out), whatever the notifier."""
        return self._course.countdown_hooks

    def notify_with(self, notifier: Notifier) -> None:
        """Tell ``notifier`` from now on (the composition root's choice: Slack or the log)."""
        self._course.notifier = notifier

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
            # This replica watches it, unless another took the lease first (then that one does).
            await self._course.work.claim(deploy.id, self._course.handle(deploy))
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

    # --- what people decide ----------------------------------------------------------------

    async def roll_back_now(self, deploy_id: int, *, by: str) -> Decision:
        """Skip the countdown (or take the offer): the rollback starts now, once."""
        if not await self._deploys.move(deploy_id, _OPEN, DeployState.ROLLING_BACK, by=by):
            deploy = await self._deploys.get(deploy_id)
            return Decision(False, f"Nothing to do: this deploy is {_state_words(deploy)}.")
        self._course.spawn(self._course.roll_back(await self._deploys.get(deploy_id), by=by))
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
        await self._course.tell(deploy, self._course.notifier.cancelled(deploy, by=by,
                                                                        offered=offered))
        return Decision(True)

    async def resume_after_restart(self) -> None:
        """From now on, renew this replica's leases and carry on the watches and countdowns
        of replicas that stopped (this one's previous life too); others' live work is theirs."""
        self._course.work.start()

    async def hand_over(self) -> list[int]:
        """At shutdown: stop watching and counting down here and release those leases at
        once, for another replica to carry on; the deploys handed over."""
        handed = await self._course.work.hand_over()
        if handed:
            log.warning("handed over the watch or countdown of deploys %s to the other rollbot "
                        "replicas", ", ".join(f"#{d}" for d in handed))
        return handed

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
            for hook in self.quarantine_hooks:
                try:
                    await hook(run, run.from_version)
                except Exception:
                    log.exception("quarantine hook failed for %s", run.from_version)

    async def wait_idle(self, timeout_s: float) -> None:
        """Let watches, countdowns and rollbacks finish (at shutdown, and in tests)."""
        await self._course.wait_idle(timeout_s)
