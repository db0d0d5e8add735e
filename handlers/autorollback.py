"""Automatic rollback in Slack: the machine's notifier, its messages, and its buttons.

The state machine lives in ``bot/autorollback/machine.py``; this module renders what it decided:
the watch in one live message, the countdown with **Roll back now** and **Cancel**, CI's failure
offered as buttons, the restart notice, and the run itself (live message, stakeholder notice,
report and checklist in its thread), like a person's rollback. The buttons call the machine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.autorollback.deploys import Deploy, DeployState
from bot.autorollback.machine import AutoRollback
from bot.autorollback.notifier import Where
from bot.autorollback.watch import WatchResult, window_ratio
from bot.config import AutoRollbackConfig, SlackConfig
from bot.events import Observer, RunEvent, RunStarted
from bot.model import RollbackRequest, RunOutcome, RunStatus
from handlers import blocks as ui
from handlers.blocks.run import LiveState
from handlers.front import Reply, SlackFront
from handlers.ids import Action, Block
from handlers.listeners import Kind, Row
from handlers.live import LiveRun
from handlers.metadata import DeployRef, NextStep, load
from handlers.slack_writer import SlackMessage, SlackWriter

log = logging.getLogger(__name__)

_FINAL_DELIVERY_S = 600.0


@dataclass
class _ShownRun:
    """An automatic rollback's run as Slack shows it: the live message and its writer."""

    writer: SlackWriter
    message: SlackMessage
    live: LiveRun


