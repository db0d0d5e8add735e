"""The Bolt app: every row of the listener table registered the same way; ack first, work after.

Listeners run on the ack loop (``handlers/ack_loop.py``): they ack there at once and hand the work
to the main loop, so a slow database or SSH session never holds up the next request's ack.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks as ui
from handlers.ack_loop import BUSY, WorkHandoff
from handlers.autorollback import SlackAutoRollback, autorollback_rows
from handlers.front import Reply, SlackFront
from handlers.listeners import Kind, Request, Row, front_rows

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


def build_app(*, front: SlackFront, client: AsyncWebClient, signing_secret: str | None,
              auto: SlackAutoRollback, handoff: WorkHandoff) -> AsyncApp:
    """``signing_secret`` None: Socket Mode, where nothing comes over HTTP to be verified."""
    app = AsyncApp(client=client, signing_secret=signing_secret or "",
                   request_verification_enabled=signing_secret is not None,
                   raise_error_for_unhandled_request=False)
    for row in [*front_rows(front), *autorollback_rows(auto)]:
        register = {Kind.COMMAND: app.command, Kind.EVENT: app.event, Kind.ACTION: app.action,
                    Kind.VIEW: app.view}[row.kind]
        register(row.matcher)(_listener(row, front, handoff))

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack listener failed: %s", error, exc_info=error)

    return app


def _listener(row: Row, front: SlackFront, handoff: WorkHandoff) -> Listener:
    """Acknowledge as the row says, then its work; errors become a sentence for the person.

    (Bolt takes back an ack when the listener raises soon after it, and Slack then shows an
    error after 3 s.) Bolt passes arguments by these parameter names. A row with a ``check``
    (a modal) needs the engine before its ack: the whole of it runs on the main loop, and the
    ack, a plain value Bolt polls for, is set from there.
    """
    async def listener(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient,
                       respond: AsyncRespond | None = None) -> None:
        request = Request(body=body, reply=_reply_for(row, body, client, respond))

        async def checked_work() -> None:
            if row.check is not None and (errors := await row.check(request)):
                await ack(response_action="errors", errors=errors)
                return
            await ack()
            await row.handle(request)

        quick = (row.ack_text(request) if row.check is None and row.ack_text is not None
                 else None)
        work = checked_work() if row.check is not None else row.handle(request)
        if handoff.submit(front.kit.after_ack(work, request.reply)):
            if row.check is None:
                await (ack(text=quick) if quick else ack())
            return
        if isinstance(work, Coroutine):
            work.close()  # never started: no "coroutine was never awaited" warning
        log.warning("Slack request refused, too much work in flight: %s", row.matcher)
        if row.kind is Kind.COMMAND:
            await ack(text=BUSY)
            return
        await ack()
        await request.reply(ui.refusal(BUSY), BUSY)
    return listener


def _reply_for(row: Row, body: dict[str, Any], client: AsyncWebClient,
               respond: AsyncRespond | None) -> Reply:
    if row.kind is Kind.EVENT:  # an @mention has no response_url: an ephemeral message
        event = body.get("event", {})
        return ephemeral_reply(client, channel=str(event.get("channel", "")),
                               user=str(event.get("user", "")))
    if respond is not None and row.kind is not Kind.VIEW:
        return respond_reply(respond)

    async def log_only(blocks: ui.Blocks, text: str) -> None:
        log.warning("listener %s: %s", row.matcher, text)
    return log_only
