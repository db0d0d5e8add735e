"""On-call runs "Roll back this deploy" on CI's deploy message; the card appears in that channel.

CI (another app's bot) posts "Deployed v1.2.3 to production" in #incidents, where production runs
v1.2.3. Alice opens the message's "⋯" menu and picks the shortcut: rollbot posts the card
`/rollback` posts, targeting the release before v1.2.3, and a click rolls the sandbox host back.
Slack is the emulator (signed HTTP, and Socket Mode); the host and the databases are real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.autorollback.deploys import DeployStore
from bot.model import RunStatus
from bot.store.runs import Store
from handlers.ids import Action, Shortcut
from slack_emulator import SendResult
from slack_emulator.state import Message
from tests.sandbox import Sandbox
from tests.slack_world import (
    ALICE,
    INCIDENTS,
    MALLORY,
    RANDOM,
    SlackWorld,
    button_labels,
    header,
    message_text,
    slack_world,
)
from tests.test_e2e_socket_mode import SocketWorld, socket_world

pytestmark = pytest.mark.e2e

CI_BOT, CI_NAME = "B0GITHUBCI", "GitHub Actions"


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path) as w:
        yield w
        assert w.problems() == [], w.problems()


def ci_posts(world: SlackWorld | SocketWorld, text: str, channel: str = INCIDENTS,
             **parts: Any) -> Message:
    """CI's deploy bot posts in the channel (another app: a ``bot_message``)."""
    return world.emu.post_bot_message(channel, CI_BOT, CI_NAME, text, **parts)


async def roll_back_this_deploy(world: SlackWorld, user: str, message: Message) -> SendResult:
    result = await world.sender.message_action(user, message.channel, message.ts,
                                               Shortcut.ROLLBACK.value)
    assert result.acked_in_time, result
    return result


async def test_the_shortcut_on_cis_deploy_message_posts_the_card_and_a_click_rolls_back(
        world: SlackWorld, production: Sandbox, store: Store) -> None:
    deploy = ci_posts(world, "Deployed v1.2.3 to production")
    await roll_back_this_deploy(world, ALICE, deploy)
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    text = message_text(card)
    assert card.channel == INCIDENTS
    assert "*Requested by:* <@U0ALICE>" in text
    assert "Roll back this deploy: “Deployed v1.2.3 to production”" in text
    assert ("✅ *Target version*: v1.2.2, the release before v1.2.3: the newest release image "
            "below v1.2.3 on the host") in text
    assert ("✅ *Deploy in the message*: production runs v1.2.3, the release the message "
            "names") in text
    assert "Target image present" in text  # the real pre-flight ran
    assert button_labels(card) == ["Roll back to v1.2.2", "Cancel"]
    assert world.emu.ephemerals(INCIDENTS, ALICE) == []  # nothing to tell: the card says it

    await world.click(ALICE, card, Action.CONFIRM)
    await world.wait_message(lambda m: m.ts == card.ts
                             and header(m).startswith("✅ Rolled back production to v1.2.2"),
                             timeout=120)
    assert production.running_image() == "azora-api:v1.2.2"
    [run] = await store.history()
    assert (run.status, run.from_version, run.to_version) == (RunStatus.SUCCEEDED, "v1.2.3",
                                                              "v1.2.2")
    assert run.reason == "Roll back this deploy: “Deployed v1.2.3 to production”"
    [used] = [a for a in await store.audit_entries() if a.kind == "shortcut"]
    assert used.actor == ALICE
    assert used.detail.endswith("v1.2.3 → v1.2.2 (the image tags on the host)")


