"""The message shortcut "Roll back this deploy": on CI's deploy message, the pre-flight card.

Allowed channels and users only (refusals are ephemeral and audited). The release and the
environment come from the message (``bot.release_mention``), the target from what rollbot knows
(``bot.release_before``); the card is the one `/rollback` posts, with a "Target version" line that
says where the target came from and a line that refuses when the named deploy is not what runs.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bot.errors import InvalidInput
from bot.model import Check, ProcedureName, RollbackRequest
from bot.release_before import ReleaseBefore, ReleaseFinder
from bot.release_mention import find_release
from bot.service import Plan
from bot.versions import parse_version
from handlers import blocks as ui
from handlers.access import Access
from handlers.front.cards import CardFront
from handlers.front.common import FrontKit, Reply
from handlers.message_text import message_text

log = logging.getLogger(__name__)

NAME = "Roll back this deploy"  # as the manifest names the shortcut


class ShortcutFront:
    """Takes the message shortcut; the card itself is ``CardFront``'s."""

    def __init__(self, *, kit: FrontKit, access: Access, cards: CardFront,
                 finder: ReleaseFinder) -> None:
        self._kit = kit
        self._access = access
        self._cards = cards
        self._finder = finder

    async def on_message_shortcut(self, *, user: str, channel: str, channel_name: str | None,
                                  message: dict[str, Any], reply: Reply) -> None:
        where = f"“{NAME}” on message {message.get('ts', '?')} in {channel}"
        refusal = await self._refusal(user=user, channel=channel, channel_name=channel_name,
                                      where=where)
        if refusal:
            await reply(ui.refusal(refusal), refusal)
            return
        runbook = self._kit.rollbot.runbook
        text = message_text(message)
        environment = None
        try:
            named = find_release(text, environments=runbook.environments,
                                 default=runbook.default_environment)
            environment = named.environment
            found = await self._finder.release_before(environment=named.environment,
                                                      named=named.version, actor=user)
        except InvalidInput as exc:  # nothing is posted: the sentence is for this person
            await self._kit.audit_refusal(user, f"{where}: {exc}", environment=environment)
            await reply(ui.refusal(str(exc)), str(exc))
            return
        await self._kit.rollbot.audit(
            environment=found.environment, actor=user, kind="shortcut",
            detail=f"{where}: {found.named} → {found.target} ({found.source})")
        request = RollbackRequest(environment=found.environment,
                                  procedure=ProcedureName.SIMPLE,
                                  target=parse_version(found.target), requested_by=user,
                                  reason=_reason(text, found))
        plan = with_target_source(await self._cards.plan(request), found)
        await self._cards.post_card(plan, channel=channel)

    async def _refusal(self, *, user: str, channel: str, channel_name: str | None,
                       where: str) -> str:
        """Why this person may not use the shortcut here (audited), or ""."""
        decision = await self._access.channel_allowed(channel, channel_name)
        if decision.allowed:
            decision = await self._access.user_allowed(user)
            if decision.allowed:
                return ""
            reason = f"Refused: you cannot roll back a deploy from its message: {decision.reason}"
        else:
            reason = f"Refused: {decision.reason}"
        await self._kit.audit_refusal(user, f"{where}: {reason}")
        return reason


def with_target_source(plan: Plan, found: ReleaseBefore) -> Plan:
    """The card's pre-flight with where the target came from, and whether the deploy runs."""
    pre = plan.preflight
    if pre.current == "?":  # pre-flight failed already: the card says why
        return plan
    lines = [Check("Target version", True,
                   f"{found.target}, the release before {found.named}: {found.because}")]
    if pre.current != str(found.named):
        lines.append(Check("Deploy in the message", False,
                           f"{found.environment} runs {pre.current}, not {found.named} that the "
                           "message names: this deploy is not what runs now (rolled back or "
                           "replaced since?). Use /rollback to choose the target."))
    else:
        lines.append(Check("Deploy in the message", True,
                           f"{found.environment} runs {found.named}, the release the message "
                           "names"))
    checks = list(pre.checks)
    at = next((i + 1 for i, c in enumerate(checks) if c.name == "Current version"), len(checks))
    checks[at:at] = lines
    return replace(plan, preflight=replace(pre, checks=tuple(checks)))


def _reason(text: str, found: ReleaseBefore) -> str:
    line = next((ln for ln in text.splitlines() if str(found.named)[1:] in ln), text)
    return ui.clip(f"{NAME}: “{' '.join(line.split())}”", 200)
