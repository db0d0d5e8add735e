"""The emulator's "Slack's limits" mode: each method 429s beyond its tier, and every call is
recorded, so that a test can find a call that came back before its Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from slack_emulator import Emulator, EmulatorClient

TOKEN = "xoxb-limits"
INCIDENTS, ONCALL = "C0INCIDENTS", "C0ONCALL"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token=TOKEN) as e:
        e.add_channel(INCIDENTS, "incidents")
        e.add_channel(ONCALL, "on-call")
        yield e


def plain_client(emu: Emulator) -> AsyncWebClient:
    """slack_sdk without retries: every 429 comes back to the test."""
    return AsyncWebClient(token=TOKEN, base_url=emu.api_url, retry_handlers=[])


async def post(client: AsyncWebClient, channel: str) -> int:
    try:
        await client.chat_postMessage(channel=channel, text="step done")
    except SlackApiError as exc:
        assert exc.response["error"] == "ratelimited"
        return int(exc.response.headers["Retry-After"])
    return 0


async def test_posts_429_past_a_short_burst_per_channel_and_fit_again_after_retry_after(
        emu: Emulator) -> None:
    limits = emu.slack_limits()
    assert limits is not None
    client = plain_client(emu)
    assert [await post(client, INCIDENTS) for _ in range(4)] == [0, 0, 0, 1]
    assert await post(client, ONCALL) == 0  # another channel has its own bucket
    emu.advance_time(1.0)
    assert await post(client, INCIDENTS) == 0
    refused = limits.limited()
    assert [(c.key, c.retry_after) for c in refused] == [("chat.postMessage C0INCIDENTS", 1)]
    assert limits.early_returns() == []  # the next post to #incidents waited its second


async def test_chat_update_is_tier_3_for_the_whole_workspace(emu: Emulator) -> None:
    emu.slack_limits()
    client = plain_client(emu)
    ts = (await client.chat_postMessage(channel=INCIDENTS, text="live"))["ts"]
    other = (await client.chat_postMessage(channel=ONCALL, text="live"))["ts"]
    for _ in range(10):  # Tier 3's burst, whichever message or channel
        await client.chat_update(channel=INCIDENTS, ts=ts, text="step")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_update(channel=ONCALL, ts=other, text="step")
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "2"  # 50 a minute: 1.2 s, rounded up


async def test_a_call_before_retry_after_is_recorded_as_come_back_too_early(
        emu: Emulator) -> None:
    limits = emu.slack_limits(per_minute={"users.info": 6})  # as if another process spent it
    assert limits is not None
    emu.add_user("U0ALICE", "alice")
    client = plain_client(emu)
    calls = []
    for _ in range(22):
        try:
            await client.users_info(user="U0ALICE")
            calls.append(0)
        except SlackApiError as exc:
            calls.append(int(exc.response.headers["Retry-After"]))
    assert calls[:20] == [0] * 20  # Tier 4's burst
    assert calls[20:] == [10, 10]  # then 6 a minute: one per 10 s
    early = limits.early_returns()
    assert [(a.retry_after, b.limited) for a, b in early] == [(10, True)]  # the 17th was early


async def test_the_mode_is_switched_and_read_over_http(emu: Emulator) -> None:
    control = EmulatorClient(emu.base_url)
    await control.slack_limits(per_minute={"chat.postMessage": 60})
    client = plain_client(emu)
    assert [await post(client, INCIDENTS) for _ in range(5)] == [0, 0, 0, 1, 1]
    seen = await control.limited_calls()
    assert seen["enabled"] is True
    assert [c["limited"] for c in seen["calls"]] == [False, False, False, True, True]
    assert len(seen["early"]) == 1  # the fifth came right after the fourth's 429
    await control.slack_limits(enabled=False)
    assert await post(client, INCIDENTS) == 0
    assert (await control.limited_calls())["enabled"] is False
