"""One Slack budget for the process: each method at its pace, chat.postMessage per channel, 429s
held for everyone, writers sharing it, and no unfurls. Fast paces keep the stories short."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError

from handlers.slack_budget import (
    METHOD_PACES,
    TIER_2,
    TIER_3,
    TIER_4,
    Pace,
    SlackBudget,
    budget_key,
)
from handlers.slack_client import BudgetedApp, BudgetedWebClient
from handlers.slack_writer import SlackWriter
from slack_emulator import Emulator

TOKEN = "xoxb-budget"
INCIDENTS, ONCALL = "C0INCIDENTS", "C0ONCALL"
FAST = Pace(per_minute=600, burst=2)  # one call per 0.1 s after a burst of two
SLOW = Pace(per_minute=60, burst=1)


async def entries(budget: SlackBudget, key: tuple[str, str], n: int) -> list[float]:
    """When each of ``n`` callers, all asking at once, got ``key``'s turn."""
    times: list[float] = []

    async def call() -> None:
        async with budget.slot(key):
            times.append(time.monotonic())
    await asyncio.gather(*(call() for _ in range(n)))
    return sorted(times)


def test_the_tiers_are_slacks() -> None:
    assert METHOD_PACES["chat.update"] == TIER_3
    assert METHOD_PACES["usergroups.users.list"] == TIER_2
    assert METHOD_PACES["views.publish"] == TIER_4
    assert METHOD_PACES["chat.postMessage"].per_minute == 60  # about one a second per channel
    assert budget_key("chat.postMessage", INCIDENTS) == ("chat.postMessage", INCIDENTS)
    assert budget_key("chat.update", INCIDENTS) == ("chat.update", "")  # per workspace


async def test_a_method_goes_at_its_pace_after_its_burst() -> None:
    budget = SlackBudget({"chat.update": FAST})
    started = time.monotonic()
    times = await entries(budget, ("chat.update", ""), 6)
    assert times[1] - started < 0.05  # the burst: two at once
    for i in range(2, 6):  # then one every 0.1 s, none early
        assert times[i] - started >= (i - 1) * 0.1 - 0.01, times


async def test_chat_post_message_is_paced_per_channel() -> None:
    budget = SlackBudget({"chat.postMessage": SLOW})
    started = time.monotonic()
    incidents, oncall = await asyncio.gather(
        entries(budget, budget_key("chat.postMessage", INCIDENTS), 2),
        entries(budget, budget_key("chat.postMessage", ONCALL), 2))
    assert incidents[0] - started < 0.05 and oncall[0] - started < 0.05  # neither waits for other
    assert incidents[1] - incidents[0] >= 0.99 and oncall[1] - oncall[0] >= 0.99  # 1/s in each


async def test_one_busy_method_does_not_hold_up_another() -> None:
    budget = SlackBudget({"chat.update": SLOW, "views.open": SLOW})
    started = time.monotonic()
    updates, views = await asyncio.gather(entries(budget, ("chat.update", ""), 3),
                                          entries(budget, ("views.open", ""), 1))
    assert views[0] - started < 0.05
    assert updates[2] - started >= 1.99


async def test_a_429_holds_the_whole_method_for_retry_after() -> None:
    budget = SlackBudget({"chat.update": FAST, "views.open": FAST})
    budget.hold(("chat.update", ""), seconds=0.5)
    started = time.monotonic()
    updates, views = await asyncio.gather(entries(budget, ("chat.update", ""), 2),
                                          entries(budget, ("views.open", ""), 1))
    assert updates[0] - started >= 0.49  # nobody of the method before Retry-After
    assert updates[1] - updates[0] >= 0.09  # then the pace again, no burst into the limit
    assert views[0] - started < 0.05  # other methods are not held


async def test_after_a_429_the_method_goes_slower_for_a_while() -> None:
    """Slack's bucket was emptier than ours (another replica spends it): half the pace, then
    back a tenth with each call, instead of a 429 at every other call."""
    budget = SlackBudget({"chat.update": FAST})
    budget.hold(("chat.update", ""), seconds=0.1)
    times = await entries(budget, ("chat.update", ""), 4)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.18 and gaps[2] >= 0.17, gaps  # 2x, 1.9x, 1.8x
    assert gaps[2] < 0.3, gaps


async def test_calls_of_one_method_go_one_at_a_time_in_the_order_they_asked() -> None:
    budget = SlackBudget({"chat.update": Pace(per_minute=60_000, burst=10)})
    order: list[str] = []
    in_flight = 0

    async def call(name: str, answer_s: float) -> None:
        nonlocal in_flight
        async with budget.slot(("chat.update", "")):
            in_flight += 1
            assert in_flight == 1  # the next goes only after this one's answer
            order.append(name)
            await asyncio.sleep(answer_s)
            in_flight -= 1

    first = asyncio.create_task(call("first", 0.2))
    await asyncio.sleep(0)
    await asyncio.gather(first, call("second", 0.0), call("third", 0.0))
    assert order == ["first", "second", "third"]


