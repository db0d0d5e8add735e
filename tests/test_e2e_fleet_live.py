"""The fleet live message over real HTTP: the local Slack shows a line per host as it goes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.events import RunEvent
from bot.fleet_view import HostBoard
from bot.model import HostOutcome, ProcedureName, RunStatus
from handlers.blocks.run import LiveState
from handlers.live import LiveRun
from handlers.slack_writer import SlackMessage, SlackWriter
from slack_emulator import Emulator
from slack_emulator.state import Message
from tests.fleet_stream import FleetStream, second_host_fails, succeeded, untouched
from tests.slack_world import INCIDENTS, TOKEN, message_text

SHAPE_ERRORS = {"invalid_blocks", "msg_too_long", "invalid_arguments", "no_text",
                "invalid_blocks_format"}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(token=TOKEN) as e:
        e.add_channel(INCIDENTS, "incidents")
        yield e


class LiveChannel:
    """rollbot's live-message writer pointed at the local Slack, fed a fleet's events."""

    def __init__(self, emu: Emulator, *, canary: int = 1) -> None:
        self.emu = emu
        self.writer = SlackWriter(AsyncWebClient(token=TOKEN, base_url=emu.api_url),
                                  min_interval_s=0.1)
        self.message: SlackMessage = self.writer.message(INCIDENTS)
        self.live = LiveRun(writer=self.writer, message=self.message, state=LiveState(
            run_id=0, environment="production", procedure=ProcedureName.SIMPLE,
            from_version="(pre-flight)", to_version="v1.2.2", requested_by="U0ALICE",
            confirmed_by=("U0ALICE",), reason="users see 500s", started_at=datetime.now(UTC),
            board=HostBoard(canary=canary)))

    async def __aenter__(self) -> LiveChannel:
        self.writer.start()
        self.live.render()  # the card turned live message, as the front does
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.live.close()
        await self.writer.close()

    async def feed(self, events: list[RunEvent]) -> None:
        for event in events:
            await self.live(event)
        events.clear()

    def shown(self) -> Message | None:
        return self.emu.message(INCIDENTS, self.message.ts) if self.message.ts else None

    async def until(self, *needles: str) -> str:
        """Poll the local Slack until the live message shows every needle."""
        def text() -> str:
            m = self.shown()
            words = message_text(m) if m is not None else ""
            return words if all(n in words for n in needles) else ""
        return await self.emu.wait_for(text, timeout=20)

    def refused(self) -> list[str]:
        return [f"{c.method}: {c.response.get('error')}" for c in self.emu.calls
                if c.response.get("error") in SHAPE_ERRORS]


def thread_of(emu: Emulator, ts: str | None) -> Callable[[], list[Message]]:
    return lambda: emu.thread(INCIDENTS, ts or "")


async def test_a_fleet_rollout_is_watched_host_by_host_in_one_message(emu: Emulator) -> None:
    async with LiveChannel(emu) as channel:
        whole = second_host_fails(["web-1", "web-2", "web-3"])
        events = list(whole.events)
        # The run starts: every host waits, the canary first in the list.
        channel.live.state.run_id = whole.run_id  # the lock is taken: the run has its id
        await channel.feed(events[:1])
        await channel.until("⬜ *web-1* _(canary)_ · waiting",
                            "⬜ *web-2* · waiting for the canary", "Cancel run")
        # The canary runs its steps, alone.
        canary_done = next(i for i, e in enumerate(events)
                           if getattr(getattr(e, "step", None), "host", "") == "web-2")
        await channel.feed(events[1:canary_done])
        await channel.until("✅ *web-1* _(canary)_ · runs v1.2.2, healthy, all services up",
                            "⬜ *web-2* · waiting")
        # web-2 fails its health wait; the rollout stops; web-3 stays untouched.
        await channel.feed(events[canary_done:])
        assert channel.message.ts is not None
        final = await channel.until(
            "❌ Rollback failed: production", "❌ *web-2* · FAILED at step 5/7 'Wait for health'",
            "➖ *web-3* · untouched: still runs v1.2.3",
            "*Who runs what:* v1.2.2: web-1, web-2 (FAILED) · v1.2.3: web-3 (untouched)")
        assert "*What failed on web-2:*" in final and "web-2: curl said 503" in final
        assert "Cancel run" not in final
        assert await channel.writer.drain(timeout_s=30)
        shown = channel.shown()
        assert shown is not None and len(shown.edits) >= 2  # edited in place as it went
        # Each touched host has its own thread message with its command output; web-3 none.
        thread = thread_of(emu, channel.message.ts)
        await emu.wait_for(lambda: any(m.text.startswith("❌ *web-2*") for m in thread()))
        texts = {m.text.split("*")[1]: m.text for m in thread()}
        assert set(texts) == {"web-1", "web-2"}
        assert "── Wait for health\nweb-2: Wait for health …" in texts["web-2"]
        assert "web-1: Stop services …" in texts["web-1"]
        assert channel.refused() == []


async def test_fifty_long_named_hosts_stay_within_slacks_limits(emu: Emulator) -> None:
    names = [f"web-{i}.eu-west-1.compute.internal.azora-production.example"
             for i in range(1, 51)]
    async with LiveChannel(emu) as channel:
        stream = FleetStream(names)
        stream.host_ok(names[0])
        for h in names[1:]:
            stream.start(h, 3)
        await channel.feed(stream.events)
        await channel.until(f"✅ *{names[0]}* _(canary)_", f"⏳ *{names[49]}* · step 3/7")
        outcomes: list[HostOutcome] = [succeeded(names[0])]
        for i, h in enumerate(names[1:], 1):
            if i % 5 == 0:
                stream.host_fails(h, 5, error="health answered 503 " + "x" * 400,
                                  state="services UP but unhealthy " + "y" * 400)
                outcomes.append(HostOutcome(h, RunStatus.FAILED, "unhealthy", "v1.2.2"))
            elif i > 40:
                outcomes.append(untouched(h))
            else:
                stream.host_ok(h)
                outcomes.append(succeeded(h))
        stream.end(RunStatus.FAILED, outcomes, "9 hosts failed; the rollout stopped.")
        await channel.feed(stream.events)
        final = await channel.until("❌ Rollback failed", "9 hosts failed",
                                    f"*What failed on {names[5]}:*", "6 more host(s) failed")
        assert await channel.writer.drain(timeout_s=60)
        shown = channel.shown()
        assert shown is not None and shown.blocks is not None and len(shown.blocks) <= 50
        assert "*Who runs what:*" in final
        assert channel.refused() == []  # every post and edit was accepted as sent
