"""Message metadata in the local Slack, driven over real HTTP by slack_sdk as rollbot drives it.

An app posts a message with metadata, edits it with and without, reads it back with
conversations.history / conversations.replies; a malformed metadata argument is refused with
Slack's error name and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from slack_emulator import Emulator

TOKEN = "xoxb-test"
CHANNEL = "C0INCIDENTS"
COMPLETED = {"event_type": "rollback_completed",
             "event_payload": {"run_id": 7, "environment": "production", "outcome": "succeeded",
                               "dry": False}}


@pytest.fixture
async def slack() -> AsyncIterator[tuple[Emulator, AsyncWebClient]]:
    async with Emulator(token=TOKEN) as emu:
        emu.add_channel(CHANNEL, "incidents")
        yield emu, AsyncWebClient(token=TOKEN, base_url=emu.api_url)


async def _history(client: AsyncWebClient, **opts: Any) -> list[dict[str, Any]]:
    answer = await client.conversations_history(channel=CHANNEL, **opts)
    return list(answer["messages"])


async def test_metadata_is_stored_and_returned_only_when_asked_for(
    slack: tuple[Emulator, AsyncWebClient],
) -> None:
    emu, client = slack
    posted = await client.chat_postMessage(channel=CHANNEL, text="Rollback completed.",
                                           metadata=COMPLETED)
    assert posted["message"]["metadata"] == COMPLETED
    (plain,) = await _history(client)
    assert "metadata" not in plain
    (full,) = await _history(client, include_all_metadata=True)
    assert full["metadata"] == COMPLETED and full["ts"] == posted["ts"]
    stored = emu.message(CHANNEL, posted["ts"])
    assert stored is not None and stored.metadata == COMPLETED
    # the control endpoint's record shows it too, for tests in other processes
    async with httpx.AsyncClient() as http:
        record = (await http.get(f"{emu.base_url}_emulator/messages/{CHANNEL}/{posted['ts']}"
                                 )).json()
    assert record["metadata"] == COMPLETED


async def test_an_edit_without_metadata_keeps_it_and_an_empty_object_removes_it(
    slack: tuple[Emulator, AsyncWebClient],
) -> None:
    _, client = slack
    posted = await client.chat_postMessage(channel=CHANNEL, text="v1", metadata=COMPLETED)
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v2")
    (msg,) = await _history(client, include_all_metadata=True)
    assert msg["text"] == "v2" and msg["metadata"] == COMPLETED
    changed = {"event_type": "rollback_failed", "event_payload": {"run_id": 7}}
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v3", metadata=changed)
    (msg,) = await _history(client, include_all_metadata=True)
    assert msg["metadata"] == changed
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v4", metadata={})
    (msg,) = await _history(client, include_all_metadata=True)
    assert "metadata" not in msg


@pytest.mark.parametrize(("metadata", "error"), [
    ("not json at all", "invalid_metadata_format"),
    (["rollback_completed"], "invalid_metadata_format"),
    ({"event_payload": {"run_id": 1}}, "invalid_metadata_schema"),
    ({"event_type": "rollback.completed", "event_payload": {}}, "invalid_metadata_schema"),
    ({"event_type": "rollback_completed"}, "invalid_metadata_schema"),
    ({"event_type": "rollback_completed", "event_payload": "run 1"}, "invalid_metadata_schema"),
    ({"event_type": "rollback_completed", "event_payload": {"url": None}},
     "invalid_metadata_schema"),
    ({"event_type": "rollback_completed", "event_payload": {"deep": {"er": {"x": 1}}}},
     "invalid_metadata_schema"),
    ({"event_type": "x", "event_payload": {}, "extra": 1}, "invalid_metadata_schema"),
])
async def test_malformed_metadata_is_refused_like_slack_and_changes_nothing(
    slack: tuple[Emulator, AsyncWebClient], metadata: Any, error: str,
) -> None:
    emu, client = slack
    posted = await client.chat_postMessage(channel=CHANNEL, text="first", metadata=COMPLETED)
    with pytest.raises(SlackApiError) as post_refused:
        await client.api_call("chat.postMessage", json={"channel": CHANNEL, "text": "second",
                                                        "metadata": metadata})
    assert post_refused.value.response["error"] == error
    with pytest.raises(SlackApiError) as update_refused:
        await client.api_call("chat.update", json={"channel": CHANNEL, "ts": posted["ts"],
                                                   "text": "edited", "metadata": metadata})
    assert update_refused.value.response["error"] == error
    (only,) = emu.messages(CHANNEL)
    assert only.text == "first" and only.metadata == COMPLETED and not only.edits


async def test_a_form_encoded_metadata_string_is_read_as_json(
    slack: tuple[Emulator, AsyncWebClient],
) -> None:
    emu, client = slack
    await client.api_call("chat.postMessage", data={"channel": CHANNEL, "text": "form",
                                                    "metadata": json.dumps(COMPLETED)})
    (msg,) = emu.messages(CHANNEL)
    assert msg.metadata == COMPLETED


async def test_replies_return_the_thread_with_its_metadata_and_history_pages(
    slack: tuple[Emulator, AsyncWebClient],
) -> None:
    _, client = slack
    root = await client.chat_postMessage(channel=CHANNEL, text="live message")
    verified = {"event_type": "rollback_verified",
                "event_payload": {"run_id": 7, "tier": "immediate", "result": "passed"}}
    await client.chat_postMessage(channel=CHANNEL, thread_ts=root["ts"], text="step output")
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=root["ts"],
                                          text="Immediate verification", metadata=verified)
    for n in range(3):
        await client.chat_postMessage(channel=CHANNEL, text=f"later {n}")
    thread = (await client.conversations_replies(channel=CHANNEL, ts=root["ts"],
                                                 include_all_metadata=True))["messages"]
    assert [m["text"] for m in thread] == ["live message", "step output",
                                           "Immediate verification"]
    assert thread[0]["reply_count"] == 2 and thread[0]["latest_reply"] == reply["ts"]
    assert {m["thread_ts"] for m in thread} == {root["ts"]}
    assert thread[2]["metadata"] == verified
    without = (await client.conversations_replies(channel=CHANNEL, ts=reply["ts"]))["messages"]
    assert len(without) == 3 and all("metadata" not in m for m in without)
    # history: newest first, top-level only, paged with Slack's cursor
    first = await client.conversations_history(channel=CHANNEL, limit=2)
    assert [m["text"] for m in first["messages"]] == ["later 2", "later 1"]
    assert first["has_more"] is True
    second = await client.conversations_history(
        channel=CHANNEL, limit=2, cursor=first["response_metadata"]["next_cursor"])
    assert [m["text"] for m in second["messages"]] == ["later 0", "live message"]
    assert second["has_more"] is False
    with pytest.raises(SlackApiError) as bad:
        await client.conversations_history(channel=CHANNEL, cursor="bm9wZQ==")
    assert bad.value.response["error"] == "invalid_cursor"
    with pytest.raises(SlackApiError) as missing:
        await client.conversations_replies(channel=CHANNEL, ts="1.000001")
    assert missing.value.response["error"] == "thread_not_found"
