"""Automatic rollback in Slack: the watch after a CI deploy, the countdown, and the rollback.

A deploy announced through the signed hook is watched in one live message; when a trigger fires,
a countdown message says what was seen and offers **Roll back now** and **Cancel**; with no click
the `simple` procedure runs to the previous version, as rollbot itself ("automatic"), through the
same flow as a person's rollback: live message, notice, verification, report, checklist.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.autorollback.deploys import Deploy, DeployState, DeployStore
from bot.autorollback.watch import Observation, WatchResult, watch, window_ratio
from bot.config import AutoRollbackConfig, SlackConfig
from bot.edges.session import open_session
from bot.model import ProcedureName, RollbackRequest
from bot.service import Rollbot
from bot.versions import parse_version
from handlers import blocks as ui
from handlers.front import Reply, SlackFront
from handlers.ids import Action, Block
from handlers.metadata import DeployRef, NextStep

log = logging.getLogger(__name__)

AUTOMATIC = "rollbot (automatic)"
_POLL_S = 0.2


class AutoRollback:
    """Watches deploys, counts down, rolls back; every decision is one conditional update."""

    def __init__(self, *, rollbot: Rollbot, front: SlackFront, deploys: DeployStore,
                 client: AsyncWebClient, config: SlackConfig) -> None:
        self._rollbot = rollbot
        self._front = front
        self._deploys = deploys
        self._client = client
        self._config = config
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the hook --------------------------------------------------------------------------

    async def on_deploy(self, *, environment: str, version: str, previous_version: str,
                        stage: str, commit: str, actor: str, run_url: str
                        ) -> tuple[int, dict[str, Any]]:
        """Record the deploy and start watching it; the HTTP answer for CI."""
        _, env = self._rollbot.environment(environment)
        deploy, new = await self._deploys.record(
            environment=environment, version=version, previous_version=previous_version,
            stage=stage, commit=commit, actor=actor, run_url=run_url)
        if not new:
            return 200, {"deploy": deploy.id, "state": deploy.state.value,
                         "status": "already received; watched once"}
        if not env.auto_rollback.enabled:
            await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.HEALTHY,
                                     detail="automatic rollback is disabled for this "
                                            "environment")
            return 200, {"deploy": deploy.id, "status": "automatic rollback disabled"}
        self._spawn(self._handle(deploy))
        if stage == "deployed":
            status = "watching"
        elif env.auto_rollback.trust_ci_failures:
            status = "counting down"
        else:
            status = "offered to a person in Slack (trust_ci_failures is off)"
        return 202, {"deploy": deploy.id, "status": status}

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
        text, blocks = watch_message(deploy, cfg, WatchResult(planned=cfg.planned_checks),
                                     elapsed_s=0.0)
        posted = await self._client.chat_postMessage(channel=self._config.incidents_channel,
                                                     text=text, blocks=blocks)
        ref = {"channel": self._config.incidents_channel, "ts": str(posted["ts"])}
        await self._deploys.set_front_ref(deploy.id, ref)
        started = time.monotonic()
        last_update = -math.inf   # the post itself is not an edit

        async def paced(result: WatchResult, *, done: bool = False) -> None:
            # In place, at most once per interval: a 30-minute watch edits one bounded message.
            # Looks come on that cadence, so waiting out the few ms of jitter drops none.
            nonlocal last_update
            wait = last_update + cfg.interval_seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            last_update = time.monotonic()
            await self._update(ref, *watch_message(deploy, cfg, result,
                                                   elapsed_s=last_update - started, done=done))

        async def shown(_obs: Observation, result: WatchResult) -> None:
            await paced(result)

        async with open_session(env_name, env, store=self._rollbot.store, actor=AUTOMATIC,
                                run_id=None) as session:
            result = await watch(env=env, probe=self._rollbot.probe, docker=session.docker,
                                 deployed=deploy.version, on_observation=shown)
        if not result.failed:
            await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.HEALTHY,
                                     detail=f"{len(result.observations)} checks green")
            await paced(result, done=True)
        return result.triggers

    async def _offer(self, deploy: Deploy, triggers: list[str]) -> None:
        """CI's own failure report without trust: posted with the rollback as buttons."""
        if not await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.OFFERED,
                                        detail="; ".join(triggers)):
            return
        deploy = await self._deploys.get(deploy.id)
        text, blocks = offer_message(deploy, triggers)
        posted = await self._client.chat_postMessage(channel=self._config.incidents_channel,
                                                     text=text, blocks=blocks)
        await self._deploys.set_front_ref(deploy.id, {"channel": self._config.incidents_channel,
                                                      "ts": str(posted["ts"])})

    async def _countdown(self, deploy: Deploy, triggers: list[str]) -> None:
        _, env = self._rollbot.environment(deploy.environment)
        seconds = env.auto_rollback.countdown_seconds
        if not await self._deploys.move(deploy.id, (DeployState.WATCHING,),
                                        DeployState.COUNTDOWN, detail="; ".join(triggers),
                                        countdown_s=seconds):
            return
        deploy = await self._deploys.get(deploy.id)
        text, blocks = countdown_message(deploy, triggers, seconds=seconds)
        posted = await self._client.chat_postMessage(channel=self._config.incidents_channel,
                                                     text=text, blocks=blocks)
        ref = {"channel": self._config.incidents_channel, "ts": str(posted["ts"])}
        await self._deploys.set_front_ref(deploy.id, ref)
        deadline = datetime.now(UTC) + timedelta(seconds=seconds)
        while datetime.now(UTC) < deadline:
            await asyncio.sleep(_POLL_S)
            if (await self._deploys.get(deploy.id)).state is not DeployState.COUNTDOWN:
                return  # cancelled, or someone clicked "Roll back now"
        if await self._deploys.move(deploy.id, (DeployState.COUNTDOWN,),
                                    DeployState.ROLLING_BACK, by=AUTOMATIC):
            await self._roll_back(await self._deploys.get(deploy.id), by=AUTOMATIC)

    async def _roll_back(self, deploy: Deploy, *, by: str) -> None:
        request = RollbackRequest(
            environment=deploy.environment, procedure=ProcedureName.SIMPLE,
            target=parse_version(deploy.previous_version), requested_by=AUTOMATIC,
            reason=f"automatic rollback of {deploy.version}: {deploy.detail}")
        pending = await self._rollbot.store.approvals.propose(request, ttl=timedelta(minutes=5))
        ref = deploy.front_ref
        await self._rollbot.store.approvals.set_front_ref(pending.id, {
            "channel": ref["channel"], "ts": ref["ts"], "body": [], "facts": {}})
        move = await self._rollbot.store.approvals.confirm(pending.id, by=by,
                                                           needs_second=False)
        run_id = await self._front.run_pending(move.pending, confirmed_by=(by,))
        if run_id is not None:
            await self._deploys.attach_run(deploy.id, run_id)
        record = await self._rollbot.store.get_run(run_id) if run_id else None
        ok = record is not None and record.status.value == "succeeded"
        await self._deploys.move(deploy.id, (DeployState.ROLLING_BACK,),
                                 DeployState.ROLLED_BACK if ok else DeployState.FAILED)

    # --- clicks ----------------------------------------------------------------------------

    async def on_roll_back_now(self, *, user: str, deploy_id: int, reply: Reply) -> None:
        if refusal := await self._front.user_refusal(user, "roll back"):
            await reply(ui.refusal(refusal), refusal)
            return
        if not await self._deploys.move(deploy_id, (DeployState.COUNTDOWN,
                                                    DeployState.INTERRUPTED,
                                                    DeployState.OFFERED),
                                        DeployState.ROLLING_BACK, by=user):
            deploy = await self._deploys.get(deploy_id)
            reason = f"Nothing to do: this deploy is {deploy.state.value.replace('_', ' ')}."
            await reply(ui.refusal(reason), reason)
            return
        self._spawn(self._roll_back(await self._deploys.get(deploy_id), by=user))

    async def on_cancel(self, *, user: str, deploy_id: int, reply: Reply) -> None:
        if refusal := await self._front.user_refusal(user, "cancel an automatic rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        deploy = await self._deploys.get(deploy_id)
        if not await self._deploys.move(deploy_id, (DeployState.COUNTDOWN,
                                                    DeployState.INTERRUPTED,
                                                    DeployState.OFFERED),
                                        DeployState.CANCELLED, by=user):
            reason = f"Too late to cancel: this deploy is {deploy.state.value.replace('_', ' ')}."
            await reply(ui.refusal(reason), reason)
            return
        offered = deploy.state is DeployState.OFFERED
        did = ("dismissed the rollback offered for" if offered
               else "cancelled the automatic rollback of")
        await self._rollbot.store.audit(environment=deploy.environment, actor=user,
                                        kind="auto_cancel",
                                        detail=f"{did} {deploy.version}: {deploy.detail}")
        what = "Rollback offered for" if offered else "Automatic rollback of"
        done = "dismissed" if offered else "cancelled"
        text = (f"🛑 {what} {deploy.version} {done} by {ui.mention(user)}. "
                f"Nothing was rolled back; {deploy.environment} stays as CI left it.")
        await self._update(deploy.front_ref, text, [ui.section(text)])

    async def resume_after_restart(self) -> None:
        """Countdowns that a stopped rollbot left: reported, and they wait for a person."""
        for deploy in await self._deploys.interrupt_countdowns():
            text = (f"⚠️ rollbot restarted while watching or counting down for {deploy.version} "
                    f"in {deploy.environment} ({deploy.detail or 'no trigger yet'}). Nothing "
                    "was rolled back; decide now.")
            ref = DeployRef(deploy=deploy.id).dump()
            try:
                await self._client.chat_postMessage(
                    channel=self._config.incidents_channel, text=text, blocks=[
                        ui.section(text), ui.actions(
                            Block.AUTO_ACTIONS,
                            ui.button(f"Roll back to {deploy.previous_version} now",
                                      Action.AUTO_ROLL_BACK_NOW, ref, style="danger"),
                            ui.button("Cancel", Action.AUTO_CANCEL, ref))])
            except SlackApiError as exc:
                log.error("could not report interrupted deploy #%s: %s", deploy.id, exc)

    # --- helpers ---------------------------------------------------------------------------

    async def _update(self, ref: dict[str, Any], text: str, blocks: ui.Blocks) -> None:
        try:
            await self._client.chat_update(channel=ref["channel"], ts=ref["ts"], text=text,
                                           blocks=blocks)
        except (SlackApiError, KeyError) as exc:
            log.warning("could not update the deploy message: %s", exc)

    def _spawn(self, coro: Any) -> None:
        async def wrapped() -> None:
            try:
                await coro
            except Exception:
                log.exception("automatic rollback task failed")
        task = asyncio.create_task(wrapped())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)