async def test_a_caller_cancelled_in_line_does_not_let_the_next_pass_the_one_ahead() -> None:
    budget = SlackBudget({"chat.update": Pace(per_minute=60_000, burst=10)})
    key = ("chat.update", "")
    ahead_done = asyncio.Event()
    went_at: list[bool] = []

    async def ahead() -> None:
        async with budget.slot(key):
            await asyncio.sleep(0.3)
            ahead_done.set()

    async def behind() -> None:
        async with budget.slot(key):
            went_at.append(ahead_done.is_set())

    first = asyncio.create_task(ahead())
    await asyncio.sleep(0)
    quitter = asyncio.create_task(budget.slot(key).__aenter__())
    await asyncio.sleep(0.05)
    quitter.cancel()
    await asyncio.gather(first, behind(), return_exceptions=False)
    assert went_at == [True]


async def test_two_event_loops_share_one_budget() -> None:
    """Bolt's own calls run on the ack loop's thread, the runs on the main loop: one line."""
    budget = SlackBudget({"chat.update": SLOW})
    key = ("chat.update", "")
    other: list[float] = []

    def in_thread() -> None:
        other.extend(asyncio.run(entries(budget, key, 1)))

    mine = await entries(budget, key, 1)
    thread = threading.Thread(target=in_thread)
    thread.start()
    await asyncio.to_thread(thread.join, 5)
    assert other and other[0] - mine[0] >= 0.99


# -- against the local Slack, over HTTP -------------------------------------------------------

@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token=TOKEN) as e:
        e.add_channel(INCIDENTS, "incidents")
        e.add_channel(ONCALL, "on-call")
        e.add_user("U0ALICE", "alice")
        yield e


def client_for(emu: Emulator, budget: SlackBudget) -> BudgetedWebClient:
    return BudgetedWebClient(token=TOKEN, base_url=emu.api_url, timeout=5, budget=budget,
                             on_call=lambda _method, _error: None)


async def test_two_writers_share_the_budget_and_each_ends_on_its_newest_state(
        emu: Emulator) -> None:
    pace = Pace(per_minute=300, burst=1)  # chat.update once per 0.2 s, for both writers together
    client = client_for(emu, SlackBudget({"chat.update": pace, "chat.postMessage": FAST}))
    writers = [SlackWriter(client, min_interval_s=0.0) for _ in range(2)]
    messages = [w.message(INCIDENTS) for w in writers]
    for w in writers:
        w.start()
    try:
        for w, m in zip(writers, messages, strict=True):
            w.set(m, text="step 0", blocks=None)
            assert await w.drain(timeout_s=10)
        emu.clear_calls()
        for step in range(1, 16):  # both runs change their message every 20 ms
            for w, m in zip(writers, messages, strict=True):
                w.set(m, text=f"step {step}", blocks=None)
            await asyncio.sleep(0.02)
        for w in writers:
            assert await w.drain(timeout_s=20)
    finally:
        for w in writers:
            await w.close()
    updates = emu.calls_to("chat.update")
    assert updates and all(c.ok for c in updates)
    assert len(updates) < 30  # changes made while waiting coalesced into the next update
    arrived = sorted(c.at for c in updates)
    assert arrived[-1] - arrived[0] >= (len(arrived) - 1) * 0.2 - 0.1  # one pace for both
    for m in messages:
        shown = emu.message(INCIDENTS, str(m.ts))
        assert shown is not None and shown.text == "step 15"  # each ends on its newest state


async def test_a_429_is_retried_after_retry_after_and_holds_every_caller_of_the_method(
        emu: Emulator) -> None:
    seen: list[tuple[str, str | None]] = []
    client = BudgetedWebClient(token=TOKEN, base_url=emu.api_url, timeout=5,
                               budget=SlackBudget(), on_call=lambda m, e: seen.append((m, e)))
    emu.rate_limit("users.info", retry_after=1, count=1)
    first, second = await asyncio.gather(client.users_info(user="U0ALICE"),
                                         client.users_info(user="U0ALICE"))
    assert first["ok"] and second["ok"]  # never dropped: the 429 was retried
    calls = emu.calls_to("users.info")
    assert [c.status for c in calls] == [429, 200, 200]
    assert calls[1].at - calls[0].at >= 1.0  # nobody of the method before Retry-After
    assert calls[2].at >= calls[1].at
    assert sorted(seen, key=lambda c: c[1] or "") == [("users.info", None), ("users.info", None),
                                     ("users.info", "ratelimited")]  # the metrics see all three


