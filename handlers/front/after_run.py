"""After the run, in Slack: verification announcements, the report and its form, the checklist."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.approvals import ApprovalService
from bot.errors import InvalidInput
from bot.model import RunRecord, Tier, VerificationResult
from bot.post_rollback.follow_up import FollowUp
from bot.post_rollback.report import MAX_IMPACT, MAX_ROOT_CAUSE, check_notes
from handlers import blocks as ui
from handlers.blocks.after_run import (
    checklist_message,
    report_actions,
    report_modal,
    verification_status,
    verification_thread,
)
from handlers.blocks.message_events import METADATA_ERRORS, Metadata, verification_metadata
from handlers.front.common import FrontKit, Reply
from handlers.ids import Block
from handlers.metadata import ChecklistRef, CheckRef

log = logging.getLogger(__name__)


class AfterRunFront:
    """Shows what follows a run in its thread and in #incidents, and takes people's answers."""

    def __init__(self, *, kit: FrontKit, approvals: ApprovalService,
                 follow_up: FollowUp) -> None:
        self._kit = kit
        self._client = kit.client
        self._approvals = approvals
        self._follow_up = follow_up

    # --- verification checks -----------------------------------------------------------------

    async def announce_verification(self, result: VerificationResult, run: RunRecord,
                                    check_id: int) -> None:
        """The result in the run's thread, and a one-line status in the incidents channel."""
        ref = await self._approvals.front_ref_for_run(run.id)
        metadata = verification_metadata(run, result)
        if ref and "ts" in ref:
            try:
                await post_with_metadata(self._client, metadata, channel=ref["channel"],
                                         thread_ts=ref["ts"], text=verification_thread(result))
            except SlackApiError as exc:
                log.error("could not post verification of run #%s in its thread: %s",
                          run.id, exc)
        config = self._kit.config
        blocks = verification_status(
            result, run_id=run.id, environment=run.environment, version=run.to_version or "?",
            requested_by=run.requested_by, oncall=config.allowed_usergroups, check_id=check_id)
        try:
            await post_with_metadata(self._client, metadata, channel=config.incidents_channel,
                                     text=blocks[0]["text"]["text"], blocks=blocks)
        except SlackApiError as exc:
            log.error("could not announce verification of run #%s: %s", run.id, exc)
        if ref and "ts" in ref and check_id > 0:
            await self.show_records(run.id, channel=ref["channel"], thread_ts=ref["ts"],
                                    first=False)

    async def on_verify_again(self, *, user: str, ref: CheckRef, reply: Reply) -> None:
        if refusal := await self._kit.user_refusal(user, "run a verification check"):
            await reply(ui.refusal(refusal), refusal)
            return
        await reply([ui.section(f"⏳ Running the {ref.tier} check of rollback #{ref.run} "
                             "again…")], "checking")
        result, run = await self._follow_up.check_now(ref.run, Tier(ref.tier))
        await self.announce_verification(result, run, 0)

    async def on_verdict(self, *, user: str, ref: CheckRef, verdict: str, reply: Reply) -> None:
        if refusal := await self._kit.user_refusal(user, "answer for the dashboards"):
            await reply(ui.refusal(refusal), refusal)
            return
        try:
            path, markdown = await self._follow_up.record_verdict(
                run_id=ref.run, check_id=ref.check, tier=Tier(ref.tier), verdict=verdict,
                by=user)
        except InvalidInput as exc:  # not one of the run's checks: recorded nothing, audited
            await reply(ui.refusal(str(exc)), str(exc))
            return
        await reply([ui.section(f"Recorded: rollback #{ref.run} looks *{verdict}* to you; "
                             "it goes in the rollback report.")], verdict)
        await self._publish_rewritten_report(ref.run, path, markdown,
                                             f"{ui.mention(user)} says {verdict}")

    # --- the report ----------------------------------------------------------------------------

    async def show_records(self, run_id: int, *, channel: str, thread_ts: str,
                           first: bool) -> None:
        """The report as the engine last wrote it (uploaded into the thread), and the checklist."""
        try:
            path, markdown = await self._follow_up.report_for_thread(run_id)
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
        ref = await self._approvals.front_ref_for_run(run_id)
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

    async def on_edit_report(self, *, user: str, run_id: int, trigger_id: str,
                             reply: Reply) -> None:
        """Open the modal where a person writes the report's Impact and Root Cause."""
        if refusal := await self._kit.user_refusal(user, "edit a rollback report"):
            await reply(ui.refusal(refusal), refusal)
            return
        if await self._kit.rollbot.run(run_id) is None:
            await self._kit.audit_refusal(user, f"edit report: there is no run #{run_id}")
            await reply(ui.refusal(f"There is no run #{run_id}."), "unknown run")
            return
        notes = await self._follow_up.report_notes(run_id)
        await self._client.views_open(trigger_id=trigger_id, view=report_modal(
            run_id=run_id, impact=notes.impact if notes else "",
            root_cause=notes.root_cause if notes else "", max_impact=MAX_IMPACT,
            max_root_cause=MAX_ROOT_CAUSE))

    async def check_report_submission(self, *, user: str, run_id: int, impact: str,
                                      root_cause: str) -> dict[str, str] | None:
        """Validate the modal before acknowledging it: errors per block, or None when right."""
        if refusal := await self._kit.user_refusal(user, "edit a rollback report"):
            return {Block.REPORT_IMPACT.value: refusal[:150]}
        if await self._kit.rollbot.run(run_id) is None:
            await self._kit.audit_refusal(user, f"edit report: there is no run #{run_id}")
            return {Block.REPORT_IMPACT.value: f"There is no run #{run_id}; nothing was saved."}
        if problem := check_notes(impact=impact, root_cause=root_cause):
            await self._kit.audit_refusal(user, f"edit report: {problem}")
            block = Block.REPORT_IMPACT if problem.startswith("The Impact") else \
                Block.REPORT_ROOT_CAUSE
            return {block.value: problem[:150]}
        return None

    async def on_report_submitted(self, *, user: str, run_id: int, impact: str,
                                  root_cause: str) -> None:
        """Keep what the person wrote, rewrite the report once, upload it again."""
        path, markdown = await self._follow_up.fill_in_report(run_id, impact=impact,
                                                              root_cause=root_cause, by=user)
        await self._publish_rewritten_report(run_id, path, markdown,
                                             f"Impact and Root Cause by {ui.mention(user)}")

    # --- the checklist -------------------------------------------------------------------------

    async def refresh_checklist(self, run_id: int, *, channel: str | None = None,
                                thread_ts: str | None = None) -> None:
        """Edit the run's checklist message, or post it in the thread the first time."""
        ticks = await self._follow_up.checklist(run_id)
        if ticks is None:
            return
        blocks = [*checklist_message(run_id, ticks), *report_actions(run_id)]
        text = f"Rollback checklist, run #{run_id}"
        ref = await self._follow_up.checklist_message(run_id)
        try:
            if ref is not None:
                await self._client.chat_update(channel=ref["channel"], ts=ref["ts"],
                                               text=text, blocks=blocks)
            elif channel is not None:
                posted: Any = await self._client.chat_postMessage(
                    channel=channel, thread_ts=thread_ts, text=text, blocks=blocks)
                await self._follow_up.save_checklist_message(
                    run_id, {"channel": channel, "ts": posted["ts"]})
        except SlackApiError as exc:
            log.error("could not show the checklist of run #%s: %s", run_id, exc)

    async def on_checklist_toggle(self, *, user: str, ref: ChecklistRef, reply: Reply) -> None:
        try:
            await self._follow_up.toggle(ref.run, ref.item, by=user)
        except InvalidInput as exc:
            await reply(ui.refusal(str(exc)), str(exc))
            return
        await self.refresh_checklist(ref.run)


async def post_with_metadata(client: AsyncWebClient, metadata: Metadata, **message: Any) -> None:
    """Post with the metadata; should Slack refuse the metadata, post the message without it."""
    try:
        await client.chat_postMessage(**message, metadata=metadata)
    except SlackApiError as exc:
        if exc.response.get("error") not in METADATA_ERRORS:
            raise
        log.error("Slack refused the metadata %s (%s); posting the message without it",
                  metadata.get("event_type"), exc.response.get("error"))
        await client.chat_postMessage(**message)
