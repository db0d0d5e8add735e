"""What every part of the Slack front shares: refusals and their audit, replies, background work."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.config import SlackConfig
from bot.errors import RollbotError
from bot.fleet_view import FleetShape, HostBoard, fleet_shape
from bot.model import ProcedureName
from bot.service import Rollbot
from handlers import blocks as ui
from handlers.access import Access

log = logging.getLogger(__name__)

Reply = Callable[[ui.Blocks, str], Awaitable[None]]


class FrontKit:
    """The engine, the Slack client and the access rules, with the helpers every part uses."""

    def __init__(self, *, rollbot: Rollbot, client: AsyncWebClient, config: SlackConfig,
                 access: Access) -> None:
        self.rollbot = rollbot
        self.client = client
        self.config = config
        self._access = access
        self._tasks: set[asyncio.Task[None]] = set()

    # --- who may: every refusal is a sentence for the person and a line in the audit log ---

    async def channel_or_user_refusal(self, user: str, channel: str, channel_name: str | None,
                                      text: str) -> str:
        """Why ``/rollback text`` is refused here, for this person; "" when it is not."""
        where = await self._access.channel_allowed(channel, channel_name)
        if not where.allowed:
            reason = f"Refused: {where.reason}"
        elif refusal := await self.user_refusal(user, "use /rollback"):
            reason = refusal
        else:
            return ""
        await self.audit_refusal(user, f"`/rollback {text[:200]}` in {channel}: {reason}")
        return reason

    async def user_refusal(self, user: str, doing: str) -> str:
        """Why ``user`` may not do this (audited), or "" when they may."""
        decision = await self._access.user_allowed(user)
        if decision.allowed:
            return ""
        reason = f"Refused: you cannot {doing}: {decision.reason}"
        await self.audit_refusal(user, reason)
        return reason

    async def approver_refusal(self, user: str) -> str:
        """Why ``user`` may not be the second approver (audited), or ""."""
        decision = await self._access.approver_allowed(user)
        if decision.allowed:
            return ""
        reason = f"Refused: {decision.reason}"
        await self.audit_refusal(user, reason)
        return reason

    async def audit_refusal(self, user: str, detail: str, *,
                            environment: str | None = None) -> None:
        env = environment or self.rollbot.runbook.default_environment
        try:
            await self.rollbot.audit(environment=env, actor=user, kind="refusal", detail=detail)
        except Exception as exc:
            log.error("AUDIT WRITE FAILED (refusal by %s: %s): %s", user, detail, exc)

    def board(self, environment: str) -> HostBoard:
        """Where a live message keeps each fleet host; the canaries come from the runbook."""
        env = self.rollbot.runbook.environments.get(environment)
        return HostBoard(canary=env.fleet.canary if env is not None and env.hosts else 0)

    def fleet(self, environment: str, procedure: ProcedureName) -> FleetShape | None:
        """The environment's fleet as the card and plan show it; None for one host."""
        env = self.rollbot.runbook.environments.get(environment)
        return fleet_shape(env, procedure) if env is not None else None

    def link_live_message(self, run_id: int, channel: str, ts: str) -> None:
        """Record where run ``run_id``'s live message is, with its permalink (in the background).

        The dashboard, the message metadata and the outgoing events link to it. Without a
        permalink (Slack failed) the channel and ts are kept all the same.
        """
        async def record() -> None:
            url: str | None = None
            try:
                answer = await self.client.chat_getPermalink(channel=channel, message_ts=ts)
                url = str(answer["permalink"])
            except Exception as exc:
                log.warning("no permalink for run #%s's live message: %s", run_id, exc)
            await self.rollbot.set_live_message(run_id, channel=channel, ts=ts, url=url)
        self.spawn(record())

    # --- work after the acknowledgement ----------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background; a failure is logged with a reference."""
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

    async def wait_idle(self, timeout_s: float) -> None:
        """Let background work (running rollbacks) finish: at shutdown, and in tests."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