def countdown_message(deploy: Deploy, triggers: list[str], *, seconds: float
                      ) -> tuple[str, ui.Blocks]:
    seen = "\n".join(f"• {ui.esc(t)}" for t in triggers)
    text = (f"⚠️ {deploy.version} in {deploy.environment} is failing. Rolling back to "
            f"{deploy.previous_version} in {seconds:g} s.")
    blocks: ui.Blocks = [ui.section(f"{text}\n*What rollbot saw:*\n{seen}")]
    ref = DeployRef(deploy=deploy.id).dump()
    buttons = [ui.button("Roll back now", Action.AUTO_ROLL_BACK_NOW, ref, style="danger"),
               ui.button("Cancel", Action.AUTO_CANCEL, ref)]
    if deploy.stage == "migration_failed":
        blocks.append(ui.section(
            "Database migrations are *not* rolled back automatically (spec: coordinate with "
            "the DBA). The `migrations` procedure is offered for a person to choose."))
        buttons.append(ui.button("Roll back with migrations…", Action.NEXT_MIGRATIONS,
                                 NextStep(run=1, environment=deploy.environment,
                                          version=deploy.previous_version).dump()))
    blocks.append(ui.actions(Block.AUTO_ACTIONS, *buttons))
    if deploy.run_url:
        blocks.append(ui.context(f"CI: {ui.esc(deploy.run_url)}"))
    return text, blocks