class SlackAutoRollback:
    """The Slack notifier of the automatic-rollback machine, and the handlers of its buttons."""

    def __init__(self, *, auto: AutoRollback, front: SlackFront, client: AsyncWebClient,
                 config: SlackConfig,
                 min_update_interval_s: float = 1.0) -> None:
        self._auto = auto
        self._front = front
        self._client = client
        self._config = config
        self._interval = min_update_interval_s
        self._runs: dict[int, _ShownRun] = {}

    # --- clicks ----------------------------------------------------------------------------

    async def on_roll_back_now(self, *, user: str, deploy_id: int, reply: Reply) -> None:
        if refusal := await self._front.user_refusal(user, "roll back"):
            await reply(ui.refusal(refusal), refusal)
            return
        decision = await self._auto.roll_back_now(deploy_id, by=user)
        if not decision.taken:
            await reply(ui.refusal(decision.reason), decision.reason)

    async def on_cancel(self, *, user: str, deploy_id: int, reply: Reply) -> None:
        if refusal := await self._front.user_refusal(user, "cancel an automatic rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        decision = await self._auto.cancel(deploy_id, by=user)
        if not decision.taken:
            await reply(ui.refusal(decision.reason), decision.reason)

    # --- the notifier: the watch, the countdown, the offer ---------------------------------

    async def watching(self, deploy: Deploy, config: AutoRollbackConfig) -> Where | None:
        text, blocks = watch_message(deploy, config, WatchResult(planned=config.planned_checks),
                                     elapsed_s=0.0)
        return await self._post(text, blocks)

    async def observed(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                       *, elapsed_s: float) -> None:
        await self._update(deploy, *watch_message(deploy, config, result, elapsed_s=elapsed_s))

    async def healthy(self, deploy: Deploy, config: AutoRollbackConfig, result: WatchResult,
                      *, elapsed_s: float) -> None:
        await self._update(deploy, *watch_message(deploy, config, result, elapsed_s=elapsed_s,
                                                  done=True))

    async def counting_down(self, deploy: Deploy, triggers: Sequence[str], *,
                            seconds: float) -> Where | None:
        return await self._post(*countdown_message(deploy, triggers, seconds=seconds))

    async def offered(self, deploy: Deploy, triggers: Sequence[str]) -> Where | None:
        return await self._post(*offer_message(deploy, triggers))

    async def interrupted(self, deploy: Deploy) -> None:
        await self._post(*interrupted_message(deploy))

    async def taken_over(self, deploy: Deploy, *, seconds_left: float) -> Where | None:
        text, blocks = taken_over_message(deploy, seconds_left=seconds_left)
        if "ts" not in deploy.front_ref:  # the replica that stopped never showed it
            return await self._post(text, blocks)
        await self._update(deploy, text, blocks)
        return None

    async def cancelled(self, deploy: Deploy, *, by: str, offered: bool) -> None:
        what = "Rollback offered for" if offered else "Automatic rollback of"
        done = "dismissed" if offered else "cancelled"
        text = (f"🛑 {what} {deploy.version} {done} by {ui.mention(by)}. "
                f"Nothing was rolled back; {deploy.environment} stays as CI left it.")
        await self._update(deploy, text, [ui.section(text)])

    # --- the notifier: the run, in the message that announced it ---------------------------

    async def rolling_back(self, deploy: Deploy, request: RollbackRequest) -> Sequence[Observer]:
        writer = SlackWriter(self._client, min_interval_s=self._interval)
        writer.start()
        ref = deploy.front_ref
        message = writer.message(str(ref.get("channel", self._config.incidents_channel)),
                                 ts=str(ref["ts"]) if "ts" in ref else None)
        live = LiveRun(writer=writer, message=message, state=LiveState(
            run_id=0, environment=request.environment, procedure=request.procedure,
            from_version="(pre-flight)", to_version=str(request.target or "previous"),
            requested_by=request.requested_by, confirmed_by=request.approved_by,
            reason=request.reason, started_at=datetime.now(UTC),
            board=self._front.kit.board(request.environment)),
            on_linked=self._front.kit.link_live_message)
        live.render()
        self._runs[deploy.id] = _ShownRun(writer=writer, message=message, live=live)

        async def show(event: RunEvent) -> None:
            if isinstance(event, RunStarted):
                live.state.run_id = event.run_id
            await live(event)
        return [show]

    async def rolled_back(self, deploy: Deploy, outcome: RunOutcome) -> None:
        shown = self._runs.pop(deploy.id, None)
        if shown is None:
            return
        try:
            if outcome.status is RunStatus.REFUSED:
                shown.live.state.outcome = outcome
                shown.live.state.host_state = outcome.host_state
                shown.live.render()
            await shown.writer.drain(timeout_s=_FINAL_DELIVERY_S)
            if outcome.status is RunStatus.REFUSED:
                return  # the live message says why; nothing happened to production
            # the notice, the report and the checklist, as for a person's rollback
            await self._front.run.post_notice(outcome, environment=deploy.environment,
                                              writer=shown.writer)
            if shown.message.ts:
                await self._front.after_run.show_records(
                    outcome.run_id, channel=shown.message.channel, thread_ts=shown.message.ts,
                    first=True)
        finally:
            await shown.writer.close()

    async def not_rolled_back(self, deploy: Deploy, reason: str) -> None:
        shown = self._runs.pop(deploy.id, None)
        if shown is None:
            return
        try:
            text = f"⚠️ The automatic rollback of {deploy.version} could not start: {reason}"
            shown.writer.set(shown.message, text=text, blocks=[ui.section(ui.esc(text))])
            await shown.writer.drain(timeout_s=60)
        finally:
            await shown.writer.close()

    # --- helpers ---------------------------------------------------------------------------

    async def _post(self, text: str, blocks: ui.Blocks) -> Where | None:
        channel = self._config.incidents_channel
        try:
            posted = await self._client.chat_postMessage(channel=channel, text=text,
                                                         blocks=blocks)
        except SlackApiError as exc:
            log.error("could not post to %s (%s): %s", channel, text, exc)
            return None
        return {"channel": channel, "ts": str(posted["ts"])}

    async def _update(self, deploy: Deploy, text: str, blocks: ui.Blocks) -> None:
        ref = deploy.front_ref
        try:
            await self._client.chat_update(channel=ref["channel"], ts=ref["ts"], text=text,
                                           blocks=blocks)
        except (SlackApiError, KeyError) as exc:
            log.warning("could not update the message of deploy #%s: %s", deploy.id, exc)


def interrupted_message(deploy: Deploy) -> tuple[str, ui.Blocks]:
    """After a restart: what was interrupted, and the two choices a person has."""
    text = (f"⚠️ rollbot stopped watching or counting down for {deploy.version} "
            f"in {deploy.environment} ({deploy.detail or 'no trigger yet'}). Nothing "
            "was rolled back; decide now.")
    ref = DeployRef(deploy=deploy.id).dump()
    return text, [ui.section(text), ui.actions(
        Block.AUTO_ACTIONS,
        ui.button(f"Roll back to {deploy.previous_version} now", Action.AUTO_ROLL_BACK_NOW, ref,
                  style="danger"),
        ui.button("Cancel", Action.AUTO_CANCEL, ref))]


def taken_over_message(deploy: Deploy, *, seconds_left: float) -> tuple[str, ui.Blocks]:
    """Another replica carries on: the countdown with its time left, or the watch's."""
    note = ui.context("⏩ Carried on by another rollbot replica: the one "
                      f"{'counting down' if deploy.state is DeployState.COUNTDOWN else 'watching'}"
                      " stopped.")
    if deploy.state is DeployState.COUNTDOWN:
        text, blocks = countdown_message(deploy, [deploy.detail], seconds=round(seconds_left))
        return text, [*blocks, note]
    text = (f"🚀 {deploy.environment}: {deploy.previous_version} → {deploy.version}. Watching "
            f"for the {_duration(seconds_left)} left of the watch.")
    return text, [ui.section(text), note]


def countdown_message(deploy: Deploy, triggers: Sequence[str], *, seconds: float
                      ) -> tuple[str, ui.Blocks]:
    """A trigger fired: what rollbot saw, the countdown, Roll back now and Cancel."""
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
                                 NextStep(deploy=deploy.id, environment=deploy.environment,
                                          version=deploy.previous_version).dump()))
    blocks.append(ui.actions(Block.AUTO_ACTIONS, *buttons))
    if deploy.run_url:
        blocks.append(ui.context(f"CI: {ui.esc(deploy.run_url)}"))
    return text, blocks


