"""The Bolt app: every row of the listener table registered the same way; ack first, work after.

Listeners run on the ack loop (``handlers/ack_loop.py``): they ack there at once and hand the work
to the main loop, so a slow database or SSH session never holds up the next request's ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks as ui
from handlers.ack_loop import BUSY, WorkHandoff
from handlers.autorollback import SlackAutoRollback, autorollback_rows
from handlers.blocks.home import refused_modal
from handlers.front import Reply, SlackFront
from handlers.listeners import Kind, Request, Row, front_rows
from handlers.slack_client import BudgetedApp

log = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[None]]


def respond_reply(respond: AsyncRespond) -> Reply:
    async def reply(blocks: ui.Blocks, text: str) -> None:
        await respond(text=text, blocks=blocks, response_type="ephemeral",
                      replace_original=False)
    return reply


def ephemeral_reply(client: AsyncWebClient, *, channel: str, user: str) -> Reply:
    async def reply(blocks: ui.Blocks, text: str) -> None:
        await client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks)
    return reply


def modal_reply(client: AsyncWebClient, *, trigger_id: str) -> Reply:
    """The answer to a click in the Home tab, which has no channel: a small modal."""
    async def reply(blocks: ui.Blocks, text: str) -> None:
        await client.views_open(trigger_id=trigger_id, view=refused_modal(text))
    return reply


def _from_home_tab(body: dict[str, Any]) -> bool:
    return bool(body.get("container", {}).get("type") == "view"
                and body.get("view", {}).get("type") == "home")


def build_app(*, front: SlackFront, client: AsyncWebClient, signing_secret: str | None,
              auto: SlackAutoRollback, handoff: WorkHandoff) -> AsyncApp:
    """``signing_secret`` None: Socket Mode, where nothing comes over HTTP to be verified.

    ``process_before_response``: Bolt answers as soon as the listener returns, instead of polling
    every 10 ms for the ack; a listener here only acks and hands its work over, so it returns at
    once.
    """
    app = BudgetedApp(client=client, signing_secret=signing_secret or "",
                      request_verification_enabled=signing_secret is not None,
                      process_before_response=True, raise_error_for_unhandled_request=False)
    busy_replies: set[asyncio.Task[None]] = set()
    for row in [*front_rows(front), *autorollback_rows(auto)]:
        register = {Kind.COMMAND: app.command, Kind.EVENT: app.event, Kind.ACTION: app.action,
                    Kind.VIEW: app.view, Kind.SHORTCUT: app.shortcut}[row.kind]
        register(row.matcher)(_listener(row, front, handoff, busy_replies))

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack listener failed: %s", error, exc_info=error)

    return app


@dataclass(frozen=True)
class _CheckFailed:
    """A modal's check raised: the modal is acked, and the error told like any work's."""

    error: Exception

    async def reraise(self) -> None:
        raise self.error


def _listener(row: Row, front: SlackFront, handoff: WorkHandoff,
              busy_replies: set[asyncio.Task[None]]) -> Listener:
    """Acknowledge as the row says, hand the work to the main loop; errors become a sentence.

    Runs on the ack loop. A row with a ``check`` (a modal) needs the engine before its ack, whose
    errors Slack takes only there: the check runs on the main loop, and the ack waits for it.
    Bolt passes arguments by these parameter names.
    """
    async def check(request: Request) -> dict[str, str] | _CheckFailed | None:
        assert row.check is not None
        try:
            return await row.check(request)
        except Exception as exc:
            return _CheckFailed(exc)

    async def listener(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient,
                       respond: AsyncRespond | None = None) -> None:
        request = Request(body=body, reply=_reply_for(row, body, client, respond))
        quick = row.ack_text(request) if row.ack_text is not None else None
        failed: _CheckFailed | None = None
        if row.check is not None:
            verdict = await handoff.call(check(request))
            if isinstance(verdict, dict) and verdict:
                await ack(response_action="errors", errors=verdict)
                return
            failed = verdict if isinstance(verdict, _CheckFailed) else None

        async def handle() -> None:
            # Called in here, so that a handler failing as it reads the request (a forged
            # button value) fails on the main loop and is told like any error of its work.
            await row.handle(request)

        work = failed.reraise() if failed is not None else handle()
        if handoff.submit(front.kit.after_ack(work, request.reply)):
            await (ack(text=quick) if quick else ack())
            return
        _close(work)
        log.warning("Slack request refused, too much work in flight: %s", row.matcher)
        if row.kind is Kind.COMMAND:
            await ack(text=BUSY)
            return
        await ack()
        task = asyncio.create_task(_tell(request.reply, BUSY))  # after the ack, not before
        busy_replies.add(task)
        task.add_done_callback(busy_replies.discard)
    return listener


def _close(work: Coroutine[Any, Any, None]) -> None:
    work.close()  # never started: no "coroutine was never awaited" warning


async def _tell(reply: Reply, text: str) -> None:
    try:
        await reply(ui.refusal(text), text)
    except Exception as exc:
        log.warning("could not answer the user: %s (%s)", text, exc)


def _reply_for(row: Row, body: dict[str, Any], client: AsyncWebClient,
               respond: AsyncRespond | None) -> Reply:
    if row.kind is Kind.EVENT:  # an @mention has no response_url: an ephemeral message
        event = body.get("event", {})
        return ephemeral_reply(client, channel=str(event.get("channel", "")),
                               user=str(event.get("user", "")))
    if _from_home_tab(body) and "trigger_id" in body:  # no response_url there: a modal
        return modal_reply(client, trigger_id=str(body["trigger_id"]))
    if respond is not None and row.kind is not Kind.VIEW:
        return respond_reply(respond)

    async def log_only(blocks: ui.Blocks, text: str) -> None:
        log.warning("listener %s: %s", row.matcher, text)
    return log_only
