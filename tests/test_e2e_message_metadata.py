"""Another app in #incidents reads what rollbot did from its messages' metadata.

On-call rolls back from Slack on the sandbox host; a status-page app (any Slack client) reads
#incidents with ``conversations.history`` / ``conversations.replies`` and
``include_all_metadata``: the notice says ``rollback_completed`` with the run's whole story and
its live message's permalink, the verification lines say ``rollback_verified``, Set ETA keeps
the notice's metadata, and a failed run's notice says ``rollback_failed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.store.runs import Store
from handlers.ids import Action, Block, Field
from tests.fleet import free_port
from tests.sandbox import Sandbox
from tests.slack_world import BOB, INCIDENTS, TOKEN, SlackWorld, slack_world
from tests.test_e2e_slack import roll_back_by_slack, wait_final

pytestmark = pytest.mark.e2e


def quick_checks(text: str) -> str:
    """The Immediate check 1.2 s after the rollback, so that its line is posted in the test."""
    marker = "[environments.production.ssh]"
    return text.replace(marker, f"verify_after_minutes = [0.02]\n{marker}", 1)


def unhealthy_after_start(text: str) -> str:
    """Health is asked where nothing answers, and given up on after 3 s: the run fails."""
    old = 'health_url = "http://127.0.0.1:'
    assert old in text
    first, rest = text.split(old, 1)
    rest = rest.split("\n", 1)[1]
    nowhere = f'health_url = "http://127.0.0.1:{free_port()}/health"\n'
    return (first + nowhere + rest
            + "\n[environments.production.timeouts]\nhealth_s = 3\n")


def permalink(channel: str, ts: str) -> str:
    return f"https://azora.slack.com/archives/{channel}/p{ts.replace('.', '')}"


async def metadata_in_history(reader: AsyncWebClient, ts: str) -> Any:
    """The metadata of #incidents' message ``ts``, as another app reads it."""
    history = await reader.conversations_history(channel=INCIDENTS, include_all_metadata=True)
    (message,) = [m for m in history["messages"] if m["ts"] == ts]
    return message.get("metadata")


async def set_eta(world: SlackWorld, notice_ts: str, eta: str) -> None:
    notice = world.emu.message(INCIDENTS, notice_ts)
    assert notice is not None
    await world.click(BOB, notice, Action.SET_ETA)
    view = await world.emu.wait_for(lambda: next(iter(world.emu.views(BOB, open_only=True)),
                                                 None))
    result = await world.sender.view_submission(BOB, view.id, {
        Block.ETA.value: {Field.ETA.value: eta}})
    assert result.status == 200
    await world.wait_message(lambda m: m.ts == notice_ts and f"ETA for fix: {eta}" in m.text)


async def test_a_status_page_app_reads_the_rollback_and_its_check_from_metadata(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path, runbook_text=quick_checks) as world:
        channel, ts = await roll_back_by_slack(world)
        await wait_final(world, ts)
        notice = await world.wait_message(lambda m: "Rollback completed." in m.text)
        reader = AsyncWebClient(token=TOKEN, base_url=world.emu.api_url)
        run = {"run_id": 1, "environment": "production", "procedure": "simple",
               "outcome": "succeeded", "from_version": "v1.2.3", "to_version": "v1.2.2",
               "live_message_url": permalink(channel, ts)}
        completed = {"event_type": "rollback_completed", "event_payload": run}
        assert await metadata_in_history(reader, notice.ts) == completed

        # the Immediate check: its status line in #incidents and its result in the run's thread
        status = await world.wait_message(
            lambda m: m.text.startswith("✅ Immediate verification of rollback #1"), timeout=60)
        verified = await metadata_in_history(reader, status.ts)
        assert verified["event_type"] == "rollback_verified"
        checks = verified["event_payload"]["checks"]
        assert checks >= 5 and verified["event_payload"] == {
            **run, "tier": "immediate", "result": "passed", "checks": checks,
            "checks_failed": 0}
        thread = await reader.conversations_replies(channel=channel, ts=ts,
                                                    include_all_metadata=True)
        (in_thread,) = [m for m in thread["messages"]
                        if m["text"].startswith("✅ *Immediate verification*")]
        assert in_thread["metadata"] == verified
        without = await reader.conversations_history(channel=INCIDENTS)
        assert all("metadata" not in m for m in without["messages"])  # only when asked for

        # Set ETA edits the notice: its metadata stays, and the edit did not send it again
        await set_eta(world, notice.ts, "2 hours")
        assert await metadata_in_history(reader, notice.ts) == completed
        edits = [c for c in world.emu.calls_to("chat.update")
                 if c.params.get("ts") == notice.ts and c.ok]
        assert edits and all("metadata" not in c.params for c in edits)
        assert world.problems() == [], world.problems()


async def test_a_failed_rollback_notice_says_rollback_failed(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=unhealthy_after_start) as world:
        channel, ts = await roll_back_by_slack(world)
        await wait_final(world, ts, "❌ Rollback failed")
        notice = await world.wait_message(lambda m: "did not complete" in m.text)
        reader = AsyncWebClient(token=TOKEN, base_url=world.emu.api_url)
        assert await metadata_in_history(reader, notice.ts) == {
            "event_type": "rollback_failed",
            "event_payload": {"run_id": 1, "environment": "production", "procedure": "simple",
                              "outcome": "failed", "from_version": "v1.2.3",
                              "to_version": "v1.2.2", "live_message_url": permalink(channel, ts)}}
        assert world.problems() == [], world.problems()
