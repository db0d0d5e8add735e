"""The Slack front's flows: command → card → confirmation(s) → live run → stakeholder notice.

Each public method is called by a Bolt listener *after* it acknowledged Slack. No rollback logic
lives here: the engine (``bot``) plans and runs; this module asks, renders and routes clicks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.approvals import Pending, PendingState
from bot.autorollback.deploys import DeployStore
from bot.config import SlackConfig
from bot.decision import assess
from bot.engine import Run
from bot.errors import InvalidInput, RollbotError, RunLocked
from bot.model import (
    Check,
    ProcedureName,
    RollbackRequest,
    RunOutcome,
    RunRecord,
    RunStatus,
    Tier,
    VerificationResult,
)
from bot.pinning import pinned_request
from bot.post_rollback.checklist import ChecklistStore, automatic_ticks
from bot.post_rollback.report import MAX_IMPACT, MAX_ROOT_CAUSE, Reporter, check_notes
from bot.post_rollback.schedule import Verifier
from bot.preflight import Preflight
from bot.recovery import RecoveryChoice, RecoveryOffer
from bot.service import Plan, Rollbot
from bot.versions import parse_version
from handlers import blocks as ui
from handlers.access import Access
from handlers.assess import assess_modal, parse_assess_submission, verdict_message
from handlers.blocks import mention
from handlers.grammar import Command, CommandKind, parse_command
from handlers.ids import Block
from handlers.live import LiveRun
from handlers.metadata import AssessCardRef, ChecklistRef, CheckRef, NoticeRef
from handlers.slack_writer import SlackWriter

log = logging.getLogger(__name__)

Reply = Callable[[ui.Blocks, str], Awaitable[None]]
_FINAL_DELIVERY_S = 600.0


class SlackFront:
    """Everything the Slack front does after ``ack()``."""

    def __init__(self, *, rollbot: Rollbot, client: AsyncWebClient, config: SlackConfig,
                 access: Access, verifier: Verifier, reporter: Reporter,
                 min_update_interval_s: float = 1.0) -> None:
        self._rollbot = rollbot
        self._verifier = verifier
        self._reporter = reporter
        self._checklist = ChecklistStore(rollbot.store.pool)
        self._store = rollbot.store
        self._client = client
        self._config = config
        self._access = access
        self._interval = min_update_interval_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: dict[int, LiveRun] = {}

    # --- commands --------------------------------------------------------------------------

    async def on_command(self, *, user: str, channel: str, channel_name: str | None, text: str,
                         reply: Reply, trigger_id: str | None = None) -> None:
        refusal = await self._refuse_if_not_allowed(user, channel, channel_name, text)
        if refusal:
            await reply(ui.refusal(refusal), refusal)
            return
        try:
            command = parse_command(text)
        except InvalidInput as exc:
            await self._audit_refusal(user, f"bad command `{text[:200]}`: {exc}")
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
            pending = await self._verifier.store.pending(env)
            await reply(ui.status_message(env, await self._rollbot.status(env), pending),
                        "status")
        elif kind is CommandKind.HISTORY:
            runs = await self._rollbot.history(limit=10)
            links = {}
            for r in runs:
                ref = await self._store.approvals.front_ref_for_run(r.id)
                if ref and "ts" in ref:
                    links[r.id] = ui.permalink(ref["channel"], ref["ts"])
            await reply(ui.history_message(runs, links), "history")
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
            env, _ = self._rollbot.environment(command.environment)
            version = str(command.version)
            deploys = DeployStore(self._store.pool)
            if not await deploys.lift(env, version):
                await reply(ui.refusal(f"{version} is not quarantined in {env}."), "no-op")
                return
            await self._store.audit(environment=env, actor=user, kind="unquarantine",
                                    detail=f"{version}: {command.reason or 'no reason given'}")
            text = f"✅ {version} may be deployed to {env} again (quarantine lifted by " \
                   f"{ui.mention(user)})."
            await self._client.chat_postMessage(channel=channel, text=text,
                                                blocks=[ui.section(text)])
        elif kind is CommandKind.CANCEL:
            await self._cancel_active(user=user, environment=command.environment, reply=reply)
        else:
            await self._propose(command, user=user, channel=channel, reply=reply)

    async def _propose(self, command: Command, *, user: str, channel: str,
                       reply: Reply) -> None:
        env, _ = self._rollbot.environment(command.environment)
        request = RollbackRequest(environment=env, procedure=command.procedure,
                                  target=command.version, requested_by=user,
                                  reason=command.reason, backup=command.backup)
        plan = await self._plan(request)
        if command.kind is CommandKind.PLAN:
            await reply(ui.plan_message(plan), f"Plan for {env}")
            return
        await self.post_card(plan, channel=channel)

    async def _plan(self, request: RollbackRequest) -> Plan:
        try:
            return await self._rollbot.plan(request)
        except RollbotError as exc:
            # Show the failed pre-flight on the card: the incident channel must see why.
            pre = Preflight(checks=(Check("Host reachable", False, str(exc)),), current="?",
                            target=str(request.target or ""), backup=None)
            return Plan(request=request, preflight=pre, title="(pre-flight failed)", steps=())

    async def post_card(self, plan: Plan, *, channel: str) -> Pending:
        ttl = timedelta(minutes=self._config.card_ttl_minutes)
        facts = ui.card_facts(plan)
        # The card shows "previous" and "newest backup" resolved: the run must find exactly those.
        shown = pinned_request(plan.request, target=plan.preflight.target,
                               backup=plan.preflight.backup,
                               migrations=plan.preflight.migrations)
        pending = await self._store.approvals.propose(shown, ttl=ttl)
        body = ui.card_body(plan)
        blocks = [*body, *ui.card_state(facts, pending, now=_now())]
        title = blocks[0]["text"]["text"]
        response = await self._client.chat_postMessage(channel=channel, text=title,
                                                       blocks=blocks)
        await self._store.approvals.set_front_ref(pending.id, {
            "channel": channel, "ts": response["ts"], "body": body, "facts": asdict(facts)})
        if not facts.ok:
            await self._audit_refusal(plan.request.requested_by,
                                      f"card {pending.id} refused by pre-flight: "
                                      f"{facts.refusal}", environment=plan.request.environment)
        return pending

    async def _cancel_active(self, *, user: str, environment: str | None,
                             reply: Reply) -> None:
        env, _ = self._rollbot.environment(environment)
        active = await self._rollbot.status(env)
        if active is None:
            await reply(ui.refusal(f"No rollback is running in {env}."), "nothing to cancel")
            return
        await self.cancel_run(user=user, run_id=active.id, reply=reply)

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
        await self._store.audit(environment=assessment.environment, actor=user, kind="assess",
                                detail=f"{assessment.scenario.value}: {verdict.action.value}")
        await self._client.chat_postMessage(
            channel=self._config.incidents_channel, blocks=blocks,
            text=f"Decision matrix for {mention(user)}: {verdict.action.value}")

    async def on_assess_open_card(self, *, user: str, channel: str, ref: AssessCardRef,
                                  reply: Reply) -> None:
        if refusal := await self._user_refusal(user, "start a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        request = RollbackRequest(environment=ref.environment,
                                  procedure=ProcedureName(ref.procedure), target=None,
                                  requested_by=user, reason="decision matrix: roll back")
        await self.post_card(await self._plan(request), channel=channel)

    # --- clicks on the card ----------------------------------------------------------------

    async def on_confirm(self, *, user: str, card: str, reply: Reply) -> None:
        if refusal := await self._user_refusal(user, "confirm a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        pending = await self._store.approvals.get(card)
        if pending.request.procedure is ProcedureName.RESTORE:
            await reply(ui.refusal("A restore is confirmed with its own button."), "restore")
            return
        if not self._card_ok(pending):
            await reply(ui.refusal("This card cannot start a rollback (pre-flight failed)."),
                        "refused")
            return
        needs_second = self._needs_second_approver(pending.request.procedure)
        move = await self._store.approvals.confirm(card, by=user, needs_second=needs_second)
        if not move.moved:
            await reply(ui.refusal(move.reason), move.reason)
            await self._refresh_card(move.pending)
            return
        if move.pending.state is PendingState.STARTED:
            self._start(move.pending, confirmed_by=(user,))
        else:  # a migration rollback is a data change: a second person approves it
            await self._refresh_card(move.pending)

    def _needs_second_approver(self, procedure: ProcedureName) -> bool:
        if procedure is ProcedureName.MIGRATIONS:
            return self._config.migrations_requires_second_approver
        return procedure is ProcedureName.RESTORE and \
            self._config.restore_requires_second_approver

    async def on_confirm_restore(self, *, user: str, card: str, trigger_id: str,
                                 reply: Reply) -> None:
        """Open the modal where the person types the database name."""
        if refusal := await self._user_refusal(user, "confirm a restore"):
            await reply(ui.refusal(refusal), refusal)
            return
        pending = await self._store.approvals.get(card)
        if pending.state is not PendingState.AWAITING_CONFIRMATION or pending.expired(_now()):
            reason = ("This card has expired; nothing was run." if pending.expired(_now())
                      else "This restore is no longer waiting for confirmation.")
            await reply(ui.refusal(reason), reason)
            return
        _, env = self._rollbot.environment(pending.request.environment)
        if env.database is None or not self._card_ok(pending):
            await reply(ui.refusal("This card cannot start a restore."), "refused")
            return
        await self._client.views_open(trigger_id=trigger_id, view=ui.restore_modal(
            pending_id=card, database=env.database.name, environment=pending.request.environment))

    async def check_restore_submission(self, *, user: str, card: str, typed: str
                                       ) -> dict[str, str] | None:
        """Validate the modal before acknowledging it: errors per block, or None when right."""
        pending = await self._store.approvals.get(card)
        _, env = self._rollbot.environment(pending.request.environment)
        expected = env.database.name if env.database else ""
        if typed.strip() != expected:
            await self._audit_refusal(user, f"restore card {card}: typed database name "
                                            f"'{typed[:64]}' does not match",
                                      environment=pending.request.environment)
            return {"rollbot.modal.db_name": f"That is not the database name. Type {expected} "
                                             "exactly to confirm."}
        if (refusal := await self._user_refusal(user, "confirm a restore")):
            return {"rollbot.modal.db_name": refusal}
        return None

    async def on_restore_confirmed(self, *, user: str, card: str) -> None:
        needs_second = self._config.restore_requires_second_approver
        move = await self._store.approvals.confirm(card, by=user, needs_second=needs_second)
        if not move.moved:
            await self._ephemeral(move.pending, user, move.reason)
            return
        if move.pending.state is PendingState.STARTED:
            self._start(move.pending, confirmed_by=(user,))
        else:
            await self._refresh_card(move.pending)

    async def on_approve(self, *, user: str, card: str, reply: Reply) -> None:
        if refusal := await self._approver_refusal(user):
            await reply(ui.refusal(refusal), refusal)
            return
        move = await self._store.approvals.approve(card, by=user)
        if not move.moved:
            await self._audit_refusal(user, f"approve restore card {card}: {move.reason}",
                                      environment=move.pending.request.environment)
            await reply(ui.refusal(move.reason), move.reason)
            return
        self._start(move.pending, confirmed_by=(move.pending.confirmed_by or "?", user))

    async def on_cancel_card(self, *, user: str, card: str, reply: Reply) -> None:
        if refusal := await self._user_refusal(user, "cancel a rollback card"):
            await reply(ui.refusal(refusal), refusal)
            return
        move = await self._store.approvals.cancel(card, by=user)
        if not move.moved:
            await reply(ui.refusal(move.reason), move.reason)
            return  # the card already shows its final state
        await self._refresh_card(move.pending)

    async def on_next_step(self, *, user: str, channel: str, procedure: ProcedureName,
                           environment: str, version: str, reply: Reply) -> None:
        """A follow-up button after a failed run opens a fresh pre-flight card."""
        if refusal := await self._user_refusal(user, "start a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        request = RollbackRequest(environment=environment, procedure=procedure,
                                  target=parse_version(version), requested_by=user,
                                  reason="follow-up after a failed rollback")
        await self.post_card(await self._plan(request), channel=channel)

    # --- the run ---------------------------------------------------------------------------

    def _start(self, pending: Pending, *, confirmed_by: tuple[str, ...]) -> None:
        self._spawn(self._run(pending, confirmed_by=confirmed_by))

    async def _run(self, pending: Pending, *, confirmed_by: tuple[str, ...]) -> None:
        ref = pending.front_ref
        channel, ts = str(ref["channel"]), str(ref["ts"])
        request = RollbackRequest(**{**pending.request.__dict__, "approved_by": confirmed_by})
        writer = SlackWriter(self._client, min_interval_s=self._interval)
        writer.start()
        live: LiveRun | None = None
        try:
            message = writer.message(channel, ts=ts)
            live = LiveRun(writer=writer, message=message, state=ui.LiveState(
                run_id=0, environment=request.environment, procedure=request.procedure,
                from_version="(pre-flight)",
                to_version=request.pinned.target if request.pinned else str(
                    request.target or "previous"),
                requested_by=request.requested_by, confirmed_by=confirmed_by,
                reason=request.reason, started_at=_now()))
            live.render()

            def on_run(run: Run) -> None:
                assert live is not None
                live.state.run_id = run.run_id
                self._live[run.run_id] = live
                self._spawn(self._store.approvals.attach_run(pending.id, run.run_id))

            try:
                outcome = await self._rollbot.rollback(request, observers=[live], on_run=on_run)
            except RollbotError as exc:
                # Refused before the lock (another run holds it) or the store failed: nothing
                # ran under this card; say so where the card was.
                what = "🚫" if isinstance(exc, RunLocked) else "⚠️ rollbot could not start:"
                writer.set(message, text=str(exc), blocks=[
                    *pending.front_ref.get("body", []), ui.section(f"{what} {ui.esc(str(exc))}")])
                await writer.drain(timeout_s=60)
                return
            if outcome.status is RunStatus.REFUSED:
                live.state.outcome = outcome
                live.state.host_state = outcome.host_state
                live.render()
            await writer.drain(timeout_s=_FINAL_DELIVERY_S)
            await self._notify(outcome, request, writer)
            if outcome.status is not RunStatus.REFUSED:
                await self._after_run_records(outcome.run_id, channel=channel, thread_ts=ts,
                                              first=True)
        finally:
            if live is not None:
                self._live.pop(live.state.run_id, None)
            await writer.close()

    async def _notify(self, outcome: RunOutcome, request: RollbackRequest,
                      writer: SlackWriter) -> None:
        """The stakeholder notice in the incidents channel, delivered like the live message."""
        channel = self._config.incidents_channel
        if outcome.status is RunStatus.SUCCEEDED:
            blocks = ui.notice_success(version=outcome.to_version or "?", eta="TBD",
                                       run_id=outcome.run_id)
        elif outcome.status is RunStatus.REFUSED:
            return  # the card already says why; nothing happened to production
        else:
            blocks = ui.notice_failure(outcome, environment=request.environment)
        notice = writer.message(channel)
        writer.set(notice, text=ui.notice_text(blocks), blocks=blocks)
        if await writer.drain(timeout_s=_FINAL_DELIVERY_S) and notice.ts:
            await self._store.save_notice(outcome.run_id,
                                          front_ref={"channel": channel, "ts": notice.ts})

    async def cancel_run(self, *, user: str, run_id: int, reply: Reply) -> None:
        if refusal := await self._user_refusal(user, "cancel a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        if not await self._rollbot.cancel(run_id, by=user):
            await reply(ui.refusal(f"Run #{run_id} is not running any more."), "not running")
            return
        if (live := self._live.get(run_id)) is not None:
            live.note_cancel_requested(user)
        await reply([ui.section(f"🛑 Run #{run_id} stops before its next step; the step "
                                "running now finishes first.")], "cancel requested")

    # --- after a cancel that left production down: Resume rollback, Put back -------------

    async def on_recovery(self, *, user: str, run_id: int, choice: RecoveryChoice,
                          channel: str, ts: str, blocks: ui.Blocks, reply: Reply) -> None:
        """A click on Resume rollback / Put back what ran before: the first one decides."""
        if refusal := await self._user_refusal(user, f"choose “{choice.label}”"):
            await reply(ui.refusal(refusal), refusal)
            return
        claim = await self._rollbot.choose_recovery(run_id, choice=choice, by=user)
        if not claim.moved or claim.offer is None:
            await reply(ui.refusal(claim.reason), claim.reason)
            return
        # The buttons make way for who chose what, so nobody clicks the other one later.
        kept = [b for b in blocks if b.get("block_id") != Block.RECOVERY_ACTIONS.value]
        if kept and ts:
            await self._update(channel, ts, [*kept, ui.recovery_chosen(choice.label, user,
                                                                        now=_now())])
        self._spawn(self._run_recovery(claim.offer, by=user, channel=channel,
                                       cancelled=(ts, blocks)))

    async def _run_recovery(self, offer: RecoveryOffer, *, by: str, channel: str,
                            cancelled: tuple[str, ui.Blocks]) -> None:
        """The chosen action as its own run, with its own live message in the same channel."""
        choice = offer.choice or RecoveryChoice.RESUME
        resume = choice is RecoveryChoice.RESUME
        writer = SlackWriter(self._client, min_interval_s=self._interval)
        writer.start()
        message = writer.message(channel)
        live = LiveRun(writer=writer, message=message, state=ui.LiveState(
            run_id=0, environment=offer.environment,
            procedure=offer.procedure if resume else ProcedureName.PUT_BACK,
            from_version=offer.from_version if resume else "(pre-flight)",
            to_version=offer.to_version if resume else offer.from_version,
            requested_by=by, confirmed_by=(),
            reason=f"{choice.label} after run #{offer.run_id} was cancelled with production "
                   "down", started_at=_now(), started_down=True,
            earlier_done=offer.done_steps, continues=offer.run_id,
            recovery_versions=(offer.from_version, offer.to_version)))
        live.render()

        def on_run(run: Run) -> None:
            live.state.run_id = run.run_id
            self._live[run.run_id] = live

        ts, original = cancelled
        try:
            try:
                outcome = await self._rollbot.recover(offer, by=by, observers=[live],
                                                      on_run=on_run)
            except RollbotError as exc:
                writer.set(message, text=str(exc), blocks=[ui.section(
                    f"🚫 {choice.label} for run #{offer.run_id} could not start: "
                    f"{ui.esc(str(exc))} Nothing was run; the buttons are back on run "
                    f"#{offer.run_id}.")])
                await writer.drain(timeout_s=60)
                if original and ts:
                    await self._update(channel, ts, original)  # offered again
                return
            if outcome.status is RunStatus.REFUSED:
                live.state.outcome = outcome
                live.state.host_state = outcome.host_state
                live.render()
                if original and ts:
                    await self._update(channel, ts, [*original, ui.context(
                        f"🚫 {ui.esc(choice.label)} was refused by its pre-flight (see below); "
                        "nothing was run.")])
            await writer.drain(timeout_s=_FINAL_DELIVERY_S)
            if outcome.status is not RunStatus.REFUSED and resume:
                request = RollbackRequest(environment=offer.environment,
                                          procedure=offer.procedure, target=None,
                                          requested_by=by)
                await self._notify(outcome, request, writer)
                if message.ts:
                    await self._after_run_records(outcome.run_id, channel=channel,
                                                  thread_ts=message.ts, first=True)
        finally:
            self._live.pop(live.state.run_id, None)
            await writer.close()

    async def on_roll_back_again(self, *, user: str, run_id: int, channel: str,
                                 reply: Reply) -> None:
        """After a put-back that is not healthy: a fresh card for the cancelled rollback."""
        if refusal := await self._user_refusal(user, "start a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        offer = await self._rollbot.recoveries.get(run_id)
        if offer is None:
            await reply(ui.refusal(f"Run #{run_id} left nothing to roll back again."), "no-op")
            return
        await self._store.audit(environment=offer.environment, actor=user, kind="recovery",
                                run_id=run_id, detail=f"roll back to {offer.to_version} again "
                                                      "after the put-back: new card")
        request = RollbackRequest(environment=offer.environment, procedure=offer.procedure,
                                  target=parse_version(offer.to_version), requested_by=user,
                                  reason=f"rolling back again after putting back "
                                         f"{offer.from_version} (run #{run_id})",
                                  backup=offer.backup)
        await self.post_card(await self._plan(request), channel=channel)

    async def _update(self, channel: str, ts: str, blocks: ui.Blocks) -> None:
        try:
            await self._client.chat_update(channel=channel, ts=ts, blocks=blocks,
                                           text=ui.notice_text(blocks) or "rollback")
        except SlackApiError as exc:
            log.error("could not update message %s in %s: %s", ts, channel, exc)

    # --- stakeholder ETA -------------------------------------------------------------------

    async def on_set_eta(self, *, user: str, notice: NoticeRef, trigger_id: str,
                         reply: Reply) -> None:
        if refusal := await self._user_refusal(user, "set the fix ETA"):
            await reply(ui.refusal(refusal), refusal)
            return
        current = await self._store.eta(notice.run)
        await self._client.views_open(trigger_id=trigger_id,
                                      view=ui.eta_modal(notice=notice, current=current))

    async def on_eta_submitted(self, *, user: str, notice: NoticeRef, eta: str) -> None:
        if await self._user_refusal(user, "set the fix ETA"):
            return  # refused and audited; the modal already showed the refusal
        eta = eta.strip()[:100] or "TBD"
        record = await self._store.get_run(notice.run)
        if record is None or record.status is not RunStatus.SUCCEEDED:
            return
        await self._store.set_eta(notice.run, eta=eta, by=user,
                                  front_ref={"channel": notice.channel, "ts": notice.ts})
        blocks = ui.notice_success(version=record.to_version or "?", eta=eta,
                                   run_id=notice.run, eta_set_by=user)
        try:
            await self._client.chat_update(channel=notice.channel, ts=notice.ts,
                                           text=ui.notice_text(blocks), blocks=blocks)
        except SlackApiError as exc:
            log.error("could not update the notice of run #%s: %s", notice.run, exc)

    # --- verification announcements --------------------------------------------------------

    async def announce_verification(self, result: VerificationResult, run: RunRecord,
                                    check_id: int) -> None:
        """The result in the run's thread, and a one-line status in the incidents channel."""
        ref = await self._store.approvals.front_ref_for_run(run.id)
        if ref and "ts" in ref:
            try:
                await self._client.chat_postMessage(channel=ref["channel"], thread_ts=ref["ts"],
                                                    text=ui.verification_thread(result))
            except SlackApiError as exc:
                log.error("could not post verification of run #%s in its thread: %s",
                          run.id, exc)
        blocks = ui.verification_status(
            result, run_id=run.id, environment=run.environment, version=run.to_version or "?",
            requested_by=run.requested_by, oncall=self._config.allowed_usergroups,
            check_id=check_id)
        try:
            await self._client.chat_postMessage(channel=self._config.incidents_channel,
                                                text=blocks[0]["text"]["text"], blocks=blocks)
        except SlackApiError as exc:
            log.error("could not announce verification of run #%s: %s", run.id, exc)
        if ref and "ts" in ref and check_id > 0:
            await self._after_run_records(run.id, channel=ref["channel"], thread_ts=ref["ts"],
                                          first=False)

    async def _after_run_records(self, run_id: int, *, channel: str, thread_ts: str,
                                 first: bool) -> None:
        """The report as the engine last wrote it (uploaded into the thread), and the checklist."""
        try:
            saved = await self._reporter.saved(run_id)
            if saved is None:  # its writer failed (logged there): the thread still gets one
                path, markdown = await self._reporter.write(run_id)
            else:
                path, markdown = saved.path, saved.markdown
            await self._upload_report(run_id, path, markdown, channel=channel,
                                      thread_ts=thread_ts,
                                      comment="📝 Rollback report" + ("" if first else
                                                                     " (updated)"))
        except Exception:
            log.exception("could not upload the report of run #%s", run_id)
        await self.refresh_checklist(run_id, channel=channel, thread_ts=thread_ts)

    async def _upload_report(self, run_id: int, path: Path, markdown: str, *, channel: str,
                             thread_ts: str, comment: str) -> None:
        await self._client.files_upload_v2(
            channel=channel, thread_ts=thread_ts, filename=path.name, content=markdown,
            title=f"Rollback report, run #{run_id}", initial_comment=comment)

    async def _publish_rewritten_report(self, run_id: int, path: Path, markdown: str,
                                        why: str) -> None:
        """After a person changed the report: upload it again in the run's thread."""
        ref = await self._store.approvals.front_ref_for_run(run_id)
        if not ref or "ts" not in ref:
            log.warning("run #%s has no Slack thread; its report was rewritten, not uploaded",
                        run_id)
            return
        try:
            await self._upload_report(run_id, path, markdown, channel=ref["channel"],
                                      thread_ts=ref["ts"],
                                      comment=f"📝 Rollback report (updated: {why})")
        except SlackApiError as exc:
            log.error("could not upload the report of run #%s: %s", run_id, exc)
        await self.refresh_checklist(run_id)

    # --- the report: Impact and Root Cause ----------------------------------------------------

    async def on_edit_report(self, *, user: str, run_id: int, trigger_id: str,
                             reply: Reply) -> None:
        """Open the modal where a person writes the report's Impact and Root Cause."""
        if refusal := await self._user_refusal(user, "edit a rollback report"):
            await reply(ui.refusal(refusal), refusal)
            return
        if await self._store.get_run(run_id) is None:
            await self._audit_refusal(user, f"edit report: there is no run #{run_id}")
            await reply(ui.refusal(f"There is no run #{run_id}."), "unknown run")
            return
        notes = await self._reporter.notes(run_id)
        await self._client.views_open(trigger_id=trigger_id, view=ui.report_modal(
            run_id=run_id, impact=notes.impact if notes else "",
            root_cause=notes.root_cause if notes else "", max_impact=MAX_IMPACT,
            max_root_cause=MAX_ROOT_CAUSE))

    async def check_report_submission(self, *, user: str, run_id: int, impact: str,
                                      root_cause: str) -> dict[str, str] | None:
        """Validate the modal before acknowledging it: errors per block, or None when right."""
        if refusal := await self._user_refusal(user, "edit a rollback report"):
            return {Block.REPORT_IMPACT.value: refusal[:150]}
        if await self._store.get_run(run_id) is None:
            await self._audit_refusal(user, f"edit report: there is no run #{run_id}")
            return {Block.REPORT_IMPACT.value: f"There is no run #{run_id}; nothing was saved."}
        if problem := check_notes(impact=impact, root_cause=root_cause):
            await self._audit_refusal(user, f"edit report: {problem}")
            block = Block.REPORT_IMPACT if problem.startswith("The Impact") else \
                Block.REPORT_ROOT_CAUSE
            return {block.value: problem[:150]}
        return None

    async def on_report_submitted(self, *, user: str, run_id: int, impact: str,
                                  root_cause: str) -> None:
        """Store what the person wrote, rewrite the report once, upload it again."""
        path, markdown = await self._reporter.fill_in(run_id, impact=impact,
                                                      root_cause=root_cause, by=user)
        await self._publish_rewritten_report(run_id, path, markdown,
                                             f"Impact and Root Cause by {mention(user)}")

    async def refresh_checklist(self, run_id: int, *, channel: str | None = None,
                                thread_ts: str | None = None) -> None:
        run = await self._store.get_run(run_id)
        if run is None:
            return
        checklist = self._checklist
        done = automatic_ticks(
            run, checks=await self._store.run_checks(run_id),
            notified=await self._store.notice_posted(run_id),
            documented=await self._store.report(run_id) is not None,
            verifications=tuple(await self._verifier.store.results(run_id)))
        await checklist.tick_automatic(run_id, done)
        blocks = [*ui.checklist_message(run_id, await checklist.ticks(run_id)),
                  *ui.report_actions(run_id)]
        text = f"Rollback checklist, run #{run_id}"
        ref = await checklist.message(run_id)
        try:
            if ref is not None:
                await self._client.chat_update(channel=ref["channel"], ts=ref["ts"],
                                               text=text, blocks=blocks)
            elif channel is not None:
                posted = await self._client.chat_postMessage(
                    channel=channel, thread_ts=thread_ts, text=text, blocks=blocks)
                await checklist.save_message(run_id, {"channel": channel, "ts": posted["ts"]})
        except SlackApiError as exc:
            log.error("could not show the checklist of run #%s: %s", run_id, exc)

    async def on_checklist_toggle(self, *, user: str, ref: ChecklistRef, reply: Reply) -> None:
        try:
            await self._checklist.toggle(ref.run, ref.item, by=user)
        except ValueError as exc:
            await reply(ui.refusal(str(exc)), str(exc))
            return
        await self.refresh_checklist(ref.run)

    async def on_verify_again(self, *, user: str, ref: CheckRef, reply: Reply) -> None:
        if refusal := await self._user_refusal(user, "run a verification check"):
            await reply(ui.refusal(refusal), refusal)
            return
        await reply([ui.section(f"⏳ Running the {ref.tier} check of rollback #{ref.run} "
                                "again…")], "checking")
        result, run = await self._verifier.check_now(ref.run, Tier(ref.tier))
        await self.announce_verification(result, run, 0)

    async def on_verdict(self, *, user: str, ref: CheckRef, verdict: str, reply: Reply) -> None:
        if refusal := await self._user_refusal(user, "answer for the dashboards"):
            await reply(ui.refusal(refusal), refusal)
            return
        if not await self._verifier.store.record_verdict(
                run_id=ref.run, check_id=ref.check, tier=Tier(ref.tier), verdict=verdict,
                by=user):
            reason = f"Check {ref.check} is not one of rollback #{ref.run}'s; nothing recorded."
            await self._audit_refusal(user, f"verdict {verdict}: {reason}")
            await reply(ui.refusal(reason), reason)
            return
        await self._store.audit(environment=self._rollbot.runbook.default_environment,
                                actor=user, kind="verdict", run_id=ref.run,
                                detail=f"{ref.tier} check: {verdict}")
        await reply([ui.section(f"Recorded: rollback #{ref.run} looks *{verdict}* to you; "
                                "it goes in the rollback report.")], verdict)
        path, markdown = await self._reporter.write(ref.run)
        await self._publish_rewritten_report(ref.run, path, markdown,
                                             f"{mention(user)} says {verdict}")

    # --- helpers ---------------------------------------------------------------------------

    async def _refresh_card(self, pending: Pending) -> None:
        ref = pending.front_ref
        if "ts" not in ref:
            return
        facts = ui.CardFacts(**{**ref["facts"], "procedure": ProcedureName(
            ref["facts"]["procedure"])})
        blocks = [*ref["body"], *ui.card_state(facts, pending, now=_now())]
        try:
            await self._client.chat_update(channel=ref["channel"], ts=ref["ts"],
                                           text=blocks[0]["text"]["text"], blocks=blocks)
        except SlackApiError as exc:
            log.error("could not update card %s: %s", pending.id, exc)

    def _card_ok(self, pending: Pending) -> bool:
        return bool(pending.front_ref.get("facts", {}).get("ok"))

    async def _ephemeral(self, pending: Pending, user: str, text: str) -> None:
        try:
            await self._client.chat_postEphemeral(channel=pending.front_ref["channel"],
                                                  user=user, text=text)
        except (SlackApiError, KeyError) as exc:
            log.warning("could not tell %s: %s (%s)", user, text, exc)

    async def _refuse_if_not_allowed(self, user: str, channel: str, channel_name: str | None,
                                     text: str) -> str:
        where = await self._access.channel_allowed(channel, channel_name)
        if not where.allowed:
            reason = f"Refused: {where.reason}"
        elif refusal := await self._user_refusal(user, "use /rollback"):
            reason = refusal
        else:
            return ""
        await self._audit_refusal(user, f"`/rollback {text[:200]}` in {channel}: {reason}")
        return reason

    async def _user_refusal(self, user: str, doing: str) -> str:
        decision = await self._access.user_allowed(user)
        if decision.allowed:
            return ""
        reason = f"Refused: you cannot {doing}: {decision.reason}"
        await self._audit_refusal(user, reason)
        return reason

    async def _approver_refusal(self, user: str) -> str:
        decision = await self._access.approver_allowed(user)
        if decision.allowed:
            return ""
        reason = f"Refused: {decision.reason}"
        await self._audit_refusal(user, reason)
        return reason

    async def _audit_refusal(self, user: str, detail: str, *,
                             environment: str | None = None) -> None:
        env = environment or self._rollbot.runbook.default_environment
        try:
            await self._store.audit(environment=env, actor=user, kind="refusal", detail=detail)
        except Exception as exc:
            log.error("AUDIT WRITE FAILED (refusal by %s: %s): %s", user, detail, exc)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def wrapped() -> None:
            try:
                await coro
            except Exception:
                ref = secrets.token_hex(3)
                log.exception("Slack front background task failed (ref %s)", ref)
        task = asyncio.create_task(wrapped())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def after_ack(self, work: Awaitable[None], reply: Reply) -> None:
        """Run a listener's work after its ack: errors become a sentence, never a Slack error."""
        try:
            await work
        except RollbotError as exc:
            await self._safe_reply(reply, str(exc))
        except Exception:
            ref = secrets.token_hex(3)
            log.exception("Slack action failed (ref %s)", ref)
            await self._safe_reply(reply, f"Something went wrong inside rollbot (ref {ref}); "
                                          "nothing was changed by this click.")

    async def _safe_reply(self, reply: Reply, text: str) -> None:
        try:
            await reply(ui.refusal(text), text)
        except Exception as exc:
            log.warning("could not answer the user: %s (%s)", text, exc)

    async def user_refusal(self, user: str, doing: str) -> str:
        return await self._user_refusal(user, doing)

    async def run_pending(self, pending: Pending, *, confirmed_by: tuple[str, ...]
                          ) -> int | None:
        """Run a confirmed pending rollback with its live message; returns the run id."""
        await self._run(pending, confirmed_by=confirmed_by)
        return (await self._store.approvals.get(pending.id)).run_id

    async def wait_idle(self, timeout_s: float) -> None:
        """Let running rollbacks finish (used at shutdown and by tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)


def _now() -> datetime:
    return datetime.now(UTC)
