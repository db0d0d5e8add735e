"""The local Slack emulator, driven over real HTTP by slack_sdk, slack_bolt and the sender."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from slack_emulator import (
    Emulator,
    EmulatorClient,
    SlackSender,
    block_kit_problems,
    modal_view_problems,
)
from slack_emulator.limits import home_view_problems

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "xoxb-test"
SECRET = "emulator-signing-secret"
CHANNEL = "C0INCIDENTS"


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(label: str, action_id: str, value: str = "v", **extra: Any) -> dict[str, Any]:
    text = {"type": "plain_text", "text": label}
    return {"type": "button", "text": text, "action_id": action_id, "value": value, **extra}


PLAN_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Rollback api"}},
    section("Service *api* is unhealthy, <@U0ALICE>"),
    {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*Current*\nv1.2.3"},
            {"type": "mrkdwn", "text": "*Target*\nv1.2.2"},
        ],
    },
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "requested by <@U0ALICE>"}]},
    {
        "type": "actions",
        "block_id": "plan_actions",
        "elements": [
            button("Roll back to v1.2.2", "rollback_confirm", "v1.2.2", style="danger"),
            button("Cancel", "rollback_cancel", "cancel"),
        ],
    },
]


def modal(title: str = "Roll back api", **extra: Any) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "rollback_reason",
        "private_metadata": "run-42",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Roll back"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why?"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            }
        ],
        **extra,
    }


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token=TOKEN) as e:
        e.add_channel(CHANNEL, "incidents")
        e.add_user("U0ALICE", "alice", "Alice Doe", tz="Europe/Paris")
        e.add_user("U0BOB", "bob")
        e.add_usergroup("S0ONCALL", ["U0ALICE"], handle="oncall")
        yield e


@pytest.fixture
def client(emu: Emulator) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=emu.api_url)


async def api_error(call: Awaitable[Any]) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# -- Web API ---------------------------------------------------------------------------------


async def test_auth_test_identifies_the_bot(client: AsyncWebClient) -> None:
    r = await client.auth_test()
    assert r["ok"] and r["user_id"] == "U0ROLLBOT" and r["team_id"] == "T0AZORA"
    assert r["bot_id"] and r["is_enterprise_install"] is False


async def test_tokens_are_checked(emu: Emulator) -> None:
    assert (await api_error(AsyncWebClient(base_url=emu.api_url).auth_test())).response[
        "error"
    ] == "not_authed"
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=emu.api_url)
    assert (await api_error(wrong.auth_test())).response["error"] == "invalid_auth"
    client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    assert (await api_error(client.api_call("chat.meMessage"))).response[
        "error"
    ] == "unknown_method"


async def test_post_update_thread_and_transcript(emu: Emulator, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(
        channel=CHANNEL, text="Rollback plan", blocks=PLAN_BLOCKS
    )
    ts = posted["ts"]
    assert posted["channel"] == CHANNEL and posted["message"]["blocks"][0]["block_id"]
    reply = await client.chat_postMessage(channel=CHANNEL, text="step 1/4: stop api", thread_ts=ts)
    assert float(reply["ts"]) > float(ts)
    await client.chat_update(channel=CHANNEL, ts=reply["ts"], text="step 1/4: stop api ✓")
    updated = await client.chat_update(
        channel=CHANNEL, ts=ts, text="Rolled back", blocks=[section("Rolled back to *v1.2.2*")]
    )
    assert updated["ts"] == ts and updated["text"] == "Rolled back"
    await client.chat_postEphemeral(channel=CHANNEL, user="U0BOB", text="You are not on call.")

    msg = emu.message(CHANNEL, ts)
    assert msg is not None and [e.text for e in msg.edits] == ["Rollback plan"]
    assert emu.thread(CHANNEL, ts)[0].text == "step 1/4: stop api ✓"
    assert emu.transcript(CHANNEL) == "\n".join(
        [
            "rollbot: (edited)",
            "  Rolled back to *v1.2.2*",
            "    ↳ rollbot: step 1/4: stop api ✓ (edited)",
            "rollbot → bob (only visible to you): You are not on call.",
        ]
    )
    assert [c.method for c in emu.calls] == [
        "chat.postMessage",
        "chat.postMessage",
        "chat.update",
        "chat.update",
        "chat.postEphemeral",
    ]
    assert emu.calls[0].params["blocks"] == PLAN_BLOCKS  # logged decoded


async def test_transcript_renders_blocks_like_a_reader(
    emu: Emulator, client: AsyncWebClient
) -> None:
    await client.chat_postMessage(channel=CHANNEL, text="plan", blocks=PLAN_BLOCKS)
    assert emu.transcript(CHANNEL) == "\n".join(
        [
            "rollbot:",
            "  # Rollback api",
            "  Service *api* is unhealthy, @alice",
            "  *Current* v1.2.3 | *Target* v1.2.2",
            "  requested by @alice",
            "  [Roll back to v1.2.2] [Cancel]",
        ]
    )


async def test_form_encoded_posts_decode_json_fields(emu: Emulator) -> None:
    import aiohttp

    form = {"token": TOKEN, "channel": CHANNEL, "text": "x", "blocks": json.dumps(PLAN_BLOCKS)}
    async with (
        aiohttp.ClientSession() as s,
        s.post(emu.api_url + "chat.postMessage", data=form) as res,
    ):
        body = await res.json()
    assert res.status == 200 and body["ok"], body
    assert emu.calls[-1].params["blocks"] == PLAN_BLOCKS and "token" not in emu.calls[-1].params


def _too_many_blocks() -> list[dict[str, Any]]:
    return [section(f"line {i}") for i in range(51)]


INVALID_BLOCKS = {
    "51 blocks": _too_many_blocks(),
    "3001-char section": [section("x" * 3001)],
    "151-char header": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    "26 action elements": [
        {"type": "actions", "elements": [button(f"b{i}", f"a{i}") for i in range(26)]}
    ],
    "256-char action_id": [{"type": "actions", "elements": [button("Go", "a" * 256)]}],
    "duplicate block_ids": [section("one", block_id="same"), section("two", block_id="same")],
    "empty mrkdwn": [section("")],
    "unknown block type": [{"type": "carousel"}],
    "bad button style": [{"type": "actions", "elements": [button("Go", "go", style="green")]}],
    "long confirm title": [
        {
            "type": "actions",
            "elements": [
                button(
                    "Go",
                    "go",
                    confirm={
                        "title": {"type": "plain_text", "text": "t" * 101},
                        "text": {"type": "mrkdwn", "text": "Sure?"},
                        "confirm": {"type": "plain_text", "text": "Yes"},
                        "deny": {"type": "plain_text", "text": "No"},
                    },
                )
            ],
        }
    ],
}


@pytest.mark.parametrize("case", list(INVALID_BLOCKS))
async def test_invalid_blocks_are_refused(case: str, emu: Emulator, client: AsyncWebClient) -> None:
    blocks = INVALID_BLOCKS[case]
    problems = block_kit_problems(blocks)
    assert problems, case
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks))
    assert err.response["error"] == "invalid_blocks"
    assert err.response["response_metadata"]["messages"] == problems
    assert emu.messages(CHANNEL) == []


def test_optional_strings_of_buttons_and_views_are_checked_like_slack() -> None:
    too_long = button("Go", "go", value="v" * 2001)
    assert block_kit_problems([{"type": "actions", "elements": [too_long]}]) == [
        "[ERROR] must be less than 2001 characters "
        "[json-pointer:/blocks/0/elements/0/value]"]
    not_text = button("Go", "go", url=42)
    assert block_kit_problems([{"type": "actions", "elements": [not_text]}]) == [
        "[ERROR] must be a string [json-pointer:/blocks/0/elements/0/url]"]
    problems = modal_view_problems(modal(private_metadata="m" * 3001, external_id=7))
    assert any("less than 3001 characters [json-pointer:/view/private_metadata]" in p
               for p in problems)
    assert any("must be a string [json-pointer:/view/external_id]" in p for p in problems)
    home = {"type": "home", "blocks": [section("x")], "callback_id": ["not", "text"]}
    assert home_view_problems(home) == [
        "[ERROR] must be a string [json-pointer:/view/callback_id]"]


def test_block_kit_limits_accept_valid_surfaces() -> None:
    assert block_kit_problems(PLAN_BLOCKS) == []
    assert block_kit_problems([section(f"{i}") for i in range(50)]) == []
    assert block_kit_problems([section(f"{i}") for i in range(100)], surface="modal") == []
    assert block_kit_problems([section("x" * 3000)]) == []
    assert modal_view_problems(modal()) == []
    problems = modal_view_problems(modal(title="t" * 25, callback_id="c" * 256))
    assert any("/view/title/text" in p for p in problems)
    assert any("/view/callback_id" in p for p in problems)
    no_submit = {k: v for k, v in modal().items() if k != "submit"}
    assert any("submit is required" in p for p in modal_view_problems(no_submit))
    long_input = {"type": "plain_text_input", "action_id": "t", "max_length": 3001}
    assert block_kit_problems(
        [{"type": "input", "label": {"type": "plain_text", "text": "L"}, "element": long_input}],
        surface="modal",
    )


async def test_message_errors(emu: Emulator, client: AsyncWebClient) -> None:
    errors = {
        "msg_too_long": client.chat_postMessage(channel=CHANNEL, text="x" * 40_001),
        "channel_not_found": client.chat_postMessage(channel="C0NOPE", text="x"),
        "no_text": client.api_call("chat.postMessage", json={"channel": CHANNEL}),
        "message_not_found": client.chat_update(channel=CHANNEL, ts="1.000001", text="x"),
        "user_not_found": client.users_info(user="U0NOPE"),
        "no_such_subteam": client.usergroups_users_list(usergroup="S0NOPE"),
    }
    for name, call in errors.items():
        assert (await api_error(call)).response["error"] == name
    assert (await client.chat_postMessage(channel=CHANNEL, text="x" * 40_000))["ok"]

    emu.add_channel("C0PRIVATE", "private", members=["U0ALICE"], bot_member=False)
    err = await api_error(client.chat_postMessage(channel="C0PRIVATE", text="x"))
    assert err.response["error"] == "not_in_channel"
    emu.set_bot_member("C0PRIVATE", True)
    err = await api_error(client.chat_postEphemeral(channel="C0PRIVATE", user="U0BOB", text="x"))
    assert err.response["error"] == "user_not_in_channel"

    ts = emu.post_user_message(CHANNEL, "U0ALICE", "@rollbot v1.2.2").ts
    err = await api_error(client.chat_update(channel=CHANNEL, ts=ts, text="x"))
    assert err.response["error"] == "cant_update_message"


async def test_permalinks_of_messages_and_thread_replies(client: AsyncWebClient) -> None:
    top = await client.chat_postMessage(channel=CHANNEL, text="live")
    reply = await client.chat_postMessage(channel=CHANNEL, text="output", thread_ts=top["ts"])
    link = await client.chat_getPermalink(channel=CHANNEL, message_ts=top["ts"])
    digits = str(top["ts"]).replace(".", "")
    assert link["permalink"] == f"https://azora.slack.com/archives/{CHANNEL}/p{digits}"
    in_thread = await client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"])
    assert f"?thread_ts={top['ts']}" in in_thread["permalink"]
    err = await api_error(client.chat_getPermalink(channel=CHANNEL, message_ts="1.000001"))
    assert err.response["error"] == "message_not_found"
    err = await api_error(client.chat_getPermalink(channel="C0NOPE", message_ts=top["ts"]))
    assert err.response["error"] == "channel_not_found"


async def test_directory_methods(client: AsyncWebClient) -> None:
    info = await client.conversations_info(channel=CHANNEL)
    assert info["channel"]["id"] == CHANNEL and info["channel"]["name"] == "incidents"
    user = await client.users_info(user="U0ALICE")
    assert user["user"]["name"] == "alice" and user["user"]["tz"] == "Europe/Paris"
    assert (await client.usergroups_users_list(usergroup="S0ONCALL"))["users"] == ["U0ALICE"]


# -- fault modes -----------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(
    emu: Emulator, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel=CHANNEL, text="step 1"))["ts"]
    emu.rate_limit("chat.update", retry_after=7, count=1)
    err = await api_error(client.chat_update(channel=CHANNEL, ts=ts, text="step 2"))
    assert err.response.status_code == 429
    assert err.response.headers["Retry-After"] == "7"
    assert err.response["error"] == "ratelimited"
    assert (await client.chat_update(channel=CHANNEL, ts=ts, text="step 2"))["ok"]  # count used up
    assert [c.status for c in emu.calls_to("chat.update")] == [429, 200]

    emu.rate_limit(retry_after=1)  # every method, until switched off
    assert (await api_error(client.auth_test())).response.status_code == 429
    emu.stop_rate_limit()
    assert (await client.auth_test())["ok"]


async def test_automatic_rate_limiter_per_channel(emu: Emulator, client: AsyncWebClient) -> None:
    emu.add_channel("C0OTHER", "other")
    emu.auto_rate_limit(True)
    await client.chat_postMessage(channel=CHANNEL, text="one")
    await client.chat_postMessage(channel="C0OTHER", text="elsewhere")  # another channel: fine
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="two"))
    assert err.response.status_code == 429 and int(err.response.headers["Retry-After"]) >= 1
    emu.advance_time(1.01)
    assert (await client.chat_postMessage(channel=CHANNEL, text="two"))["ok"]


async def test_fail_all_and_fail_method(emu: Emulator, client: AsyncWebClient) -> None:
    emu.fail_all(500)
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))
    assert err.response.status_code == 500 and err.response["error"] == "fatal_error"
    emu.fail_all(None)
    assert (await client.chat_postMessage(channel=CHANNEL, text="x"))["ok"]

    emu.fail_method("chat.postMessage", error="channel_not_found")
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))
    assert err.response.status_code == 200 and err.response["error"] == "channel_not_found"
    assert (await client.chat_postMessage(channel=CHANNEL, text="x"))["ok"]  # one-off


async def test_wait_for_polls_until_true(emu: Emulator, client: AsyncWebClient) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel=CHANNEL, text="late")

    task = asyncio.create_task(later())
    call = await emu.wait_for_call("chat.postMessage", timeout=2)
    assert call.ok and call.params["text"] == "late"
    await task
    with pytest.raises(TimeoutError):
        await emu.wait_for(lambda: emu.calls_to("chat.delete"), timeout=0.05)


# -- response URLs, views, files -------------------------------------------------------------


async def test_response_url_ephemeral_replace_and_expiry(
    emu: Emulator, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel=CHANNEL, text="plan", blocks=PLAN_BLOCKS))["ts"]
    url = emu.mint_response_url(CHANNEL, "U0ALICE", message_ts=ts)
    hook = AsyncWebhookClient(url)

    r = await hook.send(text="Only you can see this")
    assert r.status_code == 200
    assert "rollbot → alice (only visible to you): Only you can see this" in emu.transcript(CHANNEL)
    assert [m.text for m in emu.ephemerals(CHANNEL, "U0ALICE")] == ["Only you can see this"]

    r = await hook.send(
        replace_original=True, text="Rolling back", blocks=[section("Rolling back…")]
    )
    assert r.status_code == 200
    msg = emu.message(CHANNEL, ts)
    assert msg is not None and msg.text == "Rolling back" and msg.edits[0].via == "response_url"

    await hook.send_dict({"response_type": "in_channel", "text": "done", "thread_ts": ts})
    assert emu.thread(CHANNEL, ts)[0].text == "done"
    assert (await hook.send(text="bad", blocks=[section("")])).status_code == 400  # 4th use
    assert await hook.send(text="fifth")
    r = await hook.send(text="sixth")
    assert r.status_code == 404 and json.loads(r.body)["error"] == "used_url"

    late = AsyncWebhookClient(emu.mint_response_url(CHANNEL, "U0ALICE"))
    emu.advance_time(30 * 60 + 1)
    r = await late.send(text="too late")
    assert r.status_code == 404 and json.loads(r.body)["error"] == "expired_url"
    assert [c.status for c in emu.calls_to("response_url")] == [200, 200, 200, 400, 200, 404, 404]

    fresh = AsyncWebhookClient(emu.mint_response_url(CHANNEL, "U0ALICE", message_ts=ts))
    assert (await fresh.send(delete_original=True)).status_code == 200
    assert emu.message(CHANNEL, ts) is None


async def test_views_open_needs_a_fresh_trigger(emu: Emulator, client: AsyncWebClient) -> None:
    trigger = emu.mint_trigger_id("U0ALICE")
    opened = await client.views_open(trigger_id=trigger, view=modal())
    view = opened["view"]
    assert view["id"].startswith("V") and view["callback_id"] == "rollback_reason"
    assert view["blocks"][0]["block_id"] == "reason" and view["hash"]

    assert (await api_error(client.views_open(trigger_id=trigger, view=modal()))).response[
        "error"
    ] == "exchanged_trigger_id"
    unknown = client.views_open(trigger_id="1.2.3", view=modal())
    assert (await api_error(unknown)).response["error"] == "invalid_trigger_id"
    stale = emu.mint_trigger_id("U0ALICE")
    emu.advance_time(3.01)
    expired = client.views_open(trigger_id=stale, view=modal())
    assert (await api_error(expired)).response["error"] == "expired_trigger_id"

    bad = client.views_open(trigger_id=emu.mint_trigger_id("U0ALICE"), view=modal(title="t" * 25))
    err = await api_error(bad)
    assert err.response["error"] == "invalid_arguments"
    assert any("/view/title/text" in m for m in err.response["response_metadata"]["messages"])

    updated = await client.views_update(
        view_id=view["id"], hash=view["hash"], view=modal(title="Rolling back")
    )
    assert updated["view"]["title"]["text"] == "Rolling back"
    conflict = client.views_update(view_id=view["id"], hash=view["hash"], view=modal())
    assert (await api_error(conflict)).response["error"] == "hash_conflict"
    pushed = await client.views_push(trigger_id=emu.mint_trigger_id("U0ALICE"), view=modal())
    assert pushed["view"]["previous_view_id"] == view["id"]
    assert [v.id for v in emu.views("U0ALICE", open_only=True)] == [
        view["id"],
        pushed["view"]["id"],
    ]


async def test_files_upload_v2_records_the_file_in_the_thread(
    emu: Emulator, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel=CHANNEL, text="Rolling back"))["ts"]
    r = await client.files_upload_v2(
        channel=CHANNEL,
        thread_ts=ts,
        content="step 1 ok\nstep 2 ok\n",
        filename="rollback.log",
        title="Rollback log",
        initial_comment="Full log",
    )
    assert r["file"]["name"] == "rollback.log" and r["file"]["title"] == "Rollback log"
    [f] = emu.files()
    assert f.content == b"step 1 ok\nstep 2 ok\n" and f.channel == CHANNEL and f.thread_ts == ts
    [reply] = emu.thread(CHANNEL, ts)
    assert reply.text == "Full log" and reply.files[0]["id"] == f.id
    assert "↳ rollbot:" in emu.transcript(CHANNEL)
    assert "[file: rollback.log — Rollback log]" in emu.transcript(CHANNEL)
    assert [c.method for c in emu.calls][1:] == [
        "files.getUploadURLExternal",
        "file_upload",
        "files.completeUploadExternal",
    ]


# -- the sender ------------------------------------------------------------------------------


Receiver = tuple[str, list[tuple[dict[str, str], bytes]]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An app that records what it receives and answers 200."""
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.json_response({"received": len(seen)})

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    async with serve(app) as url:
        yield url + "slack/events", seen