def offer_message(deploy: Deploy, triggers: Sequence[str]) -> tuple[str, ui.Blocks]:
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
                                 NextStep(deploy=deploy.id, environment=deploy.environment,
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


def _on(hosts: tuple[str, ...]) -> str:
    """Which fleet hosts a bad answer came from ("" for one host, or when all are healthy)."""
    return f" on {ui.esc(', '.join(hosts))}" if hosts else ""


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
        f"Last: health {last.health or 'no answer'}{_on(last.unhealthy)}, "
        f"version {ui.esc(last.version) or '?'}, "
        + (f"containers: {ui.esc(', '.join(last.containers_bad))}" if last.containers_bad
           else "containers up"),
        f"5xx over the last {window.checks} checks: {window.fives} of {window.answers} answers "
        f"({window.ratio:.0%}; limit {cfg.max_5xx_ratio:.0%})",
    ]
    if result.triggers:
        lines.append("❌ Watch stopped: " + "; ".join(ui.esc(t) for t in result.triggers))
    return head, [ui.section(head), ui.section("\n".join(lines))]


# The countdown's buttons, as rows of the Slack front's listener table (handlers/app.py).
def autorollback_rows(auto: SlackAutoRollback) -> list[Row]:
    """The countdown's Roll back now / Cancel buttons."""
    return [
        Row(Kind.ACTION, Action.AUTO_ROLL_BACK_NOW.value, lambda r: auto.on_roll_back_now(
            user=r.user, deploy_id=load(DeployRef, r.value).deploy, reply=r.reply)),
        Row(Kind.ACTION, Action.AUTO_CANCEL.value, lambda r: auto.on_cancel(
            user=r.user, deploy_id=load(DeployRef, r.value).deploy, reply=r.reply)),
    ]
