"""The emulator's Socket Mode: apps.connections.open, the WebSocket, envelopes and acks.

Driven by a bare aiohttp WebSocket (the wire format), by slack_sdk's aiohttp SocketModeClient
and by Bolt's AsyncSocketModeHandler (what rollbot uses).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from slack_emulator import Emulator, SocketModeSender

TOKEN = "xoxb-test"
APP_TOKEN = "xapp-1-A0ROLLBOT-1-test"
CHANNEL = "C0INCIDENTS"
ENVELOPE_KEYS = {
    "envelope_id",
    "type",
    "payload",
    "accepts_response_payload",
    "retry_attempt",
    "retry_reason",
}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token=TOKEN, app_tokens=(APP_TOKEN,)) as e:
        e.add_channel(CHANNEL, "incidents")
        e.add_user("U0ALICE", "alice")
        e.add_user("U0BOB", "bob")
        yield e


def web_client(emu: Emulator, token: str = TOKEN) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=emu.api_url)


async def open_url(emu: Emulator, app_token: str = APP_TOKEN) -> str:
    response = await web_client(emu).apps_connections_open(app_token=app_token)
    return str(response["url"])


async def api_error(call: Awaitable[Any]) -> str:
    with pytest.raises(SlackApiError) as info:
        await call
    return str(info.value.response["error"])


# -- apps.connections.open ---------------------------------------------------------------------


async def test_apps_connections_open_takes_app_level_tokens_only(emu: Emulator) -> None:
    url = await open_url(emu)
    assert url.startswith(f"ws://127.0.0.1:{emu.port}/socket-mode/")
    assert len(url.rsplit("/", 1)[1]) >= 16  # a ticket
    assert await open_url(emu) != url  # a fresh ticket each time
    # Slack: a bot token there is the wrong kind of token; an unknown one does not authenticate
    assert await api_error(web_client(emu).apps_connections_open(app_token=TOKEN)) == (
        "not_allowed_token_type"
    )
    assert await api_error(web_client(emu).apps_connections_open(app_token="xapp-nope")) == (
        "invalid_auth"
    )
    # ... and the token goes in the Authorization header, not in the form
    async with (
        aiohttp.ClientSession() as session,
        session.post(emu.api_url + "apps.connections.open", data={"token": APP_TOKEN}) as res,
    ):
        assert await res.json() == {"ok": False, "error": "invalid_auth"}
    # an app-level token is no bot token
    assert await api_error(
        web_client(emu, APP_TOKEN).chat_postMessage(channel=CHANNEL, text="hi")
    ) == ("not_allowed_token_type")
    emu.add_app_token("xapp-later")
    assert (await open_url(emu, "xapp-later")).startswith("ws://")
    assert [c.error for c in emu.calls_to("apps.connections.open")] == [
        None,
        None,
        "not_allowed_token_type",
        "invalid_auth",
        "invalid_auth",
        None,
    ]


# -- the wire ----------------------------------------------------------------------------------


async def test_hello_envelope_ack_and_single_use_tickets(emu: Emulator) -> None:
    url = await open_url(emu)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["num_connections"] == 1
            assert hello["connection_info"] == {"app_id": "A0ROLLBOT"}
            assert hello["debug_info"]["approximate_connection_time"] > 0
            conn = await emu.wait_socket_connected(timeout=1)
            assert conn.open and conn.id == "c1"

            event = {"type": "event_callback", "event": {"type": "app_mention", "text": "hi"}}
            sent = await emu.socket_send("events_api", event)
            envelope = await ws.receive_json(timeout=5)
            assert set(envelope) == ENVELOPE_KEYS
            assert envelope == {
                "envelope_id": sent.envelope_id,
                "type": "events_api",
                "payload": event,
                "accepts_response_payload": False,
                "retry_attempt": 0,
                "retry_reason": "",
            }
            assert sent.status == "pending"
            await asyncio.sleep(0.05)
            await ws.send_json({"envelope_id": sent.envelope_id})
            acked = await emu.wait_socket_ack(sent.envelope_id)
            assert acked is sent and acked.status == "acked" and acked.acked_in_time
            assert acked.elapsed is not None and 0.05 <= acked.elapsed < 1
            assert acked.ack_payload is None and acked.ack is not None
            assert acked.ack.connection_id == "c1"

            command = {"command": "/rollback", "text": "v1", "user_id": "U0ALICE"}
            sent = await emu.socket_send("slash_commands", command)
            envelope = await ws.receive_json(timeout=5)
            assert envelope["type"] == "slash_commands" and envelope["accepts_response_payload"]
            await ws.send_json({"envelope_id": sent.envelope_id, "payload": {"text": "On it"}})
            acked = await emu.wait_socket_ack(sent.envelope_id)
            assert acked.ack_payload == {"text": "On it"}

            for kind, accepts in (("block_actions", False), ("view_submission", True)):
                sent = await emu.socket_send("interactive", {"type": kind})
                assert (await ws.receive_json(timeout=5))["accepts_response_payload"] is accepts

            await ws.send_str("not json")
            await ws.send_json({"envelope_id": "unknown"})
            await emu.wait_for(lambda: len(emu.socket_mode.stray) == 2)

        await emu.wait_for(lambda: not conn.open)
        assert conn.close_code is not None
        # a ticket opens one connection
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url)
        assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"ws://127.0.0.1:{emu.port}/socket-mode/made-up")


async def test_missing_and_late_acks_are_recorded(emu: Emulator) -> None:
    assert emu.socket_mode.ack_window == 3.0  # Slack's
    emu.socket_mode.ack_window = 0.3  # shorter, to keep the test quick
    async with aiohttp.ClientSession() as session, session.ws_connect(await open_url(emu)) as ws:
        await ws.receive_json(timeout=5)  # hello
        silent = await emu.socket_send("slash_commands", {"command": "/rollback"})
        start = time.monotonic()
        decided = await emu.wait_socket_ack(silent.envelope_id)
        assert time.monotonic() - start >= 0.25
        assert decided.status == "not_acked" and not decided.acked_in_time
        assert decided.ack is None and decided.elapsed is None
        await ws.send_json({"envelope_id": silent.envelope_id, "payload": {"text": "late"}})
        await emu.wait_for(lambda: silent.ack is not None)
        assert silent.status == "late" and not silent.acked_in_time
        assert silent.elapsed is not None and silent.elapsed > 0.3
        await ws.send_json({"envelope_id": silent.envelope_id})  # acked twice
        await emu.wait_for(lambda: silent.extra_acks)
        assert [e.status for e in emu.socket_envelopes("slash_commands")] == ["late"]


async def test_sending_needs_a_connection_and_a_known_type(emu: Emulator) -> None:
    with pytest.raises(LookupError):
        await emu.socket_send("events_api", {})
    async with aiohttp.ClientSession() as session, session.ws_connect(await open_url(emu)) as ws:
        await ws.receive_json(timeout=5)
        await emu.wait_socket_connected()
        with pytest.raises(ValueError, match="envelope type"):
            await emu.socket_send("slash_command", {})
    with pytest.raises(TimeoutError):
        await emu.wait_socket_connected(timeout=0.2)


async def test_stop_closes_the_sockets() -> None:
    emu = await Emulator(token=TOKEN, app_tokens=(APP_TOKEN,)).start()
    async with aiohttp.ClientSession() as session, session.ws_connect(await open_url(emu)) as ws:
        await ws.receive_json(timeout=5)
        conn = await emu.wait_socket_connected()
        start = time.monotonic()
        stopping = asyncio.create_task(emu.stop())
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == aiohttp.WSCloseCode.GOING_AWAY
        await asyncio.wait_for(stopping, 5)
        assert time.monotonic() - start < 3
        assert not conn.open


# -- slack_sdk's client ------------------------------------------------------------------------


async def test_slack_sdk_client_receives_acks_and_reconnects_on_disconnect(
    emu: Emulator,
) -> None:
    client = SocketModeClient(app_token=APP_TOKEN, web_client=web_client(emu))
    received: list[SocketModeRequest] = []

    async def listener(c: Any, req: SocketModeRequest) -> None:
        received.append(req)
        await c.send_socket_mode_response(SocketModeResponse(req.envelope_id, {"text": "ok"}))

    client.socket_mode_request_listeners.append(listener)
    try:
        await client.connect()  # type: ignore[no-untyped-call]
        first = await emu.wait_socket_connected()
        payload = {"type": "block_actions", "actions": [{"action_id": "go"}]}
        sent = await emu.socket_send("interactive", payload)
        acked = await emu.wait_socket_ack(sent.envelope_id)
        assert acked.acked_in_time and acked.ack_payload == {"text": "ok"}
        req = received[0]
        assert (req.type, req.envelope_id) == ("interactive", sent.envelope_id)
        assert req.payload == payload
        assert req.accepts_response_payload is False and req.retry_attempt == 0

        # Slack asks for a refresh: the client takes a new URL and a new connection
        assert await emu.socket_disconnect("refresh_requested") == 1
        second = await emu.wait_for(
            lambda: next((c for c in emu.socket_mode.open_connections() if c is not first), None)
        )
        await emu.wait_for(lambda: not first.open)
        assert len(emu.calls_to("apps.connections.open")) == 2
        sent = await emu.socket_send("events_api", {"type": "event_callback"})
        acked = await emu.wait_socket_ack(sent.envelope_id)
        assert acked.acked_in_time and acked.connection_id == second.id
    finally:
        await client.close()  # type: ignore[no-untyped-call]
    await emu.wait_for(lambda: not emu.socket_mode.open_connections())


async def test_slack_sdk_wss_url_refused_for_a_bot_token(emu: Emulator) -> None:
    """What an app must check itself: SocketModeClient.connect() retries this forever."""
    client = SocketModeClient(app_token=TOKEN, web_client=web_client(emu))
    try:
        with pytest.raises(SlackApiError) as info:
            await client.issue_new_wss_url()
        assert info.value.response["error"] == "not_allowed_token_type"
    finally:
        await client.close()  # type: ignore[no-untyped-call]


# -- Bolt, with SocketModeSender ---------------------------------------------------------------


def bolt_app(emu: Emulator) -> AsyncApp:
    app = AsyncApp(client=web_client(emu), signing_secret="unused-in-socket-mode")

    @app.command("/rollback")
    async def rollback(ack: Callable[..., Awaitable[None]], command: dict[str, Any]) -> None:
        if command["text"] == "help":
            await ack(text="Usage: /rollback VERSION")
        elif command["text"] == "slow":
            await asyncio.sleep(1.0)  # past the (shortened) ack window
            await ack()
        else:
            await ack()
            await app.client.chat_postMessage(
                channel=command["channel_id"],
                text="plan",
                blocks=[
                    {
                        "type": "actions",
                        "elements": [
                            {
                                "type": "button",
                                "text": {"type": "plain_text", "text": "Go"},
                                "action_id": "go",
                                "value": command["text"],
                            }
                        ],
                    }
                ],
            )

    @app.action("go")
    async def go(ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        await app.client.chat_update(
            channel=body["channel"]["id"],
            ts=body["message"]["ts"],
            text=f"going to {body['actions'][0]['value']}",
        )

    @app.event("app_mention")
    async def mention(event: dict[str, Any], say: Callable[..., Awaitable[Any]]) -> None:
        await say(text="On it", thread_ts=event["ts"])

    return app


async def test_bolt_socket_mode_with_the_socket_sender(emu: Emulator) -> None:
    handler = AsyncSocketModeHandler(bolt_app(emu), APP_TOKEN)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await emu.wait_socket_connected()
        sender = SocketModeSender(emu)

        helped = await sender.slash_command("U0BOB", CHANNEL, "help")
        assert helped.acked_in_time and helped.json == {"text": "Usage: /rollback VERSION"}
        assert emu.transcript(CHANNEL, viewer="U0BOB") == (
            "rollbot → bob (only visible to you): Usage: /rollback VERSION"
        )
        assert helped.envelope is not None
        slash = helped.envelope.payload
        assert slash["command"] == "/rollback" and slash["text"] == "help"
        assert slash["user_id"] == "U0BOB" and slash["channel_id"] == CHANNEL
        assert slash["channel_name"] == "incidents" and slash["user_name"] == "bob"
        assert slash["team_id"] == "T0AZORA" and slash["api_app_id"] == "A0ROLLBOT"
        assert slash["response_url"] == helped.response_url
        assert slash["trigger_id"] == helped.trigger_id and helped.trigger_id

        result = await sender.slash_command("U0ALICE", CHANNEL, "v1.2.2")
        assert result.acked_in_time and result.status == 200 and result.json is None
        plan = await emu.wait_for(lambda: next(iter(emu.messages(CHANNEL)), None))
        click = await sender.block_action("U0ALICE", CHANNEL, plan.ts, "go")
        assert click.acked_in_time
        assert click.envelope is not None and click.envelope.type == "interactive"
        assert click.envelope.payload["actions"][0]["value"] == "v1.2.2"
        await emu.wait_for(lambda: plan.text == "going to v1.2.2")

        mention = await sender.app_mention("U0BOB", CHANNEL, "status")
        assert mention.acked_in_time and mention.envelope is not None
        assert mention.envelope.type == "events_api"
        ts = mention.envelope.payload["event"]["ts"]
        await emu.wait_for(lambda: emu.thread(CHANNEL, ts))

        emu.socket_mode.ack_window = 0.5
        slow = await sender.slash_command("U0ALICE", CHANNEL, "slow")
        assert slow.status == 0 and not slow.acked_in_time
        assert slow.envelope is not None and slow.envelope.status == "not_acked"
        failed = '/rollback failed with the error "dispatch_failed"'
        assert failed in emu.transcript(CHANNEL, viewer="U0ALICE")
        await emu.wait_for(lambda: slow.envelope is not None and slow.envelope.ack is not None)
        assert slow.envelope.status == "late"
        assert [e.status for e in emu.socket_envelopes()] == [
            "acked",
            "acked",
            "acked",
            "acked",
            "late",
        ]
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


def test_envelope_record_is_json() -> None:
    from slack_emulator.socket_mode import SocketEnvelope

    e = SocketEnvelope("e1", "events_api", {"a": 1}, False, 0, "", "c1", time.monotonic())
    assert json.loads(json.dumps(e.to_json()))["status"] == "pending"
