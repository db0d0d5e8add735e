"""The emulator's App Home: views.publish checked like Slack, each user's tab, opening it and
clicking in it, signed over HTTP and as Socket Mode envelopes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from slack_emulator import Emulator, EmulatorClient, SlackSender, SocketModeSender
from tests.test_slack_emulator import serve

TOKEN, APP_TOKEN, SECRET = "xoxb-home", "xapp-home", "home-signing-secret"


def home(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "home", "blocks": list(blocks)}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


BUTTONS = {"type": "actions", "block_id": "home_buttons", "elements": [
    {"type": "button", "action_id": "plan", "value": "p",
     "text": {"type": "plain_text", "text": "Plan a rollback"}}]}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token=TOKEN, signing_secret=SECRET, app_tokens=(APP_TOKEN,)) as e:
        e.add_user("U0ALICE", "alice")
        e.add_user("U0BOB", "bob")
        yield e


def client(emu: Emulator) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=emu.api_url)


async def refused(call: Awaitable[Any]) -> tuple[str, list[str]]:
    with pytest.raises(SlackApiError) as info:
        await call
    response = info.value.response
    return str(response["error"]), list(response.get("response_metadata", {}).get("messages", []))


async def test_views_publish_validates_like_slack_and_keeps_one_tab_per_user(
        emu: Emulator) -> None:
    web_client = client(emu)
    error, _ = await refused(web_client.api_call("views.publish", json={"view": home()}))
    assert error == "invalid_arguments"  # no user_id
    assert (await refused(web_client.views_publish(user_id="U0NOBODY", view=home(
        section("hi")))))[0] == "not_found"
    error, messages = await refused(web_client.views_publish(user_id="U0ALICE", view={
        "type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": []}))
    assert error == "invalid_arguments"
    assert "must be one of the following: home" in " ".join(messages)
    error, messages = await refused(web_client.views_publish(
        user_id="U0ALICE", view=home(*[section(f"line {i}") for i in range(101)])))
    assert error == "invalid_arguments" and "no more than 100 items allowed" in messages[0]
    error, messages = await refused(web_client.views_publish(user_id="U0ALICE", view=home(
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}})))
    assert error == "invalid_arguments" and "3001" in messages[0]
    assert emu.home_view("U0ALICE") is None  # nothing refused was stored

    first = await web_client.views_publish(user_id="U0ALICE", view=home(section("v1"), BUTTONS))
    again = await web_client.views_publish(user_id="U0ALICE", view=home(section("v2")))
    assert first["view"]["id"] == again["view"]["id"] and again["view"]["type"] == "home"
    stale = await refused(web_client.views_publish(user_id="U0ALICE", hash=first["view"]["hash"],
                                                   view=home(section("v3"))))
    assert stale[0] == "hash_conflict"
    shown = emu.home_view("U0ALICE")
    assert shown is not None and shown.payload["blocks"][0]["text"]["text"] == "v2"
    assert emu.home_view("U0BOB") is None
    assert emu.views("U0ALICE") == []  # a tab is not a modal
    over_http = await EmulatorClient(emu.base_url).home("U0ALICE")
    assert over_http is not None and over_http["published"] == 2
    assert await EmulatorClient(emu.base_url).home("U0BOB") is None


async def test_opening_the_tab_and_clicking_in_it_are_signed_requests(emu: Emulator) -> None:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    async with serve(app) as url:
        sender = SlackSender(url + "slack/events", SECRET, emu)
        opened = await sender.app_home_opened("U0ALICE")
        assert opened.status == 200
        headers, body = seen[0]
        assert SignatureVerifier(SECRET).is_valid_request(body, headers)
        event = json.loads(body)["event"]
        assert event["type"] == "app_home_opened" and event["user"] == "U0ALICE"
        assert event["tab"] == "home" and "view" not in event  # nothing published yet
        with pytest.raises(LookupError):
            await sender.home_action("U0ALICE", "plan")

        published = await client(emu).views_publish(user_id="U0ALICE", view=home(BUTTONS))
        await sender.app_home_opened("U0ALICE")
        assert json.loads(seen[1][1])["event"]["view"]["id"] == published["view"]["id"]
        click = await sender.home_action("U0ALICE", "plan")
        assert click.status == 200
        payload = json.loads(parse_qs(seen[2][1].decode())["payload"][0])
        assert payload["type"] == "block_actions" and payload["trigger_id"]
        assert payload["container"] == {"type": "view", "view_id": published["view"]["id"]}
        assert payload["view"]["type"] == "home" and payload["actions"][0]["action_id"] == "plan"
        assert "channel" not in payload and "response_url" not in payload
        # the same through the emulator's control endpoint, as another process drives it
        emu.app_url = url + "slack/events"
        sent = await EmulatorClient(emu.base_url).send("app_home_opened", user_id="U0BOB")
        assert sent["status"] == 200 and json.loads(seen[3][1])["event"]["user"] == "U0BOB"


async def test_socket_mode_delivers_the_tab_opening_and_its_clicks(emu: Emulator) -> None:
    bolt = AsyncApp(client=client(emu), signing_secret="unused-in-socket-mode")
    clicked: list[str] = []

    @bolt.event("app_home_opened")
    async def opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        await client.views_publish(user_id=event["user"], view=home(section("prod: v1.2.2"),
                                                                    BUTTONS))

    @bolt.action("plan")
    async def plan(ack: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        clicked.append(body["view"]["type"])

    handler = AsyncSocketModeHandler(bolt, APP_TOKEN)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await emu.wait_socket_connected()
        sender = SocketModeSender(emu)
        opened_result = await sender.app_home_opened("U0BOB")
        assert opened_result.acked_in_time and opened_result.envelope is not None
        assert opened_result.envelope.type == "events_api"
        tab = await emu.wait_for(lambda: emu.home_view("U0BOB"))
        assert tab.payload["blocks"][0]["text"]["text"] == "prod: v1.2.2"
        click = await sender.home_action("U0BOB", "plan")
        assert click.acked_in_time and click.envelope is not None
        assert click.envelope.type == "interactive"
        await emu.wait_for(lambda: clicked == ["home"])
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
