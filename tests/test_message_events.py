"""The metadata on rollbot's notices and verification lines, and the writer that delivers it.

The builders are pure (a run and a check in, Slack's ``{"event_type", "event_payload"}`` out);
the live writer is driven against the local Slack over real HTTP, with Slack's faults, to show
the metadata survives coalescing, rate limits, outages and a deleted message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.model import (
    ProcedureName,
    RunRecord,
    RunStatus,
    Tier,
    VerificationItem,
    VerificationResult,
)
from handlers.blocks.message_events import notice_metadata, verification_metadata
from handlers.front.after_run import post_with_metadata
from handlers.slack_writer import SlackWriter
from slack_emulator import Emulator

TOKEN = "xoxb-test"
CHANNEL = "C0INCIDENTS"
LIVE_URL = "https://azora.slack.com/archives/C0INCIDENTS/p1795912648615208"
NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def run(status: RunStatus = RunStatus.SUCCEEDED, *, live_message_url: str | None = LIVE_URL,
        from_version: str | None = "v1.2.3") -> RunRecord:
    return RunRecord(id=12, environment="production", procedure=ProcedureName.SIMPLE,
                     status=status, requested_by="U0ALICE", reason="500s", backup=None,
                     from_version=from_version, to_version="v1.2.2", created_at=NOW,
                     finished_at=NOW, host_state="v1.2.2 up", message="",
                     live_message_url=live_message_url)


def test_a_succeeded_run_announces_rollback_completed_with_its_whole_story() -> None:
    assert notice_metadata(run()) == {
        "event_type": "rollback_completed",
        "event_payload": {"run_id": 12, "environment": "production", "procedure": "simple",
                          "outcome": "succeeded", "from_version": "v1.2.3",
                          "to_version": "v1.2.2", "live_message_url": LIVE_URL}}


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.CANCELLED,
                                    RunStatus.RESTORE_RECOMMENDED, RunStatus.INTERRUPTED])
def test_every_other_ending_is_rollback_failed_with_its_outcome(status: RunStatus) -> None:
    meta = notice_metadata(run(status))
    assert meta["event_type"] == "rollback_failed"
    assert meta["event_payload"]["outcome"] == status.value


def test_unknown_values_are_left_out_not_sent_as_null() -> None:
    payload = notice_metadata(run(RunStatus.FAILED, live_message_url=None,
                                  from_version=None))["event_payload"]
    assert "live_message_url" not in payload and "from_version" not in payload
    assert all(isinstance(v, str | int | bool) for v in payload.values())


def test_a_verification_line_says_the_tier_and_the_result() -> None:
    result = VerificationResult(run_id=12, tier=Tier.EXTENDED, due_at=NOW, ran_at=NOW,
                                late_s=0.0, items=(VerificationItem("Health", True, "200"),
                                                   VerificationItem("Errors", False, "3 lines")))
    meta = verification_metadata(run(), result)
    assert meta["event_type"] == "rollback_verified"
    assert meta["event_payload"] == {
        "run_id": 12, "environment": "production", "procedure": "simple",
        "outcome": "succeeded", "from_version": "v1.2.3", "to_version": "v1.2.2",
        "live_message_url": LIVE_URL, "tier": "extended", "result": "failed", "checks": 2,
        "checks_failed": 1}


# --- the writer carries the metadata ----------------------------------------------------------

COMPLETED = {
    "event_type": "rollback_completed", "event_payload": {"run_id": 12, "outcome": "succeeded"}}


@pytest.fixture
async def slack() -> AsyncIterator[tuple[Emulator, SlackWriter]]:
    async with Emulator(token=TOKEN) as emu:
        emu.add_channel(CHANNEL, "incidents")
        writer = SlackWriter(AsyncWebClient(token=TOKEN, base_url=emu.api_url),
                             min_interval_s=0.2)
        writer.start()
        try:
            yield emu, writer
        finally:
            await writer.close()


def _sent_metadata(emu: Emulator, method: str) -> list[object]:
    return [c.params.get("metadata") for c in emu.calls_to(method) if c.ok]


async def test_coalesced_edits_keep_the_metadata_without_sending_it_again(
    slack: tuple[Emulator, SlackWriter],
) -> None:
    emu, writer = slack
    notice = writer.message(CHANNEL)
    writer.set(notice, text="Rollback completed. ETA TBD", blocks=None, metadata=COMPLETED)
    assert await writer.drain(timeout_s=10)
    for n in range(5):  # coalesced into one or two updates
        writer.set(notice, text=f"Rollback completed. edit {n}", blocks=None)
    assert await writer.drain(timeout_s=10)
    assert notice.ts is not None
    shown = emu.message(CHANNEL, notice.ts)
    assert shown is not None and shown.text.endswith("edit 4") and shown.metadata == COMPLETED
    assert _sent_metadata(emu, "chat.postMessage") == [COMPLETED]
    assert set(map(str, _sent_metadata(emu, "chat.update"))) == {"None"}


async def test_metadata_given_after_the_post_goes_with_the_next_update_once(
    slack: tuple[Emulator, SlackWriter],
) -> None:
    emu, writer = slack
    msg = writer.message(CHANNEL)
    writer.set(msg, text="first", blocks=None)
    assert await writer.drain(timeout_s=10)
    writer.set(msg, text="second", blocks=None, metadata=COMPLETED)
    assert await writer.drain(timeout_s=10)
    writer.set(msg, text="third", blocks=None)
    assert await writer.drain(timeout_s=10)
    assert _sent_metadata(emu, "chat.update") == [COMPLETED, None]
    assert msg.ts is not None
    shown = emu.message(CHANNEL, msg.ts)
    assert shown is not None and shown.metadata == COMPLETED and shown.text == "third"


async def test_rate_limits_and_outages_retry_with_the_metadata(
    slack: tuple[Emulator, SlackWriter],
) -> None:
    emu, writer = slack
    emu.rate_limit("chat.postMessage", retry_after=1, count=1)
    emu.fail_method("chat.postMessage", "internal_error", count=1)
    notice = writer.message(CHANNEL)
    writer.set(notice, text="Rollback completed.", blocks=None, metadata=COMPLETED)
    assert await writer.drain(timeout_s=20)
    posts = emu.calls_to("chat.postMessage")
    assert [c.status for c in posts][:1] == [429]
    assert [c.params.get("metadata") for c in posts] == [COMPLETED] * 3
    (shown,) = emu.messages(CHANNEL)
    assert shown.metadata == COMPLETED


async def test_a_deleted_notice_is_posted_again_with_its_metadata(
    slack: tuple[Emulator, SlackWriter],
) -> None:
    emu, writer = slack
    notice = writer.message(CHANNEL)
    writer.set(notice, text="Rollback completed.", blocks=None, metadata=COMPLETED)
    assert await writer.drain(timeout_s=10)
    first_ts = notice.ts
    assert first_ts is not None
    shown = emu.message(CHANNEL, first_ts)
    assert shown is not None
    shown.deleted = True  # someone deleted it in Slack
    writer.set(notice, text="Rollback completed. ETA 2 hours", blocks=None)
    assert await writer.drain(timeout_s=10)
    (again,) = emu.messages(CHANNEL)
    assert again.ts != first_ts and again.metadata == COMPLETED


async def test_metadata_slack_refuses_is_dropped_and_the_notice_still_arrives(
    slack: tuple[Emulator, SlackWriter],
) -> None:
    emu, writer = slack
    emu.fail_method("chat.postMessage", "invalid_metadata_schema", count=1)
    notice = writer.message(CHANNEL)
    writer.set(notice, text="Rollback completed.", blocks=None, metadata=COMPLETED)
    assert await writer.drain(timeout_s=10)
    (shown,) = emu.messages(CHANNEL)
    assert shown.text == "Rollback completed." and shown.metadata is None


async def test_a_verification_line_whose_metadata_slack_refuses_is_posted_without_it() -> None:
    async with Emulator(token=TOKEN) as emu:
        emu.add_channel(CHANNEL, "incidents")
        client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
        emu.fail_method("chat.postMessage", "invalid_metadata_schema", count=1)
        await post_with_metadata(client, COMPLETED, channel=CHANNEL, text="✅ Immediate check")
        (line,) = emu.messages(CHANNEL)
        assert line.text == "✅ Immediate check" and line.metadata is None
        await post_with_metadata(client, COMPLETED, channel=CHANNEL, text="✅ Extended check")
        assert emu.messages(CHANNEL)[-1].metadata == COMPLETED
        emu.fail_method("chat.postMessage", "channel_not_found", count=1)
        with pytest.raises(SlackApiError):  # not about metadata: the caller's error to handle
            await post_with_metadata(client, COMPLETED, channel=CHANNEL, text="lost")