class serve:
    def __init__(self, app: web.Application) -> None:
        self.runner = web.AppRunner(app, access_log=None)

    async def __aenter__(self) -> str:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_sender_signs_like_slack(emu: Emulator, receiver: Receiver) -> None:
    url, seen = receiver
    verifier = SignatureVerifier(SECRET)
    sender = SlackSender(url, SECRET, emu)

    result = await sender.slash_command("U0ALICE", CHANNEL, "v1.2.2")
    assert result.status == 200 and result.json == {"received": 1} and result.acked_in_time
    headers, body = seen[0]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert verifier.is_valid_request(body, headers)
    form = dict(p.split("=", 1) for p in body.decode().split("&"))
    assert form["command"] == "%2Frollback" and form["user_name"] == "alice"
    assert form["channel_name"] == "incidents" and form["trigger_id"] and form["response_url"]

    forged = await sender.slash_command("U0ALICE", CHANNEL, "v1.2.2", bad_signature=True)
    assert not verifier.is_valid_request(seen[1][1], seen[1][0])
    stale = await sender.app_mention("U0ALICE", CHANNEL, "v1.2.2", timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(seen[2][1], seen[2][0])
    assert forged.status == stale.status == 200  # the receiver here checks nothing

    replayed = await sender.replay(result)
    assert seen[3][1] == seen[0][1]
    assert {k: seen[3][0][k] for k in headers if k.startswith("X-Slack")} == {
        k: v for k, v in headers.items() if k.startswith("X-Slack")
    }
    assert replayed.request.body == result.request.body

    retried = await sender.retry(stale, retry_num=1, retry_reason="http_timeout")
    assert seen[4][0]["X-Slack-Retry-Num"] == "1"
    assert seen[4][0]["X-Slack-Retry-Reason"] == "http_timeout"
    assert seen[4][1] == seen[2][1] and verifier.is_valid_request(seen[4][1], seen[4][0])
    assert retried.elapsed >= 0


async def test_sender_payload_shapes(emu: Emulator, receiver: Receiver) -> None:
    url, seen = receiver
    client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    ts = (await client.chat_postMessage(channel=CHANNEL, text="plan", blocks=PLAN_BLOCKS))["ts"]
    sender = SlackSender(url, SECRET, emu)

    await sender.app_mention("U0ALICE", CHANNEL, "v1.2.2")
    event = json.loads(seen[0][1])
    assert seen[0][0]["Content-Type"] == "application/json"
    assert event["type"] == "event_callback" and event["event"]["type"] == "app_mention"
    assert event["event"]["text"] == "<@U0ROLLBOT> v1.2.2"
    assert event["authorizations"][0]["user_id"] == "U0ROLLBOT"
    assert emu.message(CHANNEL, event["event"]["ts"]) is not None  # alice's message is there

    await sender.block_action("U0ALICE", CHANNEL, ts, "rollback_confirm")
    from urllib.parse import parse_qs

    payload = json.loads(parse_qs(seen[1][1].decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert payload["message"]["blocks"] == emu.message(CHANNEL, ts).blocks  # type: ignore[union-attr]
    [action] = payload["actions"]
    assert action["action_id"] == "rollback_confirm" and action["value"] == "v1.2.2"
    assert action["block_id"] == "plan_actions" and action["type"] == "button"
    assert payload["response_url"] and payload["trigger_id"]
    with pytest.raises(LookupError):
        await sender.block_action("U0ALICE", CHANNEL, ts, "no_such_button")

    view = (
        await client.views_open(
            trigger_id=emu.mint_trigger_id("U0ALICE"),
            view=modal(
                blocks=[{"type": "actions", "elements": [button("Refresh", "refresh")]}],
                submit=None,
            )
            | {"submit": {"type": "plain_text", "text": "OK"}},
        )
    )["view"]
    await sender.block_action("U0ALICE", None, None, "refresh", view=view["id"])
    payload = json.loads(parse_qs(seen[2][1].decode())["payload"][0])
    assert payload["container"] == {"type": "view", "view_id": view["id"]}
    assert payload["view"]["callback_id"] == "rollback_reason" and "message" not in payload


# -- slack_bolt end to end -------------------------------------------------------------------


@pytest.fixture
async def bolt(emu: Emulator) -> AsyncIterator[str]:
    """A small Bolt app (what rollbot is built on) on its own HTTP server."""
    app = AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=emu.api_url),
        signing_secret=SECRET,
    )

    @app.command("/rollback")
    async def command(ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any) -> None:
        if body["text"] == "help":
            await ack(text="Usage: /rollback VERSION")
            return
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=modal())
        await respond(text=f"Rollback of {body['text']} requested")

    @app.view("rollback_reason")
    async def submitted(ack: Any, view: dict[str, Any]) -> None:
        reason = view["state"]["values"]["reason"]["text"]["value"]
        if len(reason) < 5:
            await ack(response_action="errors", errors={"reason": "Say a bit more"})
            return
        await ack()

    @app.action("rollback_confirm")
    async def confirm(ack: Any, respond: Any, action: dict[str, Any]) -> None:
        await ack()
        await respond(replace_original=True, text=f"Rolling back to {action['value']}")

    @app.event("app_mention")
    async def mention(event: dict[str, Any], say: Callable[..., Awaitable[Any]]) -> None:
        await say(text="On it", thread_ts=event["ts"])

    async def handle(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", handle)
    async with serve(web_app) as url:
        yield url + "slack/events"


async def test_bolt_app_end_to_end(emu: Emulator, bolt: str) -> None:
    sender = SlackSender(bolt, SECRET, emu)

    forged = await sender.slash_command("U0ALICE", CHANNEL, "v1.2.2", bad_signature=True)
    assert forged.status == 401
    stale = await sender.slash_command("U0ALICE", CHANNEL, "v1", timestamp=int(time.time()) - 600)
    assert stale.status == 401
    failed = (
        'slackbot → alice (only visible to you): /rollback failed with the error "dispatch_failed"'
    )
    assert emu.transcript(CHANNEL, viewer="U0ALICE").splitlines() == [failed, failed]

    helped = await sender.slash_command("U0BOB", CHANNEL, "help")
    assert helped.text == "Usage: /rollback VERSION"  # Bolt answers plain text; bob sees it
    assert emu.transcript(CHANNEL, viewer="U0BOB") == (
        "rollbot → bob (only visible to you): Usage: /rollback VERSION"
    )

    result = await sender.slash_command("U0ALICE", CHANNEL, "v1.2.2")
    assert result.acked_in_time
    view = await emu.wait_for(lambda: emu.views("U0ALICE", open_only=True))
    await emu.wait_for(lambda: emu.ephemerals(CHANNEL, "U0ALICE"))
    assert "alice (only visible to you): Rollback of v1.2.2 requested" in emu.transcript(CHANNEL)
    assert emu.calls[0].method == "auth.test"  # Bolt checks its token first

    refused = await sender.view_submission("U0ALICE", view[0].id, {"reason": {"text": "no"}})
    assert refused.json == {"response_action": "errors", "errors": {"reason": "Say a bit more"}}
    assert emu.views("U0ALICE", open_only=True)
    accepted = await sender.view_submission(
        "U0ALICE", view[0].id, {"reason": {"text": "api answers 5xx"}}
    )
    assert accepted.status == 200 and not emu.views("U0ALICE", open_only=True)

    client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    ts = (await client.chat_postMessage(channel=CHANNEL, text="plan", blocks=PLAN_BLOCKS))["ts"]
    await sender.block_action("U0ALICE", CHANNEL, ts, "rollback_confirm")
    await emu.wait_for(lambda: emu.message(CHANNEL, ts).edits)  # type: ignore[union-attr]
    assert emu.message(CHANNEL, ts).text == "Rolling back to v1.2.2"  # type: ignore[union-attr]

    mention = await sender.app_mention("U0BOB", CHANNEL, "status")
    mention_ts = json.loads(mention.request.body)["event"]["ts"]
    await emu.wait_for(lambda: emu.thread(CHANNEL, mention_ts))
    assert "bob: @rollbot status\n    ↳ rollbot: On it" in emu.transcript(CHANNEL)


# -- over HTTP, from another process ---------------------------------------------------------


async def test_control_api_over_http(emu: Emulator) -> None:
    remote = EmulatorClient(emu.base_url)
    await remote.add_channel("C0OPS", "ops")
    await remote.add_user("U0CAROL", "carol")
    client = AsyncWebClient(token=TOKEN, base_url=remote.api_url)
    await remote.rate_limit("chat.postMessage", retry_after=3, count=1)
    assert (
        await api_error(client.chat_postMessage(channel="C0OPS", text="x"))
    ).response.status_code == 429
    await client.chat_postMessage(channel="C0OPS", text="hello <@U0CAROL>")
    calls = await remote.calls("chat.postMessage")
    assert [c["status"] for c in calls] == [429, 200]
    assert await remote.transcript("C0OPS") == "rollbot: hello @carol"
    await remote.fail_all(503)
    assert (await api_error(client.auth_test())).response.status_code == 503
    await remote.clear_faults()
    assert (await client.auth_test())["ok"]
    [msg] = await remote.messages("C0OPS")
    assert msg["message"]["text"] == "hello <@U0CAROL>"


async def test_standalone_process_prints_url_and_stops_on_sigterm(receiver: Receiver) -> None:
    app_url, seen = receiver
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "slack_emulator",
        "--port",
        "0",
        "--signing-secret",
        SECRET,
        "--token",
        TOKEN,
        "--channel",
        f"{CHANNEL}:incidents",
        "--user",
        "U0ALICE:alice",
        "--app-url",
        app_url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert first.startswith("SLACK_API_URL=http://127.0.0.1:") and first.endswith("/api/")
        api_url = first.split("=", 1)[1]
        client = AsyncWebClient(token=TOKEN, base_url=api_url)
        assert (await client.conversations_info(channel=CHANNEL))["channel"]["name"] == "incidents"
        remote = EmulatorClient(api_url.removesuffix("api/"))
        assert (await remote.user("U0ALICE")) is not None
        sent = await remote.send("slash_command", user_id="U0ALICE", channel_id=CHANNEL, text="v1")
        assert sent["status"] == 200 and sent["acked_in_time"]
        assert SignatureVerifier(SECRET).is_valid_request(seen[0][1], seen[0][0])
        replayed = await remote.send("replay", request=sent["request"])
        assert replayed["status"] == 200 and seen[1][1] == seen[0][1]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
