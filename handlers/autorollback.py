"""Automatic rollback in Slack: the watch after a CI deploy, the countdown, and the rollback.

A deploy announced through the signed hook is watched in one live message; when a trigger fires,
a countdown message says what was seen and offers **Roll back now** and **Cancel**; with no click
the `simple` procedure runs to the previous version, as rollbot itself ("automatic"), through the
same flow as a person's rollback: live message, notice, verification, report, checklist.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import SlackConfig
from bot.deploys import Deploy, DeployState, DeployStore
from bot.model import ProcedureName, RollbackRequest
from bot.service import Rollbot
from bot.session import open_session
from bot.versions import parse_version
from bot.watch import Observation, watch
from handlers import blocks as ui
from handlers.flows import Reply, SlackFront
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
        return 202, {"deploy": deploy.id, "status": "watching" if stage == "deployed"
                     else "counting down"}

    async def _handle(self, deploy: Deploy) -> None:
        if deploy.stage == "deployed":
            triggers = await self._watch(deploy)
            if not triggers:
                return
        elif deploy.stage == "migration_failed":
            triggers = ["database migrations failed during the deploy"]
        else:
            triggers = ["the new image failed to start during the deploy"]
        await self._countdown(deploy, triggers)

    async def _watch(self, deploy: Deploy) -> list[str]:
        env_name, env = self._rollbot.environment(deploy.environment)
        cfg = env.auto_rollback
        seen: list[Observation] = []
        head = (f"🚀 {deploy.environment}: {deploy.previous_version} → {deploy.version} deployed"
                f"{f' by {ui.esc(deploy.actor)}' if deploy.actor else ''}. Watching: "
                f"{cfg.checks} checks, {cfg.interval_seconds:g} s apart.")
        posted = await self._client.chat_postMessage(channel=self._config.incidents_channel,
                                                     text=head, blocks=[ui.section(head)])
        ref = {"channel": self._config.incidents_channel, "ts": str(posted["ts"])}
        await self._deploys.set_front_ref(deploy.id, ref)

        async def shown(obs: Observation) -> None:
            seen.append(obs)
            lines = [f"{'✅' if o.healthy else '❌'} check {o.index + 1}: health "
                     f"{o.health or 'no answer'}, version {o.version or '?'}"
                     f"{', ' + ', '.join(o.containers_bad) if o.containers_bad else ''}"
                     for o in seen]
            await self._update(ref, head, [ui.section(head), ui.section("\n".join(lines))])

        async with open_session(env_name, env, store=self._rollbot.store, actor=AUTOMATIC,
                                run_id=None) as session:
            result = await watch(env=env, probe=self._rollbot.probe, docker=session.docker,
                                 deployed=deploy.version, on_observation=shown)
        if not result.failed:
            await self._deploys.move(deploy.id, (DeployState.WATCHING,), DeployState.HEALTHY,
                                     detail=f"{len(result.observations)} checks green")
            done = f"✅ {deploy.version} in {deploy.environment} is healthy: " \
                   f"{len(result.observations)} checks green. Nothing to roll back."
            await self._update(ref, done, [ui.section(done)])
        return result.triggers

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
                                                    DeployState.INTERRUPTED),
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
                                                    DeployState.INTERRUPTED),
                                        DeployState.CANCELLED, by=user):
            reason = f"Too late to cancel: this deploy is {deploy.state.value.replace('_', ' ')}."
            await reply(ui.refusal(reason), reason)
            return
        await self._rollbot.store.audit(environment=deploy.environment, actor=user,
                                        kind="auto_cancel",
                                        detail=f"cancelled the automatic rollback of "
                                               f"{deploy.version}: {deploy.detail}")
        text = (f"🛑 Automatic rollback of {deploy.version} cancelled by {ui.mention(user)}. "
                f"Nothing was rolled back; {deploy.version} stays in {deploy.environment}.")
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