async def test_the_environment_named_in_blocks_and_cis_deploy_record_decide_the_target(
        world: SlackWorld, production: Sandbox, store: Store) -> None:
    # CI told rollbot through the deploy hook that v1.2.3 replaced v1.2.1 in "hardened"
    await DeployStore(store.pool).record(environment="hardened", version="v1.2.3",
                                         previous_version="v1.2.1", stage="deployed",
                                         commit="3f2c1a9", actor="ci", run_url="")
    deploy = ci_posts(world, "Deploy finished", blocks=[
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": "*Environment:*\nhardened"},
            {"type": "mrkdwn", "text": "*Version:*\n<https://github.com/azora/api/releases/tag/"
                                       "v1.2.3|v1.2.3> (was v1.2.2)"}]}])
    await roll_back_this_deploy(world, ALICE, deploy)
    card = await world.wait_card("Rollback hardened: v1.2.3 → v1.2.1")
    assert ("*Target version*: v1.2.1, the release before v1.2.3: CI's deploy record of v1.2.3 ("
            in message_text(card))
    assert "names v1.2.1 as the version it replaced" in message_text(card)
    assert button_labels(card) == ["Roll back to v1.2.1", "Cancel"]
    assert production.running_image() == "azora-api:v1.2.3"  # nothing runs before a click


async def test_a_deploy_that_no_longer_runs_gets_a_card_that_refuses(
        world: SlackWorld, production: Sandbox, store: Store) -> None:
    deploy = ci_posts(world, "Deployed v1.2.2 to production")  # yesterday's; v1.2.3 runs now
    await roll_back_this_deploy(world, ALICE, deploy)
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.1")
    text = message_text(card)
    assert "production runs v1.2.3, not v1.2.2 that the message names" in text
    assert "Cannot roll back" in text
    assert button_labels(card) == ["Dismiss"]
    assert await store.history() == []


REFUSALS = [
    ("not allowed", MALLORY, INCIDENTS, "Deployed v1.2.3 to production",
     "not on rollbot's list"),
    ("channel not allowed", ALICE, RANDOM, "Deployed v1.2.3 to production",
     "only takes commands in"),
    ("no version", ALICE, INCIDENTS, "Deploy finished :tada: (commit 3f2c1a9)",
     "names no release version"),
    ("unknown version", ALICE, INCIDENTS, "Deployed v9.9.9 to production",
     "v9.9.9 is not a release rollbot knows in production: no azora-api:v9.9.9 image"),
    ("nothing before it", ALICE, INCIDENTS, "Deployed v1.2.1 to production",
     "rollbot knows no release before v1.2.1 in production"),
    ("two environments", ALICE, INCIDENTS, "Deployed v1.2.3 to production and hardened",
     "names more than one environment (hardened, production)"),
]


@pytest.mark.parametrize(("case", "user", "channel", "text", "says"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
async def test_refusals_are_ephemeral_audited_and_post_nothing(
        world: SlackWorld, production: Sandbox, store: Store, case: str, user: str,
        channel: str, text: str, says: str) -> None:
    deploy = ci_posts(world, text, channel=channel)
    await roll_back_this_deploy(world, user, deploy)
    said = await world.emu.wait_for(lambda: next(
        (m for m in world.emu.ephemerals(channel, user) if says in message_text(m)), None),
        timeout=30)
    assert said.ephemeral_to == user
    assert world.posted(channel) == []  # no card, nothing in the channel
    assert await store.history() == []
    refusals = [a for a in await store.audit_entries() if a.kind == "refusal"]
    assert any(a.actor == user and deploy.ts in a.detail for a in refusals), refusals
    assert production.running_image() == "azora-api:v1.2.3"
    print(world.emu.transcript(channel, viewer=user))


async def test_the_shortcut_over_socket_mode(production: Sandbox, store: Store,
                                             tmp_path: Path) -> None:
    async with socket_world(production, store.dsn, tmp_path) as world:
        await world.emu.wait_socket_connected(timeout=10)
        deploy = ci_posts(world, "✅ azora-api v1.2.3 is live on production")
        result = await world.sender.message_action(ALICE, INCIDENTS, deploy.ts,
                                                   Shortcut.ROLLBACK.value)
        assert result.envelope is not None and result.envelope.type == "interactive"
        assert result.envelope.payload["type"] == "message_action"
        assert result.acked_in_time, result.envelope.to_json()
        card = await world.wait_message(
            lambda m: header(m).startswith("Rollback production: v1.2.3 → v1.2.2"))
        assert "Roll back to v1.2.2" in [e["text"]["text"] for b in card.blocks or []
                                         if b.get("type") == "actions" for e in b["elements"]]
        assert world.problems() == []
