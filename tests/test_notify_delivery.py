"""The outbox and its delivery loop, on a real PostgreSQL and real HTTP (no production host):
retries with backoff, permanent refusals, giving up, one delivery across replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest

from bot.notify.config import ALL_EVENTS, Webhook
from bot.notify.delivery import DeliveryLoop
from bot.notify.notices import Notice, RunFacts
from bot.notify.outbox import Outbox
from bot.notify.recorder import EventRecorder
from bot.store.runs import Store
from tests.webhook_receiver import HANG, Receiver, receiving

SECRET = "status-page-secret-0123"
QUICK = (0.3, 0.3, 0.3, 0.3)  # 5 tries within about a second: the real schedule spans 10 min


def webhook(receiver: Receiver) -> Webhook:
    return Webhook(url=receiver.url, secret_env="STATUS_SECRET", secret=SECRET,
                   events=frozenset(ALL_EVENTS))


def notice(key: str = "run:7:started", *, with_run: bool = True) -> Notice:
    """An event; ``with_run=False`` for one whose audit entry cannot name a run (none here)."""
    return Notice(event="rollback.started", key=key, environment="production",
                  run=RunFacts(id=7, from_version="v1.2.3", to_version="v1.2.2",
                               procedure="simple", requested_by="U0ALICE", outcome="running",
                               live_message_url=None) if with_run else None)


@asynccontextmanager
async def delivering(store: Store, hooks: list[Webhook], *, delays: tuple[float, ...] = QUICK,
                     timeout_s: float = 2.0, start: bool = True,
                     ) -> AsyncIterator[tuple[DeliveryLoop, EventRecorder]]:
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx.AsyncClient())

        async def no_link(_run_id: int) -> str | None:
            return "https://slack.example/archives/C0INCIDENTS/p1"

        loop = DeliveryLoop(outbox=Outbox(store.pool), client=client, webhooks=hooks,
                            retry_delays_s=delays, timeout_s=timeout_s, poll_s=0.1,
                            audit=store.audit, live_url=no_link)
        stack.push_async_callback(loop.stop)
        recorder = EventRecorder(outbox=Outbox(store.pool), webhooks=hooks,
                                 get_run=store.get_run, written=loop.poke)
        if start:
            loop.start()
        yield loop, recorder


async def rows(store: Store) -> list[dict[str, object]]:
    return [dict(r) for r in await store.pool.fetch("SELECT * FROM notify_outbox ORDER BY id")]


async def row_when(store: Store, state: str, timeout: float = 10) -> dict[str, object]:
    """The (one) outbox row, once it is in ``state``."""
    deadline = time.monotonic() + timeout
    while (row := (await rows(store))[0])["state"] != state:
        assert time.monotonic() < deadline, row
        await asyncio.sleep(0.05)
    return row


async def until(check: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_try(
    store: Store
) -> None:
    async with receiving(SECRET, answers=[500, 500]) as status_page, \
            delivering(store, [webhook(status_page)]) as (_, recorder):
        await recorder.record(notice())
        tries = await status_page.wait_event("rollback.started", count=3)
        assert [t.json["id"] for t in tries] == [tries[0].json["id"]] * 3  # one event, retried
        assert tries[1].at - tries[0].at >= 0.25  # after the schedule's delay, not at once
        for t in tries:
            status_page.check_signature(t)  # each try signed with its own timestamp
        assert tries[2].json["run"]["live_message_url"] == (
            "https://slack.example/archives/C0INCIDENTS/p1")
        row = await row_when(store, "delivered")
        assert (row["attempts"], row["last_status"]) == (3, 200)


async def test_a_4xx_is_final_a_warning_and_an_audit_entry(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.notify.delivery")
    async with receiving(SECRET, answers=[403]) as status_page, \
            delivering(store, [webhook(status_page)]) as (_, recorder):
        await recorder.record(notice(with_run=False))
        await status_page.wait_event("rollback.started")
        await asyncio.sleep(1.0)  # a retry would have come by now (delays of 0.3 s)
        assert len(status_page.received) == 1
        [row] = await rows(store)
        assert (row["state"], row["attempts"], row["last_status"]) == ("gave_up", 1, 403)
    [entry] = [a for a in await store.audit_entries() if a.kind == "notify"]
    assert entry.actor == "rollbot:notify" and entry.environment == "production"
    assert "gave up sending event rollback.started" in entry.detail
    assert f"{status_page.url} answered 403" in entry.detail
    assert any("gave up sending event rollback.started" in r.message for r in caplog.records
               if r.levelno == logging.WARNING)


async def test_after_the_last_try_fails_it_gives_up_and_says_so(store: Store) -> None:
    async with receiving(SECRET, answers=[503] * 10) as status_page, \
            delivering(store, [webhook(status_page)], delays=(0.2, 0.2)) as (_, recorder):
        await recorder.record(notice(with_run=False))
        await status_page.wait_event("rollback.started", count=3)
        await row_when(store, "gave_up")
        await asyncio.sleep(0.6)
        assert len(status_page.received) == 3  # 1 + the 2 retries of the schedule, no more
    [row] = await rows(store)
    assert (row["state"], row["attempts"]) == ("gave_up", 3)
    assert any("after 3 tries" in a.detail for a in await store.audit_entries()
               if a.kind == "notify")


async def test_one_happening_is_written_once_and_only_to_the_webhooks_that_want_it(
    store: Store
) -> None:
    async with receiving(SECRET) as page, receiving(SECRET) as pager:
        only_ends = Webhook(url=pager.url, secret_env="P", secret=SECRET,
                            events=frozenset({"rollback.failed"}))  # type: ignore[arg-type]
        async with delivering(store, [webhook(page), only_ends], start=False) as (_, rec):
            await rec.record(notice())
            await rec.record(notice())  # the same happening told twice (a hook fired again)
        assert [(r["url"], r["event"]) for r in await rows(store)] == [
            (page.url, "rollback.started")]


async def test_two_replicas_on_one_outbox_deliver_each_event_exactly_once(store: Store) -> None:
    async with receiving(SECRET) as status_page, AsyncExitStack() as stack:
        loops = [await stack.enter_async_context(delivering(store, [webhook(status_page)]))
                 for _ in range(2)]
        for i in range(30):
            await loops[i % 2][1].record(notice(key=f"run:{i}:started"))
        await until(lambda: len(status_page.received) >= 30)
        await asyncio.sleep(1.0)  # a second copy of any event would arrive by now
        ids = [r.json["id"] for r in status_page.received]
        assert len(ids) == len(set(ids)) == 30
        holders = {r["lease_holder"] for r in await rows(store)}
        assert all(r["state"] == "delivered" for r in await rows(store))
        assert holders <= {loops[0][0].holder, loops[1][0].holder}


async def test_a_hanging_receiver_is_left_for_later_and_drain_returns_in_time(
    store: Store
) -> None:
    async with receiving(SECRET, answers=[HANG]) as status_page, \
            delivering(store, [webhook(status_page)], timeout_s=1.0, delays=(30.0,),
                       start=False) as (loop, recorder):
        await recorder.record(notice())
        began = time.monotonic()
        await loop.drain(5.0)
        assert time.monotonic() - began < 4.0  # one try, cut at its 1 s timeout
        [row] = await rows(store)
        assert (row["state"], row["attempts"]) == ("pending", 1)
        assert "did not answer within 1 s" in str(row["last_error"])


async def test_events_finished_long_ago_are_forgotten_pending_ones_never(store: Store) -> None:
    outbox = Outbox(store.pool)
    await outbox.add(notice("run:1:started", with_run=False), ["https://a/h"])
    await outbox.add(notice("run:2:started", with_run=False), ["https://a/h"])
    await outbox.add(notice("run:3:started", with_run=False), ["https://a/h"])
    await store.pool.execute(
        "UPDATE notify_outbox SET state = 'delivered', finished_at = now() - interval '31 days'"
        " WHERE dedupe_key = 'run:1:started'")
    await store.pool.execute(
        "UPDATE notify_outbox SET state = 'gave_up', finished_at = now() - interval '1 day'"
        " WHERE dedupe_key = 'run:2:started'")
    assert await outbox.prune(keep_days=30) == 1
    assert [r["dedupe_key"] for r in await rows(store)] == ["run:2:started", "run:3:started"]
