"""The demo prints each channel once: final states, in order, threads under their parent."""

from __future__ import annotations

import asyncio
import time

from deploy.demo_slack import render_channels, wait_until
from slack_emulator.state import Identity, Workspace

BOT = Identity().bot_user_id
INCIDENTS, ONCALL = "C0INCIDENTS", "C0ONCALL"


def button(label: str) -> dict[str, object]:
    return {"type": "button", "action_id": label.lower(),
            "text": {"type": "plain_text", "text": label}}


def section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def a_rollback_as_slack_holds_it() -> Workspace:
    """The card becomes the live message; replies and channel messages arrive interleaved."""
    ws = Workspace(Identity())
    ws.add_channel(INCIDENTS, "incidents")
    ws.add_channel(ONCALL, "on-call")
    ws.add_user("U0ALICE", "alice")
    card = ws.post(INCIDENTS, user=BOT, text="card", blocks=[
        section("*Rollback production: v1.2.3 → v1.2.2*"),
        {"type": "actions", "elements": [button("Roll back to v1.2.2"), button("Cancel")]}])
    ws.post(INCIDENTS, user=BOT, text="$ docker-compose stop api", thread_ts=card.ts)
    card.replace("live", [section("Step 1/2 running"),
                          {"type": "actions", "elements": [button("Cancel rollback")]}],
                 at=ws.now(), via="chat.update", ts=ws.new_ts())
    notice = ws.post(INCIDENTS, user=BOT, text="Rollback completed. Service restored to v1.2.2.")
    ws.post(INCIDENTS, user=BOT, text="$ docker-compose up -d api\nStarting api ... done",
            thread_ts=card.ts)
    card.replace("live", [section("✅ Rolled back to v1.2.2 <@U0ALICE>")],
                 at=ws.now(), via="chat.update", ts=ws.new_ts())
    ws.post(INCIDENTS, user=BOT, text="✅ Immediate verification of rollback #1: all green.")
    ws.post(INCIDENTS, user=BOT, text="Rollback checklist, run #1", thread_ts=card.ts)
    ws.post(INCIDENTS, user="U0ALICE", text="thanks", thread_ts=notice.ts)
    return ws


def test_each_message_once_in_its_final_state_with_its_thread_indented_under_it() -> None:
    header, *lines = render_channels(a_rollback_as_slack_holds_it(), [INCIDENTS]).splitlines()
    assert header.rstrip("═") == "═══ #incidents · 3 messages, 4 thread replies "
    assert lines == [
        "rollbot: (edited)",
        "  ✅ Rolled back to v1.2.2 @alice",
        "    ↳ rollbot: $ docker-compose stop api",
        "    ↳ rollbot:",
        "        $ docker-compose up -d api",
        "        Starting api ... done",
        "    ↳ rollbot: Rollback checklist, run #1",
        "",
        "rollbot: Rollback completed. Service restored to v1.2.2.",
        "    ↳ alice: thanks",
        "",
        "rollbot: ✅ Immediate verification of rollback #1: all green.",
    ]


def test_earlier_versions_of_an_edited_message_are_not_printed() -> None:
    text = render_channels(a_rollback_as_slack_holds_it(), [INCIDENTS])
    assert "Step 1/2 running" not in text and "[Cancel rollback]" not in text
    assert text.count("Rolled back to v1.2.2") == 1


def test_buttons_show_as_labels_and_channels_come_in_the_order_asked() -> None:
    ws = a_rollback_as_slack_holds_it()
    ws.post(ONCALL, user=BOT, text="card", blocks=[
        section("*Rollback production: v1.2.3 → v1.2.2*"),
        {"type": "actions", "elements": [button("Roll back to v1.2.2"), button("Cancel")]}])
    text = render_channels(ws, [ONCALL, INCIDENTS])
    assert text.index("#on-call") < text.index("#incidents")
    oncall = text[:text.index("#incidents")]
    assert "  [Roll back to v1.2.2] [Cancel]\n" in oncall


def test_a_quiet_channel_says_so() -> None:
    text = render_channels(a_rollback_as_slack_holds_it(), [INCIDENTS, ONCALL])
    *_, header, last = text.splitlines()
    assert header.rstrip("═") == "═══ #on-call · 0 messages " and last == "(nothing posted)"


def test_a_reply_whose_parent_was_deleted_stands_at_its_own_place() -> None:
    ws = Workspace(Identity())
    ws.add_channel(INCIDENTS, "incidents")
    parent = ws.post(INCIDENTS, user=BOT, text="first")
    ws.post(INCIDENTS, user=BOT, text="second")
    ws.post(INCIDENTS, user=BOT, text="orphan", thread_ts=parent.ts)
    parent.deleted = True
    lines = render_channels(ws, [INCIDENTS]).splitlines()[1:]
    assert lines == ["rollbot: second", "", "rollbot: orphan"]


async def test_the_demo_waits_for_an_effect_and_gives_up_after_its_bound() -> None:
    edits: list[str] = []
    asyncio.get_running_loop().call_later(0.3, edits.append, "the card became the live message")
    assert await wait_until(lambda: edits, timeout=5) == ["the card became the live message"]
    started = time.monotonic()
    assert await wait_until(lambda: [], timeout=0.5) is None
    assert 0.5 <= time.monotonic() - started < 2
