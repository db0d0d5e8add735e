"""The writer never loses a message's last state: drain waits for the update still on its way.

The intermittent "stalled pre-flight" of the approvals tests was this: a run refused by its
pre-flight set the card's last state, ``drain`` saw nothing dirty while that update was still in
flight and returned, and ``close`` then cancelled the request. The card kept saying
"(pre-flight)" forever. A Slack (or a machine) that answers slowly made it likely.

The Slack emulator answers in a few milliseconds, too fast to hit that window every time, so these
tests use a Web API fake that answers late on purpose.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from handlers.slack_writer import SlackWriter


class SlowSlack:
    """The two Web API methods the writer calls, answering after ``delay_s`` like a busy Slack."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.shown: dict[str, str] = {}  # ts -> the text Slack shows for that message
        self.answered = 0

    async def chat_update(self, *, channel: str, ts: str, text: str,
                          blocks: list[dict[str, Any]]) -> dict[str, Any]:
        await asyncio.sleep(self.delay_s)
        self.shown[ts] = text
        self.answered += 1
        return {"ok": True, "channel": channel, "ts": ts}

    async def chat_postMessage(self, *, channel: str, text: str,
                               **_: Any) -> dict[str, Any]:
        await asyncio.sleep(self.delay_s)
        ts = f"{len(self.shown) + 1}.000"
        self.shown[ts] = text
        self.answered += 1
        return {"ok": True, "channel": channel, "ts": ts}


async def test_a_refusal_set_just_before_the_writer_closes_reaches_the_card() -> None:
    slack = SlowSlack(delay_s=0.4)
    writer = SlackWriter(slack, min_interval_s=0.0)  # type: ignore[arg-type]
    writer.start()
    card = writer.message("C0INCIDENTS", ts="1795912648.615208")
    writer.set(card, text="🚫 Rollback refused: production", blocks=None)
    try:
        assert await writer.drain(timeout_s=10)
    finally:
        await writer.close()
    assert slack.shown == {"1795912648.615208": "🚫 Rollback refused: production"}


async def test_a_new_message_has_its_ts_when_drain_returns() -> None:
    slack = SlowSlack(delay_s=0.4)
    writer = SlackWriter(slack, min_interval_s=0.0)  # type: ignore[arg-type]
    writer.start()
    notice = writer.message("C0INCIDENTS")
    writer.set(notice, text="Rollback completed. Service restored to v1.2.2.", blocks=None)
    try:
        assert await writer.drain(timeout_s=10)
        # the notice's ts is what Set ETA later edits: it must be known once drained
        assert notice.ts == "1.000"
    finally:
        await writer.close()


async def test_a_change_made_while_an_update_is_in_flight_is_delivered_too() -> None:
    slack = SlowSlack(delay_s=0.3)
    writer = SlackWriter(slack, min_interval_s=0.0)  # type: ignore[arg-type]
    writer.start()
    card = writer.message("C0INCIDENTS", ts="1.5")
    writer.set(card, text="⏳ Rolling back production: (pre-flight) → v1.2.2", blocks=None)
    await asyncio.sleep(0.1)  # the first update is on its way now
    writer.set(card, text="🚫 Rollback refused: production", blocks=None)
    try:
        assert await writer.drain(timeout_s=10)
    finally:
        await writer.close()
    assert slack.shown == {"1.5": "🚫 Rollback refused: production"}
    assert slack.answered == 2


async def test_drain_says_so_when_slack_is_slower_than_its_deadline(
    caplog: pytest.LogCaptureFixture
) -> None:
    slack = SlowSlack(delay_s=2.0)
    writer = SlackWriter(slack, min_interval_s=0.0)  # type: ignore[arg-type]
    writer.start()
    card = writer.message("C0INCIDENTS", ts="2.5")
    writer.set(card, text="🚫 Rollback refused: production", blocks=None)
    try:
        assert not await writer.drain(timeout_s=0.5)
    finally:
        await writer.close()
    # what Slack never got is in the log, not silently dropped
    assert "closing with 1 message(s) not up to date" in caplog.text
