"""The Bolt app: every row of the listener table registered the same way; ack first, work after."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks as ui
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


def build_app(*, front: SlackFront, client: AsyncWebClient, signing_secret: str,
              auto: SlackAutoRollback) -> AsyncApp:
    app = AsyncApp(client=client, signing_secret=signing_secret,
                   raise_error_for_unhandled_request=False)
    for row in [*front_rows(front), *autorollback_rows(auto)]:
        register = {Kind.COMMAND: app.command, Kind.EVENT: app.event, Kind.ACTION: app.action,
                    Kind.VIEW: app.view}[row.kind]
        register(row.matcher)(_listener(row, front))

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack listener failed: %s", error, exc_info=error)

    return app


def _listener(row: Row, front: SlackFront) -> Listener:
    """Acknowledge as the row says, then its work; errors become a sentence for the person.

    (Bolt takes back an ack when the listener raises soon after it, and Slack then shows an
    error after 3 s.) Bolt passes arguments by these parameter names.
    """
    async def listener(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient,
                       respond: AsyncRespond | None = None) -> None:
        request = Request(body=body, reply=_reply_for(row, body, client, respond))

        async def work() -> None:
            if row.check is not None and (errors := await row.check(request)):
                await ack(response_action="errors", errors=errors)
                return
            quick = row.ack_text(request) if row.ack_text is not None else None
            await (ack(text=quick) if quick else ack())
            await row.handle(request)

        await front.kit.after_ack(work(), request.reply)
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