def ci_failure(deploy: Deploy) -> str:
    """What CI reported, in the words the on-call person reads."""
    if deploy.stage == "migration_failed":
        return "CI reports: database migrations failed during the deploy"
    return "CI reports: the new version failed to start during the deploy"


def offer_message(deploy: Deploy, triggers: list[str]) -> tuple[str, ui.Blocks]:
    """CI's failure report, with the rollback offered as buttons and no countdown."""
    seen = "\n".join(f"• {ui.esc(t)}" for t in triggers)
    text = (f"⚠️ {deploy.version} in {deploy.environment} failed to deploy"
            f"{f' (CI run by {ui.esc(deploy.actor)})' if deploy.actor else ''}. Nothing rolls "
            f"back by itself: choose below.")
    blocks: ui.Blocks = [ui.section(
        f"{text}\n*What CI reported:*\n{seen}\nrollbot did not see this failure itself and "
        "`auto_rollback.trust_ci_failures` is off, so a person decides.")]
    ref = DeployRef(deploy=deploy.id).dump()
    buttons = []
    if deploy.stage == "migration_failed":
        blocks.append(ui.section(
            f"The compose file may already name {deploy.version} and some of its migrations may "
            f"be applied. *Roll back with migrations…* opens the `migrations` card to "
            f"{deploy.previous_version} (migration rollback may lose data: coordinate with the "
            "DBA)."))
        buttons.append(ui.button("Roll back with migrations…", Action.NEXT_MIGRATIONS,
                                 NextStep(run=1, environment=deploy.environment,
                                          version=deploy.previous_version).dump(),
                                 style="primary"))
        buttons.append(ui.button(f"Roll back code only to {deploy.previous_version}",
                                 Action.AUTO_ROLL_BACK_NOW, ref))
    else:
        buttons.append(ui.button(f"Roll back to {deploy.previous_version} now",
                                 Action.AUTO_ROLL_BACK_NOW, ref, style="danger"))
    buttons.append(ui.button("Dismiss", Action.AUTO_CANCEL, ref))
    blocks.append(ui.actions(Block.AUTO_ACTIONS, *buttons))
    if deploy.run_url:
        blocks.append(ui.context(f"CI: {ui.esc(deploy.run_url)}"))
    return text, blocks