async def test_the_live_writer_answers_its_own_429_with_its_newest_state_waiting_once(
        emu: Emulator) -> None:
    client = client_for(emu, SlackBudget())
    writer = SlackWriter(client, min_interval_s=0.0)
    msg = writer.message(INCIDENTS)
    writer.start()
    try:
        writer.set(msg, text="step 1", blocks=None)
        assert await writer.drain(timeout_s=10)
        emu.rate_limit("chat.update", retry_after=1, count=1)
        writer.set(msg, text="step 2", blocks=None)
        await emu.wait_for_call("chat.update")
        writer.set(msg, text="step 3", blocks=None)  # while it waits out the 429
        assert await writer.drain(timeout_s=10)
    finally:
        await writer.close()
    refused, sent = emu.calls_to("chat.update")  # the refused state was not retried as it was
    assert refused.status == 429 and sent.params["text"] == "step 3"
    assert 1.0 <= sent.at - refused.at < 1.9  # Retry-After waited once, not twice


async def test_every_post_has_unfurls_off_unless_the_caller_said_otherwise(
        emu: Emulator) -> None:
    client = client_for(emu, SlackBudget())
    await client.chat_postMessage(channel=INCIDENTS, text="see https://status.example.com")
    await client.chat_postMessage(channel=INCIDENTS, text="a preview", unfurl_links=True)
    plain, explicit = emu.calls_to("chat.postMessage")
    assert plain.params["unfurl_links"] is False and plain.params["unfurl_media"] is False
    assert explicit.params["unfurl_links"] is True and explicit.params["unfurl_media"] is False


async def test_bolts_own_client_draws_from_the_same_budget(emu: Emulator) -> None:
    client = client_for(emu, SlackBudget())
    app = BudgetedApp(client=client, signing_secret="unused", request_verification_enabled=False)
    request = AsyncBoltRequest(body="", headers={})
    app._init_context(request)
    per_request = request.context.client
    assert isinstance(per_request, BudgetedWebClient) and per_request is not client
    assert per_request.budget is client.budget
    await per_request.chat_postMessage(channel=INCIDENTS, text="from a listener")
    assert emu.calls_to("chat.postMessage")[0].params["unfurl_links"] is False


async def test_a_call_refused_for_another_reason_is_not_held(emu: Emulator) -> None:
    budget = SlackBudget()
    client = client_for(emu, budget)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C0NOSUCH", text="lost")
    assert budget.held_for(budget_key("chat.postMessage", "C0NOSUCH")) == 0


def test_paces_stay_under_slacks_bursts() -> None:
    """Calls arriving bunched up at Slack must still fit: rollbot's bursts are Slack's minus
    some, at the same rate."""
    from slack_emulator.tiers import TIERS
    for method, pace in METHOD_PACES.items():
        slack = TIERS.get(method)
        if slack is None:
            continue
        assert pace.per_minute <= slack.per_minute, method
        assert pace.burst < slack.burst, method
    assert all(b >= a for a, b in itertools.pairwise([TIER_2.per_minute, TIER_3.per_minute,
                                                       TIER_4.per_minute]))


def test_retry_after_is_read_whatever_its_case_and_shape() -> None:
    from handlers.slack_client import retry_after_s
    assert retry_after_s({"retry-after": ["7"]}) == 7.0  # slack_sdk's retry response, HTTP/2
    assert retry_after_s({"Retry-After": "3"}) == 3.0
    assert retry_after_s({}) == 1.0 and retry_after_s({"Retry-After": "soon"}) == 1.0


async def test_the_live_message_update_does_not_wait_behind_a_thread_post_in_line(
        emu: Emulator) -> None:
    budget = SlackBudget({"chat.postMessage": Pace(per_minute=6, burst=1)})  # a post per 10 s
    client = client_for(emu, budget)
    live_ts = str((await client.chat_postMessage(channel=INCIDENTS, text="step 1"))["ts"])
    writer = SlackWriter(client, min_interval_s=0.0)
    live = writer.message(INCIDENTS, ts=live_ts)
    output = writer.message(INCIDENTS, thread_ts=live_ts)
    writer.start()
    try:
        writer.set(output, text="Stopping api ... done", blocks=None)  # waits ~10 s for its turn
        await asyncio.sleep(0.3)
        writer.set(live, text="step 2", blocks=None)  # meanwhile the next step started
        update = await emu.wait_for_call("chat.update", timeout=3)
    finally:
        await writer.close()
    assert update.params["text"] == "step 2"
    assert len(emu.calls_to("chat.postMessage")) == 1  # the thread post is still in line


async def test_thread_posts_keep_their_order_when_one_is_refused_with_a_429(
        emu: Emulator) -> None:
    client = client_for(emu, SlackBudget())
    writer = SlackWriter(client, min_interval_s=0.0)
    first, second = writer.message(INCIDENTS), writer.message(INCIDENTS)
    emu.rate_limit("chat.postMessage", retry_after=1, count=1)
    writer.start()
    try:
        writer.set(first, text="1. Check current version", blocks=None)
        writer.set(second, text="2. Stop services", blocks=None)
        assert await writer.drain(timeout_s=10)
    finally:
        await writer.close()
    posts = emu.calls_to("chat.postMessage")
    assert [(p.status, p.params["text"]) for p in posts] == [
        (429, "1. Check current version"), (200, "1. Check current version"),
        (200, "2. Stop services")]
    assert posts[1].at - posts[0].at >= 1.0
