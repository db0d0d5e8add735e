"""The emulator's message shortcuts: CI posts a message, a person runs a shortcut on it.

``post_bot_message`` stores another app's bot message (``subtype: bot_message``); the sender's
``message_action`` delivers Slack's payload for a message shortcut, signed over HTTP (also through
``/_emulator/send/message_action`` from another process) or as a Socket Mode envelope; its
``response_url`` answers the person privately in that channel.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncRespond
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from slack_emulator import Emulator, EmulatorClient, SlackSender, SocketModeSender

TOKEN = "xoxb-test"
APP_TOKEN = "xapp-1-A0ROLLBOT-1-test"
SECRET = "emulator-signing-secret"
CHANNEL = "C0INCIDENTS"
CALLBACK = "rollbot.shortcut.rollback"
DEPLOY_BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*v1.2.3* is live"}}]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token=TOKEN, signing_secret=SECRET, app_tokens=(APP_TOKEN,)) as e:
        e.add_channel(CHANNEL, "incidents")
        e.add_user("U0ALICE", "alice")
        yield e


Seen = list[tuple[dict[str, str], bytes]]


@pytest.fixture
async def app_url() -> AsyncIterator[tuple[str, Seen]]:
    """An app that records what it receives and answers 200 with an empty body."""
    seen: Seen = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", seen
    finally:
        await runner.cleanup()


async def test_ci_posts_as_another_apps_bot(emu: Emulator) -> None:
    remote = EmulatorClient(emu.base_url)
    ts = await remote.post_bot_message(CHANNEL, "B0CI", "GitHub Actions", "Deployed v1.2.3",
                                       blocks=DEPLOY_BLOCKS,
                                       attachments=[{"fallback": "deploy", "color": "good"}])
    record = await remote.message(CHANNEL, ts)
    assert record is not None
    message = record["message"]
    assert message["subtype"] == "bot_message" and "user" not in message
    assert (message["bot_id"], message["username"]) == ("B0CI", "GitHub Actions")
    assert message["blocks"] == DEPLOY_BLOCKS
    assert message["attachments"] == [{"fallback": "deploy", "color": "good"}]
    assert emu.transcript(CHANNEL) == "GitHub Actions:\n  *v1.2.3* is live"
    with pytest.raises(ValueError, match="own bot"):
        emu.post_bot_message(CHANNEL, emu.ident.bot_id, "rollbot", "not like this")


async def test_message_action_is_signed_and_shaped_like_slacks(
        emu: Emulator, app_url: tuple[str, Seen]) -> None:
    url, seen = app_url
    ci = emu.post_bot_message(CHANNEL, "B0CI", "GitHub Actions", "Deployed v1.2.3",
                              blocks=DEPLOY_BLOCKS)
    result = await SlackSender(url, SECRET, emu).message_action("U0ALICE", CHANNEL, ci.ts,
                                                                CALLBACK)
    assert result.acked_in_time
    headers, body = seen[0]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "message_action" and payload["callback_id"] == CALLBACK
    assert payload["user"]["id"] == "U0ALICE" and payload["user"]["name"] == "alice"
    assert payload["channel"] == {"id": CHANNEL, "name": "incidents"}
    assert payload["team"]["id"] == emu.ident.team_id
    assert payload["message_ts"] == ci.ts
    assert payload["message"]["text"] == "Deployed v1.2.3"
    assert payload["message"]["blocks"] == DEPLOY_BLOCKS
    assert payload["message"]["bot_id"] == "B0CI"
    assert payload["trigger_id"] == result.trigger_id
    assert payload["response_url"] == result.response_url

    # The response_url answers the person in that channel, privately.
    assert result.response_url is not None
    await AsyncWebhookClient(result.response_url).send(text="Refused: not here")
    [said] = emu.ephemerals(CHANNEL, "U0ALICE")
    assert said.text == "Refused: not here"

    with pytest.raises(LookupError):
        await SlackSender(url, SECRET, emu).message_action("U0ALICE", CHANNEL, said.ts, CALLBACK)
    with pytest.raises(LookupError):
        await SlackSender(url, SECRET, emu).message_action("U0ALICE", CHANNEL, "1.2", CALLBACK)


async def test_message_action_from_another_process(emu: Emulator,
                                                   app_url: tuple[str, Seen]) -> None:
    url, seen = app_url
    remote = EmulatorClient(emu.base_url)
    ts = await remote.post_bot_message(CHANNEL, "B0CI", "ci", "Deployed v1.2.3")
    sent = await remote.send("message_action", app_url=url, user_id="U0ALICE",
                             channel_id=CHANNEL, message_ts=ts, callback_id=CALLBACK)
    assert sent["status"] == 200 and sent["acked_in_time"]
    headers, body = seen[0]
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    assert json.loads(parse_qs(body.decode())["payload"][0])["message_ts"] == ts


async def test_message_action_over_socket_mode_reaches_a_bolt_shortcut(emu: Emulator) -> None:
    app = AsyncApp(client=AsyncWebClient(token=TOKEN, base_url=emu.api_url),
                   signing_secret="unused-in-socket-mode")

    @app.shortcut(CALLBACK)
    async def shortcut(ack: Callable[[], Awaitable[None]], body: dict[str, Any],
                       respond: AsyncRespond) -> None:
        await ack()
        await respond(text=f"rolling back {body['message']['text'].split()[-1]}")

    handler = AsyncSocketModeHandler(app, APP_TOKEN)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await emu.wait_socket_connected()
        ci = emu.post_bot_message(CHANNEL, "B0CI", "ci", "Deployed v1.2.3")
        result = await SocketModeSender(emu).message_action("U0ALICE", CHANNEL, ci.ts, CALLBACK)
        assert result.acked_in_time
        assert result.envelope is not None and result.envelope.type == "interactive"
        assert result.envelope.payload["type"] == "message_action"
        said = await emu.wait_for(lambda: emu.ephemerals(CHANNEL, "U0ALICE"))
        assert said[0].text == "rolling back v1.2.3"

        # the same from another process, through the control API
        remote = EmulatorClient(emu.base_url)
        ts = await remote.post_bot_message(CHANNEL, "B0CI", "ci", "Deployed v1.2.4")
        sent = await remote.send("message_action", socket_mode=True, user_id="U0ALICE",
                                 channel_id=CHANNEL, message_ts=ts, callback_id=CALLBACK)
        assert sent["acked_in_time"] and sent["envelope"]["type"] == "interactive"
        assert sent["envelope"]["payload"]["message_ts"] == ts
        await emu.wait_for(lambda: len(emu.ephemerals(CHANNEL, "U0ALICE")) == 2)
        assert emu.ephemerals(CHANNEL, "U0ALICE")[1].text == "rolling back v1.2.4"
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
