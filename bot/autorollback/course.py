"""One deploy's course under its lease: watch → countdown or offer → rollback, told as it goes.

``AutoRollback`` (``machine.py``) takes what comes from outside (CI's hooks, clicks, start and
shutdown); this module runs what follows on the replica holding the deploy's lease, and carries on
a deploy taken over from a replica that stopped: the watch for the time it has left (its 5xx
window starts again), the countdown to its stored deadline. Every move of the deploy is
conditional on its state and on the lease, so a countdown never fires twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from bot.autorollback.deploys import Deploy, DeployState, DeployStore
from bot.autorollback.leases import LeasedWork, LeaseStore, LeaseTimes
from bot.autorollback.notifier import LogNotifier, Notifier, Where
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
CountdownHook = Callable[[Deploy, Sequence[str], float], Awaitable[None]]
# A watch or countdown taken over this long after it should have ended is not acted on by
# itself (every replica was down for a while): it waits for a person, as after a restart.
STALE_S = 60.0


def ci_failure(deploy: Deploy) -> str:
    """What CI reported, in the words the on-call person reads."""
    if deploy.stage == "migration_failed":
        return "CI reports: database migrations failed during the deploy"
    return "CI reports: the new version failed to start during the deploy"


def _docker(reached: list[Reached]) -> DockerFacts:
    session = reached[0].session
    assert session is not None  # open_sessions(strict=True) raised otherwise
    return session.docker


class DeployCourse:
    """Runs deploys' watches, countdowns and rollbacks; tells the notifier what happens."""

    def __init__(self, *, rollbot: Rollbot, deploys: DeployStore, leases: LeaseStore,
                 lease_times: LeaseTimes, notifier: Notifier | None = None) -> None:
        self._rollbot = rollbot
        self._deploys = deploys
        self.notifier: Notifier = notifier or LogNotifier()
        self._tasks: set[asyncio.Task[None]] = set()
        self.work = LeasedWork(leases, times=lease_times, on_taken=self.carry_on)
        self.countdown_hooks: list[CountdownHook] = []

    async def handle(self, deploy: Deploy) -> None:
        """A deploy this replica holds the lease of, from where its row stands."""
        await self._or_interrupt(deploy.id, self._handle(deploy))

    async def carry_on(self, deploy_id: int) -> None:
        """A deploy taken over from a replica that stopped: its watch or countdown goes on."""
        await self._or_interrupt(deploy_id, self._carry_on(deploy_id))

    async def _or_interrupt(self, deploy_id: int, work: Awaitable[None]) -> None:
        # A watch that fails (its host unreachable) waits for a person instead of being
        # released and taken again by a replica every few seconds, each time told in Slack.
        try:
            await work
        except RollbotError as exc:
            log.warning("deploy #%s: the watch or countdown failed: %s", deploy_id, exc)
            await self._interrupt(await self._deploys.get(deploy_id),
                                  f"the watch or countdown failed: {exc}")
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("deploy #%s: the watch or countdown failed (ref %s)", deploy_id, ref)
            await self._interrupt(await self._deploys.get(deploy_id),
                                  f"the watch or countdown failed inside rollbot (ref {ref})")

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
        span = (cfg.planned_checks - 1) * cfg.interval_seconds
        left, fresh = await self._deploys.watch_left(deploy.id, watch_s=span)
        if fresh:
            told = self.notifier.watching(deploy, cfg)
        else:  # taken over: the looks left (the 5xx window starts again with them)
            told = self.notifier.taken_over(deploy, seconds_left=max(0.0, left))
        deploy = await self._remember(deploy, await self.tell(deploy, told))
        checks = cfg.planned_checks if fresh else math.floor(max(0.0, left)
                                                             / cfg.interval_seconds) + 1
        started = time.monotonic() - max(0.0, span - left)  # elapsed counts the whole watch
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
                await self.tell(deploy, self.notifier.healthy(deploy, cfg, result,
                                                              elapsed_s=elapsed))
            else:
                await self.tell(deploy, self.notifier.observed(deploy, cfg, result,
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
                                 on_observation=shown, checks=checks)
        if not result.failed and await self._deploys.move(
                deploy.id, (DeployState.WATCHING,), DeployState.HEALTHY,
                detail=f"{len(result.observations)} checks green", holder=self.work.holder):
            await paced(result, done=True)
        return result.triggers

    async def _offer(self, deploy: Deploy, triggers: list[str]) -> None:
        """CI's own failure report without trust: offered to a person, no countdown."""
        if not await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.OFFERED,
                                        detail="; ".join(triggers), holder=self.work.holder):
            return
        deploy = await self._deploys.get(deploy.id)
        await self._remember(deploy, await self.tell(deploy,
                                                     self.notifier.offered(deploy, triggers)))

    async def _countdown(self, deploy: Deploy, triggers: list[str]) -> None:
        _, env = self._rollbot.environment(deploy.environment)
        seconds = env.auto_rollback.countdown_seconds
        if not await self._deploys.move(deploy.id, (DeployState.WATCHING,),
                                        DeployState.COUNTDOWN, detail="; ".join(triggers),
                                        countdown_s=seconds, holder=self.work.holder):
            return
        deploy = await self._deploys.get(deploy.id)
        await self._remember(deploy, await self.tell(deploy, self.notifier.counting_down(
            deploy, triggers, seconds=seconds)))
        for hook in self.countdown_hooks:  # the recorder's write is bounded and never raises
            await self.tell(deploy, hook(deploy, triggers, seconds))
        await self._count_down(deploy, seconds)

    async def _count_down(self, deploy: Deploy, seconds: float) -> None:
        """Wait ``seconds`` unless a person decides first; then the rollback starts, once."""
        end = time.monotonic() + seconds
        while (wait := end - time.monotonic()) > 0:
            await asyncio.sleep(min(_POLL_S, wait))
            if (await self._deploys.get(deploy.id)).state is not DeployState.COUNTDOWN:
                return  # cancelled, or someone chose "Roll back now"
        # Shielded: a hand-over arriving now cannot split the move from the rollback's start.
        fire = asyncio.create_task(self._fire(deploy))
        self._tasks.add(fire)  # referenced until done, and waited for by wait_idle
        fire.add_done_callback(self._tasks.discard)
        await asyncio.shield(fire)

    async def _fire(self, deploy: Deploy) -> None:
        if await self._deploys.move(deploy.id, (DeployState.COUNTDOWN,),
                                    DeployState.ROLLING_BACK, by=AUTOMATIC,
                                    holder=self.work.holder):
            # Not leased work: the rollback goes on when this replica hands its leases over.
            self.spawn(self.roll_back(await self._deploys.get(deploy.id), by=AUTOMATIC))

    async def _carry_on(self, deploy_id: int) -> None:
        deploy = await self._deploys.get(deploy_id)
        if deploy.state is DeployState.COUNTDOWN:
            left = await self._deploys.countdown_left(deploy.id)
            if left is None or left < -STALE_S:
                await self._interrupt(deploy, "the countdown ended while no rollbot replica was "
                                              "running")
                return
            deploy = await self._remember(deploy, await self.tell(
                deploy, self.notifier.taken_over(deploy, seconds_left=max(0.0, left))))
            await self._count_down(deploy, max(0.0, left))
            return
        if deploy.stage == "deployed" and deploy.state is DeployState.WATCHING:
            _, env = self._rollbot.environment(deploy.environment)
            cfg = env.auto_rollback
            left, fresh = await self._deploys.watch_left(
                deploy.id, watch_s=(cfg.planned_checks - 1) * cfg.interval_seconds)
            if not fresh and left < -STALE_S:
                await self._interrupt(deploy, "the watch ended while no rollbot replica was "
                                              "running")
                return
        await self._handle(deploy)  # the watch goes on for what is left of it

    async def _interrupt(self, deploy: Deploy, why: str) -> None:
        if await self._deploys.move(deploy.id, (DeployState.WATCHING, DeployState.COUNTDOWN),
                                    DeployState.INTERRUPTED,
                                    detail=f"{why.rstrip('. ')}; nothing was rolled back",
                                    holder=self.work.holder):
            await self.tell(deploy, self.notifier.interrupted(
                await self._deploys.get(deploy.id)))

    async def roll_back(self, deploy: Deploy, *, by: str) -> None:
        """The ``simple`` procedure to the previous version, like any rollback (then quarantine)."""
        request = RollbackRequest(
            environment=deploy.environment, procedure=ProcedureName.SIMPLE,
            target=parse_version(deploy.previous_version), requested_by=AUTOMATIC,
            reason=f"automatic rollback of {deploy.version}: {deploy.detail}", approved_by=(by,))

        async def attach(event: RunEvent) -> None:
            # As soon as the run exists: its thread and history link are found through the deploy.
            if isinstance(event, RunStarted):
                await self._deploys.attach_run(deploy.id, event.run_id)

        observers = await self.tell(deploy, self.notifier.rolling_back(deploy, request)) or ()
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
            await self.tell(deploy, self.notifier.not_rolled_back(deploy, problem))
        else:
            await self.tell(deploy, self.notifier.rolled_back(deploy, outcome))

    async def tell(self, deploy: Deploy, told: Awaitable[_T]) -> _T | None:
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

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a rollback in the background (not under a lease: it ends where it began)."""
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
        end = time.monotonic() + timeout_s
        # A countdown ending here starts a rollback task: wait until neither kind is left.
        while (tasks := [*self._tasks, *self.work.tasks()]) and time.monotonic() < end:
            await asyncio.wait(tasks, timeout=end - time.monotonic())