_RECENT = 12  # checks shown as icons: enough to see a trend, bounded for a 30-minute watch


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"


def watch_message(deploy: Deploy, cfg: AutoRollbackConfig, result: WatchResult, *,
                  elapsed_s: float, done: bool = False) -> tuple[str, ui.Blocks]:
    """The watch in one message of bounded size, however long the watch lasts."""
    length = (f"{cfg.planned_checks} checks" if cfg.checks is not None
              else f"{cfg.watch_minutes:g} min")
    head = (f"🚀 {deploy.environment}: {deploy.previous_version} → {deploy.version} deployed"
            f"{f' by {ui.esc(deploy.actor)}' if deploy.actor else ''}. Watching for {length}: "
            f"a check every {cfg.interval_seconds:g} s.")
    seen = result.observations
    if done and not result.failed:
        text = (f"✅ {deploy.version} in {deploy.environment} is healthy: {len(seen)} checks "
                f"green over {_duration(elapsed_s)}. Nothing to roll back.")
        return text, [ui.section(text)]
    if not seen:
        return head, [ui.section(head)]
    last = seen[-1]
    good = sum(1 for o in seen if o.healthy)
    window = window_ratio(seen, cfg.window_checks)
    recent = "".join("✅" if o.healthy else "❌" for o in seen[-_RECENT:])
    lines = [
        f"Check {len(seen)} of {result.planned} · {_duration(elapsed_s)} elapsed",
        f"Healthy {good} · not healthy {len(seen) - good} · last {min(len(seen), _RECENT)}: "
        f"{recent}",
        f"Last: health {last.health or 'no answer'}, version {ui.esc(last.version) or '?'}, "
        + (f"containers: {ui.esc(', '.join(last.containers_bad))}" if last.containers_bad
           else "containers up"),
        f"5xx over the last {window.checks} checks: {window.fives} of {window.answers} answers "
        f"({window.ratio:.0%}; limit {cfg.max_5xx_ratio:.0%})",
    ]
    if result.triggers:
        lines.append("❌ Watch stopped: " + "; ".join(ui.esc(t) for t in result.triggers))
    return head, [ui.section(head), ui.section("\n".join(lines))]
