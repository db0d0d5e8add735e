"""The App Home tab in Slack: publishing it per person, and its buttons and modals.

The engine gathers the state (``bot/dashboard``) and decides when to publish; this part renders
it per person (buttons only for those allowed to roll back) and takes the tab's clicks: Plan a
rollback (the card, through ``CardFront`` as `/rollback` posts it), Assess (the decision
matrix), Unquarantine (the engine's audited ``lift_quarantine``). The watch's buttons carry the
automatic rollback's own ``action_id``s, so its handlers take them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.dashboard import Dashboard, DashboardRefresher
from bot.model import RollbackRequest
from handlers import blocks as ui
from handlers.access import Access
from handlers.assess import assess_modal
from handlers.blocks.home import (
    home_view,
    parse_plan_form,
    plan_modal,
    refused_modal,
    typed_reason,
    unquarantine_modal,
)
from handlers.front.cards import CardFront
from handlers.front.common import FrontKit
from handlers.ids import HomeBlock
from handlers.metadata import QuarantineRef

log = logging.getLogger(__name__)


class HomeFront:
    """Publishes the home tab and handles what is clicked and submitted there."""

    def __init__(self, *, kit: FrontKit, cards: CardFront, access: Access,
                 home: DashboardRefresher) -> None:
        self._kit = kit
        self._rollbot = kit.rollbot
        self._client = kit.client
        self._cards = cards
        self._access = access
        self._home = home

    # --- publishing --------------------------------------------------------------------------

    async def on_opened(self, *, user: str, tab: str) -> None:
        if tab == "home":  # the Messages tab opens the same event
            await self._home.opened(user)

    async def publish(self, dashboard: Dashboard, users: Sequence[str]) -> list[str]:
        """The engine's publisher: the tab to each user; returns those Slack did not take."""
        failed = []
        for user in users:
            may_act = (await self._access.user_allowed(user)).allowed
            try:
                await self._client.views_publish(user_id=user,
                                                 view=home_view(dashboard, may_act=may_act))
            except SlackApiError as exc:
                log.warning("could not publish the home tab to %s: %s", user, exc)
                failed.append(user)
        return failed

    # --- the buttons -------------------------------------------------------------------------

    async def on_plan(self, *, user: str, trigger_id: str) -> None:
        if await self._refused(user, "plan a rollback", trigger_id):
            return
        runbook = self._rollbot.runbook
        await self._client.views_open(trigger_id=trigger_id, view=plan_modal(
            environments=list(runbook.environments), default=runbook.default_environment))

    async def on_assess(self, *, user: str, trigger_id: str) -> None:
        if await self._refused(user, "assess a rollback", trigger_id):
            return
        env = self._rollbot.runbook.default_environment
        await self._client.views_open(trigger_id=trigger_id, view=assess_modal(environment=env))

    async def on_unquarantine(self, *, user: str, ref: QuarantineRef, trigger_id: str) -> None:
        if await self._refused(user, "lift a quarantine", trigger_id,
                               environment=ref.environment):
            return
        await self._client.views_open(trigger_id=trigger_id, view=unquarantine_modal(ref))

    # --- the modals: checked before the ack (errors go back in it), done after ---------------

    async def check_plan(self, *, user: str, values: dict[str, Any]) -> dict[str, str] | None:
        """Errors per block for a bad plan (audited; nothing is posted), or None."""
        form, errors = parse_plan_form(values)
        if form is not None and form.environment not in self._rollbot.runbook.environments:
            errors = {HomeBlock.PLAN_ENVIRONMENT.value:
                      f"There is no environment {form.environment[:60]} in the runbook."}
        if not errors and (refusal := await self._kit.user_refusal(user, "plan a rollback")):
            errors = {HomeBlock.PLAN_REASON.value: refusal[:150]}
        elif errors:
            await self._kit.audit_refusal(user, "home tab plan refused: " + " ".join(
                errors.values()), environment=form.environment if form else None)
        return errors or None

    async def on_plan_submitted(self, *, user: str, values: dict[str, Any]) -> None:
        form, _ = parse_plan_form(values)
        if form is None:  # the check refused it already; a forged submission ends here
            return
        request = RollbackRequest(environment=form.environment, procedure=form.procedure,
                                  target=form.target, requested_by=user, reason=form.reason)
        await self._cards.open_card(request, channel=self._kit.config.incidents_channel)

    async def check_unquarantine(self, *, user: str, ref: QuarantineRef,
                                 values: dict[str, Any]) -> dict[str, str] | None:
        block = HomeBlock.UNQUARANTINE_REASON.value
        if refusal := await self._kit.user_refusal(user, "lift a quarantine"):
            return {block: refusal[:150]}
        if not typed_reason(values):
            await self._kit.audit_refusal(user, f"unquarantine {ref.version} in "
                                                f"{ref.environment}: no reason given",
                                          environment=ref.environment)
            return {block: "Say why it is safe to deploy again (it goes in the audit log)."}
        return None

    async def on_unquarantine_submitted(self, *, user: str, ref: QuarantineRef,
                                        values: dict[str, Any]) -> None:
        lifted = await self._rollbot.lift_quarantine(ref.environment, ref.version, by=user,
                                                     reason=typed_reason(values))
        if not lifted:  # someone else lifted it meanwhile: the tab shows it gone
            return
        text = (f"✅ {ui.esc(ref.version)} may be deployed to {ui.esc(ref.environment)} again "
                f"(quarantine lifted by {ui.mention(user)} from the home tab).")
        await self._client.chat_postMessage(channel=self._kit.config.incidents_channel,
                                            text=text, blocks=[ui.section(text)])

    async def _refused(self, user: str, doing: str, trigger_id: str, *,
                       environment: str | None = None) -> bool:
        """Refuse (audited) someone not allowed; told in a modal, the tab has no channel."""
        decision = await self._access.user_allowed(user)
        if decision.allowed:
            return False
        reason = f"Refused: you cannot {doing}: {decision.reason}"
        await self._kit.audit_refusal(user, f"home tab: {reason}", environment=environment)
        try:
            await self._client.views_open(trigger_id=trigger_id, view=refused_modal(reason))
        except SlackApiError as exc:
            log.warning("could not tell %s they were refused: %s", user, exc)
        return True
