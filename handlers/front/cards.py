"""The pre-flight card in Slack: posting it, and every click on it (two people, restore modal)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.approvals import ApprovalService, Pending, PendingState
from bot.errors import RollbotError
from bot.model import Check, ProcedureName, RollbackRequest
from bot.pinning import pinned_request
from bot.preflight import Preflight
from bot.recovery.runs import Recoveries
from bot.service import Plan
from bot.versions import parse_version
from handlers import blocks as ui
from handlers.blocks.cards import CardFacts, card_body, card_facts, card_state, restore_modal
from handlers.front.common import FrontKit, Reply
from handlers.front.run import RunFront
from handlers.ids import Block
from handlers.metadata import AssessCardRef

log = logging.getLogger(__name__)


class CardFront:
    """Posts cards and takes their clicks; a confirmed card becomes a run (``RunFront``)."""

    def __init__(self, *, kit: FrontKit, approvals: ApprovalService, run: RunFront,
                 recoveries: Recoveries) -> None:
        self._kit = kit
        self._rollbot = kit.rollbot
        self._client = kit.client
        self._approvals = approvals
        self._run = run
        self._recoveries = recoveries

    async def plan(self, request: RollbackRequest) -> Plan:
        """The engine's plan, or a plan whose failed pre-flight says why (shown on the card)."""
        try:
            return await self._rollbot.plan(request)
        except RollbotError as exc:
            # Show the failed pre-flight on the card: the incident channel must see why.
            pre = Preflight(checks=(Check("Host reachable", False, str(exc)),), current="?",
                            target=str(request.target or ""), backup=None)
            return Plan(request=request, preflight=pre, title="(pre-flight failed)", steps=())

    async def post_card(self, plan: Plan, *, channel: str) -> Pending:
        ttl = timedelta(minutes=self._kit.config.card_ttl_minutes)
        facts = card_facts(plan)
        # The card shows "previous" and "newest backup" resolved: the run must find exactly those.
        shown = pinned_request(plan.request, target=plan.preflight.target,
                               backup=plan.preflight.backup,
                               migrations=plan.preflight.migrations)
        pending = await self._approvals.propose(shown, ttl=ttl)
        body = card_body(plan, self._kit.fleet(plan.request.environment,
                                               plan.request.procedure))
        blocks = [*body, *card_state(facts, pending, now=_now())]
        title = blocks[0]["text"]["text"]
        response: Any = await self._client.chat_postMessage(channel=channel, text=title,
                                                            blocks=blocks)
        await self._approvals.set_front_ref(pending.id, {
            "channel": channel, "ts": response["ts"], "body": body, "facts": asdict(facts)})
        if not facts.ok:
            await self._kit.audit_refusal(plan.request.requested_by,
                                          f"card {pending.id} refused by pre-flight: "
                                          f"{facts.refusal}",
                                          environment=plan.request.environment)
        return pending

    async def open_card(self, request: RollbackRequest, *, channel: str) -> None:
        await self.post_card(await self.plan(request), channel=channel)

    # --- clicks on the card --------------------------------------------------------------------

    async def on_confirm(self, *, user: str, card: str, reply: Reply) -> None:
        if refusal := await self._kit.user_refusal(user, "confirm a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        pending = await self._approvals.get(card)
        if pending.request.procedure is ProcedureName.RESTORE:
            await reply(ui.refusal("A restore is confirmed with its own button."), "restore")
            return
        if not _card_ok(pending):
            await reply(ui.refusal("This card cannot start a rollback (pre-flight failed)."),
                        "refused")
            return
        move = await self._approvals.confirm(card, by=user)
        if not move.moved:
            await reply(ui.refusal(move.reason), move.reason)
            await self._refresh_card(move.pending)
            return
        if move.pending.state is PendingState.STARTED:
            self._run.start(move.pending, confirmed_by=(user,))
        else:  # a migration rollback is a data change: a second person approves it
            await self._refresh_card(move.pending)

    async def on_confirm_restore(self, *, user: str, card: str, trigger_id: str,
                                 reply: Reply) -> None:
        """Open the modal where the person types the database name."""
        if refusal := await self._kit.user_refusal(user, "confirm a restore"):
            await reply(ui.refusal(refusal), refusal)
            return
        pending = await self._approvals.get(card)
        if pending.state is not PendingState.AWAITING_CONFIRMATION or pending.expired(_now()):
            reason = ("This card has expired; nothing was run." if pending.expired(_now())
                      else "This restore is no longer waiting for confirmation.")
            await reply(ui.refusal(reason), reason)
            return
        database = self._approvals.database_name(pending.request.environment)
        if database is None or not _card_ok(pending):
            await reply(ui.refusal("This card cannot start a restore."), "refused")
            return
        await self._client.views_open(trigger_id=trigger_id, view=restore_modal(
            pending_id=card, database=database, environment=pending.request.environment))

    async def check_restore_submission(self, *, user: str, card: str, typed: str
                                       ) -> dict[str, str] | None:
        """Validate the modal before acknowledging it: errors per block, or None when right."""
        if problem := await self._approvals.typed_name_problem(card, typed=typed, by=user):
            return {Block.DB_NAME.value: problem}
        if refusal := await self._kit.user_refusal(user, "confirm a restore"):
            return {Block.DB_NAME.value: refusal}
        return None

    async def on_restore_confirmed(self, *, user: str, card: str) -> None:
        move = await self._approvals.confirm(card, by=user)
        if not move.moved:
            await self._ephemeral(move.pending, user, move.reason)
            return
        if move.pending.state is PendingState.STARTED:
            self._run.start(move.pending, confirmed_by=(user,))
        else:
            await self._refresh_card(move.pending)

    async def on_approve(self, *, user: str, card: str, reply: Reply) -> None:
        if refusal := await self._kit.approver_refusal(user):
            await reply(ui.refusal(refusal), refusal)
            return
        move = await self._approvals.approve(card, by=user)  # a refusal is audited there
        if not move.moved:
            await reply(ui.refusal(move.reason), move.reason)
            return
        self._run.start(move.pending, confirmed_by=(move.pending.confirmed_by or "?", user))

    async def on_cancel_card(self, *, user: str, card: str, reply: Reply) -> None:
        if refusal := await self._kit.user_refusal(user, "cancel a rollback card"):
            await reply(ui.refusal(refusal), refusal)
            return
        move = await self._approvals.cancel(card, by=user)
        if not move.moved:
            await reply(ui.refusal(move.reason), move.reason)
            return  # the card already shows its final state
        await self._refresh_card(move.pending)

    # --- buttons elsewhere that open a fresh card ----------------------------------------------

    async def on_next_step(self, *, user: str, channel: str, procedure: ProcedureName,
                           environment: str, version: str, reason: str, reply: Reply) -> None:
        """A follow-up button after a failed run opens a fresh pre-flight card."""
        if refusal := await self._kit.user_refusal(user, "start a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        await self.open_card(RollbackRequest(environment=environment, procedure=procedure,
                                             target=parse_version(version), requested_by=user,
                                             reason=reason),
                             channel=channel)

    async def on_assess_open_card(self, *, user: str, channel: str, ref: AssessCardRef,
                                  reply: Reply) -> None:
        """The decision matrix's "open the card" button."""
        if refusal := await self._kit.user_refusal(user, "start a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        await self.open_card(RollbackRequest(environment=ref.environment,
                                             procedure=ProcedureName(ref.procedure),
                                             target=None, requested_by=user,
                                             reason="decision matrix: roll back"),
                             channel=channel)

    async def on_roll_back_again(self, *, user: str, run_id: int, channel: str,
                                 reply: Reply) -> None:
        """After a put-back that is not healthy: a fresh card for the cancelled rollback."""
        if refusal := await self._kit.user_refusal(user, "start a rollback"):
            await reply(ui.refusal(refusal), refusal)
            return
        request = await self._recoveries.again_request(run_id, by=user)
        if request is None:
            await reply(ui.refusal(f"Run #{run_id} left nothing to roll back again."), "no-op")
            return
        await self.open_card(request, channel=channel)

    # --- helpers -------------------------------------------------------------------------------

    async def _refresh_card(self, pending: Pending) -> None:
        ref = pending.front_ref
        if "ts" not in ref:
            return
        facts = CardFacts(**{**ref["facts"], "procedure": ProcedureName(
            ref["facts"]["procedure"])})
        blocks = [*ref["body"], *card_state(facts, pending, now=_now())]
        try:
            await self._client.chat_update(channel=ref["channel"], ts=ref["ts"],
                                           text=blocks[0]["text"]["text"], blocks=blocks)
        except SlackApiError as exc:
            log.error("could not update card %s: %s", pending.id, exc)

    async def _ephemeral(self, pending: Pending, user: str, text: str) -> None:
        try:
            await self._client.chat_postEphemeral(channel=pending.front_ref["channel"],
                                                  user=user, text=text)
        except (SlackApiError, KeyError) as exc:
            log.warning("could not tell %s: %s (%s)", user, text, exc)


def _card_ok(pending: Pending) -> bool:
    return bool(pending.front_ref.get("facts", {}).get("ok"))


def _now() -> datetime:
    return datetime.now(UTC)
