"""`/rollback …` and @rollbot in Slack: parse, refuse or answer, or open a card or a form."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from bot.approvals import ApprovalService
from bot.decision import assess
from bot.errors import InvalidInput, RollbotError
from bot.model import RollbackRequest
from bot.post_rollback.follow_up import FollowUp
from handlers import blocks as ui
from handlers.assess import assess_modal, parse_assess_submission, verdict_message
from handlers.blocks.cards import history_message, permalink, plan_message, status_message
from handlers.front.cards import CardFront
from handlers.front.common import FrontKit, Reply
from handlers.front.run import RunFront
from handlers.grammar import Command, CommandKind, parse_command

log = logging.getLogger(__name__)


class CommandFront:
    """Answers commands; the ones that roll back open a card (``CardFront``)."""

    def __init__(self, *, kit: FrontKit, approvals: ApprovalService, follow_up: FollowUp,
                 cards: CardFront, run: RunFront) -> None:
        self._kit = kit
        self._rollbot = kit.rollbot
        self._client = kit.client
        self._approvals = approvals
        self._follow_up = follow_up
        self._cards = cards
        self._run = run

    async def on_command(self, *, user: str, channel: str, channel_name: str | None, text: str,
                         reply: Reply, trigger_id: str | None = None) -> None:
        refusal = await self._kit.channel_or_user_refusal(user, channel, channel_name, text)
        if refusal:
            await reply(ui.refusal(refusal), refusal)
            return
        try:
            command = parse_command(text)
        except InvalidInput as exc:
            await self._kit.audit_refusal(user, f"bad command `{text[:200]}`: {exc}")
            await reply(ui.help_message(str(exc)), str(exc))
            return
        try:
            if command.kind is CommandKind.ASSESS:
                await self._open_assess(trigger_id, environment=command.environment,
                                        reply=reply)
                return
            await self._dispatch(command, user=user, channel=channel, reply=reply)
        except RollbotError as exc:
            await reply(ui.refusal(str(exc)), str(exc))
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("command %r failed (ref %s)", text, ref)
            await reply(ui.refusal(f"Something went wrong inside rollbot (ref {ref}); nothing "
                                   "was changed by this command."), "internal error")

    async def _dispatch(self, command: Command, *, user: str, channel: str,
                        reply: Reply) -> None:
        kind = command.kind
        if kind is CommandKind.HELP:
            await reply(ui.help_message(), "rollbot help")
        elif kind is CommandKind.STATUS:
            env, _ = self._rollbot.environment(command.environment)
            pending = await self._follow_up.pending_checks(env)
            await reply(status_message(env, await self._rollbot.status(env), pending), "status")
        elif kind is CommandKind.HISTORY:
            await reply(await self._history(), "history")
        elif kind is CommandKind.VERSIONS:
            v = await self._rollbot.versions(command.environment, actor=user)
            tags = ", ".join(t.tag for t in v.tags[:15]) or "none"
            text = (f"*Running:* {v.running or 'nothing'} (compose file: {v.in_compose_file})\n"
                    f"*Images on the host:* {tags}")
            await reply([ui.section(text)], text)
        elif kind is CommandKind.BACKUPS:
            backups = await self._rollbot.backups(command.environment, actor=user)
            lines = [f"`{b.name}` {b.size / 1e6:.1f} MB, {b.modified:%Y-%m-%d %H:%M} UTC"
                     for b in backups[:20]] or ["no backups found"]
            await reply([ui.section("*Backups*\n" + "\n".join(lines))], "backups")
        elif kind is CommandKind.UNQUARANTINE:
            await self._unquarantine(command, user=user, channel=channel, reply=reply)
        elif kind is CommandKind.CANCEL:
            env, _ = self._rollbot.environment(command.environment)
            active = await self._rollbot.status(env)
            if active is None:
                await reply(ui.refusal(f"No rollback is running in {env}."), "nothing to cancel")
                return
            await self._run.cancel_run(user=user, run_id=active.id, reply=reply)
        else:
            await self._propose(command, user=user, channel=channel, reply=reply)

    async def _history(self) -> ui.Blocks:
        runs = await self._rollbot.history(limit=10)
        links = {}
        for r in runs:
            ref = await self._approvals.front_ref_for_run(r.id)
            if ref and "ts" in ref:
                links[r.id] = permalink(ref["channel"], ref["ts"])
        return history_message(runs, links)

    async def _unquarantine(self, command: Command, *, user: str, channel: str,
                            reply: Reply) -> None:
        env, _ = self._rollbot.environment(command.environment)
        version = str(command.version)
        if not await self._rollbot.lift_quarantine(env, version, by=user,
                                                   reason=command.reason):
            await reply(ui.refusal(f"{version} is not quarantined in {env}."), "no-op")
            return
        text = f"✅ {version} may be deployed to {env} again (quarantine lifted by " \
               f"{ui.mention(user)})."
        await self._client.chat_postMessage(channel=channel, text=text,
                                            blocks=[ui.section(text)])

    async def _propose(self, command: Command, *, user: str, channel: str,
                       reply: Reply) -> None:
        env, _ = self._rollbot.environment(command.environment)
        request = RollbackRequest(environment=env, procedure=command.procedure,
                                  target=command.version, requested_by=user,
                                  reason=command.reason, backup=command.backup)
        plan = await self._cards.plan(request)
        if command.kind is CommandKind.PLAN:
            await reply(plan_message(plan, self._kit.fleet(env, command.procedure)),
                        f"Plan for {env}")
            return
        await self._cards.post_card(plan, channel=channel)

    # --- `/rollback assess`: the decision matrix as a form -------------------------------------

    async def _open_assess(self, trigger_id: str | None, *, environment: str | None,
                           reply: Reply) -> None:
        if trigger_id is None:
            await reply(ui.refusal("Use `/rollback assess` (the slash command): it opens a "
                                   "form."), "assess")
            return
        env, _ = self._rollbot.environment(environment)
        await self._client.views_open(trigger_id=trigger_id, view=assess_modal(environment=env))

    async def on_assessed(self, *, user: str, values: dict[str, Any]) -> None:
        """The decision matrix's verdict, in the incidents channel for the whole team."""
        assessment = parse_assess_submission(values)
        verdict = assess(assessment)
        self._rollbot.environment(assessment.environment)  # unknown: InvalidInput
        blocks = verdict_message(verdict, assessment, version_hint="the previous version")
        await self._rollbot.audit(environment=assessment.environment, actor=user, kind="assess",
                                  detail=f"{assessment.scenario.value}: "
                                         f"{verdict.action.value}")
        await self._client.chat_postMessage(
            channel=self._kit.config.incidents_channel, blocks=blocks,
            text=f"Decision matrix for {ui.mention(user)}: {verdict.action.value}")
