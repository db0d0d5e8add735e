"""The run in Slack: its live message, cancel, the recovery buttons, the notice and its ETA."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from slack_sdk.errors import SlackApiError

from bot.approvals import ApprovalService, Pending
from bot.engine import Run
from bot.errors import RollbotError, RunLocked
from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus
from bot.post_rollback.follow_up import FollowUp
from bot.recovery.offers import RecoveryChoice, RecoveryOffer
from bot.recovery.runs import Recoveries
from handlers import blocks as ui
from handlers.blocks.run import (
    LiveState,
    eta_modal,
    notice_failure,
    notice_success,
    recovery_chosen,
)
from handlers.front.after_run import AfterRunFront
from handlers.front.common import FrontKit, Reply
from handlers.ids import Block
from handlers.live import LiveRun
from handlers.metadata import NoticeRef
from handlers.slack_writer import SlackWriter

log = logging.getLogger(__name__)

_FINAL_DELIVERY_S = 600.0


class RunFront:
    """Runs a confirmed rollback with its live message; then the notice and the records."""

    def __init__(self, *, kit: FrontKit, approvals: ApprovalService, follow_up: FollowUp,
                 recoveries: Recoveries, after_run: AfterRunFront,
                 min_update_interval_s: float = 1.0) -> None:
        self._kit = kit
        self._rollbot = kit.rollbot
        self._client = kit.client
        self._approvals = approvals
        self._follow_up = follow_up
        self._recoveries = recoveries
        self._after_run = after_run
        self._interval = min_update_interval_s
        self._live: dict[int, LiveRun] = {}

    # --- the run -----------------------------------------------------------------------------

    def start(self, pending: Pending, *, confirmed_by: tuple[str, ...]) -> None:
        """Run a confirmed card in the background (the click was already acknowledged)."""
        self._kit.spawn(self._run(pending, confirmed_by=confirmed_by))

    async def run_pending(self, pending: Pending, *, confirmed_by: tuple[str, ...]
                          ) -> int | None:
        """Run a confirmed pending rollback with its live message; returns the run id."""
        await self._run(pending, confirmed_by=confirmed_by)
        return (await self._approvals.get(pending.id)).run_id

    async def _run(self, pending: Pending, *, confirmed_by: tuple[str, ...]) -> None:
        ref = pending.front_ref
        channel, ts = str(ref["channel"]), str(ref["ts"])
        request = RollbackRequest(**{**pending.request.__dict__, "approved_by": confirmed_by})
        writer = SlackWriter(self._client, min_interval_s=self._interval)
        writer.start()
        live: LiveRun | None = None
        try:
            message = writer.message(channel, ts=ts)
            live = LiveRun(writer=writer, message=message, state=LiveState(
                run_id=0, environment=request.environment, procedure=request.procedure,
                from_version="(pre-flight)",
                to_version=request.pinned.target if request.pinned else str(
                    request.target or "previous"),
                requested_by=request.requested_by, confirmed_by=confirmed_by,
                reason=request.reason, started_at=_now(),
                board=self._kit.board(request.environment)),
                on_linked=self._kit.link_live_message)
            live.render()

            def on_run(run: Run) -> None:
                assert live is not None
                live.state.run_id = run.run_id
                self._live[run.run_id] = live
                self._kit.spawn(self._approvals.attach_run(pending.id, run.run_id))

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
            except Exception:
                # Never leave the card saying "(pre-flight)" or "running" when nothing will move
                # it again: say the run stopped, and where to look.
                code = secrets.token_hex(3)
                log.exception("the run of card %s stopped with an error (ref %s)", pending.id,
                              code)
                said = (f"⚠️ rollbot stopped this rollback with an internal error (ref {code}). "
                        "Check `/rollback status` and the host before trying again.")
                writer.set(message, text=said, blocks=[
                    *pending.front_ref.get("body", []), ui.section(said)])
                await writer.drain(timeout_s=60)
                return
            if outcome.status is RunStatus.REFUSED:
                live.state.outcome = outcome
                live.state.host_state = outcome.host_state
                live.render()
            await writer.drain(timeout_s=_FINAL_DELIVERY_S)
            await self.post_notice(outcome, environment=request.environment, writer=writer)
            if outcome.status is not RunStatus.REFUSED:
                await self._after_run.show_records(outcome.run_id, channel=channel,
                                                   thread_ts=ts, first=True)
        finally:
            if live is not None:
                live.close()
                self._live.pop(live.state.run_id, None)
            await writer.close()

    async def post_notice(self, outcome: RunOutcome, *, environment: str,
                          writer: SlackWriter) -> None:
        """The stakeholder notice in the incidents channel, delivered like the live message."""
        channel = self._kit.config.incidents_channel
        if outcome.status is RunStatus.SUCCEEDED:
            blocks = notice_success(version=outcome.to_version or "?", eta="TBD",
                                    run_id=outcome.run_id,
                                    hosts=tuple(h.name for h in outcome.hosts))
        elif outcome.status is RunStatus.REFUSED:
            return  # the card already says why; nothing happened to production
        else:
            blocks = notice_failure(outcome, environment=environment)
        notice = writer.message(channel)
        writer.set(notice, text=ui.sections_text(blocks), blocks=blocks)
        if await writer.drain(timeout_s=_FINAL_DELIVERY_S) and notice.ts:
            await self._follow_up.save_notice(outcome.run_id,
                                              front_ref={"channel": channel, "ts": notice.ts})

    async def cancel_run(self, *, user: str, run_id: int, reply: Reply) -> None:
        if refusal := await self._kit.user_refusal(user, "cancel a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        if not await self._rollbot.cancel(run_id, by=user):
            await reply(ui.refusal(f"Run #{run_id} is not running any more."), "not running")
            return
        if (live := self._live.get(run_id)) is not None:
            live.note_cancel_requested(user)
        await reply([ui.section(f"🛑 Run #{run_id} stops before its next step; the step "
                                "running now finishes first.")], "cancel requested")

    # --- after a cancel that left production down: Resume rollback, Put back -----------------

    async def on_recovery(self, *, user: str, run_id: int, choice: RecoveryChoice,
                          channel: str, ts: str, blocks: ui.Blocks, reply: Reply) -> None:
        """A click on Resume rollback / Put back what ran before: the first one decides."""
        if refusal := await self._kit.user_refusal(user, f"choose “{choice.label}”"):
            await reply(ui.refusal(refusal), refusal)
            return
        claim = await self._recoveries.choose(run_id, choice=choice, by=user)
        if not claim.moved or claim.offer is None:
            await reply(ui.refusal(claim.reason), claim.reason)
            return
        # The buttons make way for who chose what, so nobody clicks the other one later.
        kept = [b for b in blocks if b.get("block_id") != Block.RECOVERY_ACTIONS.value]
        if kept and ts:
            await self._update(channel, ts, [*kept, recovery_chosen(choice.label, user,
                                                                     now=_now())])
        self._kit.spawn(self._run_recovery(claim.offer, by=user, channel=channel,
                                           cancelled=(ts, blocks)))

    async def _run_recovery(self, offer: RecoveryOffer, *, by: str, channel: str,
                            cancelled: tuple[str, ui.Blocks]) -> None:
        """The chosen action as its own run, with its own live message in the same channel."""
        choice = offer.choice or RecoveryChoice.RESUME
        resume = choice is RecoveryChoice.RESUME
        writer = SlackWriter(self._client, min_interval_s=self._interval)
        writer.start()
        message = writer.message(channel)
        live = LiveRun(writer=writer, message=message, state=LiveState(
            run_id=0, environment=offer.environment,
            procedure=offer.procedure if resume else ProcedureName.PUT_BACK,
            from_version=offer.from_version if resume else "(pre-flight)",
            to_version=offer.to_version if resume else offer.from_version,
            requested_by=by, confirmed_by=(),
            reason=f"{choice.label} after run #{offer.run_id} was cancelled with production "
                   "down", started_at=_now(), started_down=True,
            earlier_done=offer.done_steps, continues=offer.run_id,
            recovery_versions=(offer.from_version, offer.to_version),
            board=self._kit.board(offer.environment)),
            on_linked=self._kit.link_live_message)
        live.render()

        def on_run(run: Run) -> None:
            live.state.run_id = run.run_id
            self._live[run.run_id] = live

        ts, original = cancelled
        try:
            try:
                outcome = await self._recoveries.recover(offer, by=by, observers=[live],
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
                await self.post_notice(outcome, environment=request.environment, writer=writer)
                if message.ts:
                    await self._after_run.show_records(outcome.run_id, channel=channel,
                                                       thread_ts=message.ts, first=True)
        finally:
            live.close()
            self._live.pop(live.state.run_id, None)
            await writer.close()

    async def _update(self, channel: str, ts: str, blocks: ui.Blocks) -> None:
        try:
            await self._client.chat_update(channel=channel, ts=ts, blocks=blocks,
                                           text=ui.sections_text(blocks) or "rollback")
        except SlackApiError as exc:
            log.error("could not update message %s in %s: %s", ts, channel, exc)

    # --- the notice's fix ETA ------------------------------------------------------------------

    async def on_set_eta(self, *, user: str, notice: NoticeRef, trigger_id: str,
                         reply: Reply) -> None:
        if refusal := await self._kit.user_refusal(user, "set the fix ETA"):
            await reply(ui.refusal(refusal), refusal)
            return
        current = await self._follow_up.eta(notice.run)
        await self._client.views_open(trigger_id=trigger_id,
                                      view=eta_modal(notice=notice, current=current))

    async def on_eta_submitted(self, *, user: str, notice: NoticeRef, eta: str) -> None:
        if await self._kit.user_refusal(user, "set the fix ETA"):
            return  # refused and audited; the modal already showed the refusal
        eta = eta.strip()[:100] or "TBD"
        record = await self._follow_up.set_eta(
            notice.run, eta=eta, by=user, front_ref={"channel": notice.channel, "ts": notice.ts})
        if record is None:
            return
        blocks = notice_success(version=record.to_version or "?", eta=eta,
                                run_id=notice.run, eta_set_by=user,
                                hosts=tuple(dict.fromkeys(s.host for s in record.steps
                                                          if s.host)))
        try:
            await self._client.chat_update(channel=notice.channel, ts=notice.ts,
                                           text=ui.sections_text(blocks), blocks=blocks)
        except SlackApiError as exc:
            log.error("could not update the notice of run #%s: %s", notice.run, exc)


def _now() -> datetime:
    return datetime.now(UTC)
