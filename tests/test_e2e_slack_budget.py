"""Two rollbacks at once, in two environments, under Slack's rate limits: one budget paces both.

On-call rolls production and staging back from Slack at the same time. The local Slack enforces
its limits (each method at its tier, chat.postMessage per channel), chat.update even lower, as
when another replica spends the same app's budget: some calls are answered 429. None comes back
before its Retry-After, and both live messages still end showing every step done.

Real parts: the sandbox host (production) and a copy of its app (staging) behind the sandbox's
sshd, Docker and compose; rollbot serving Slack; the local Slack over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bot.model import RunStatus
from bot.store.runs import Store
from handlers.ids import Action
from slack_emulator.state import Message
from slack_emulator.tiers import SlackLimits
from tests.fleet import Fleet, FleetHost
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, BOB, SlackWorld, header, message_text, slack_world

pytestmark = pytest.mark.e2e

# As if another replica used up part of the app's budget: half of chat.postMessage's second per
# channel, and of chat.update's Tier 3 (50 a minute) 20 left.
LEFT_PER_MINUTE = {"chat.postMessage": 30.0, "chat.update": 20.0}


def with_staging(host: FleetHost) -> Callable[[str], str]:
    """The runbook with a `staging` environment: production's settings, on ``host``'s app."""
    def edit(text: str) -> str:
        lines = text.splitlines()
        start = lines.index("[environments.production]")
        end = next(i for i in range(start + 1, len(lines))
                   if lines[i].startswith("[environments.")
                   and not lines[i].startswith("[environments.production."))
        staging = "\n".join(lines[start:end]).replace("environments.production",
                                                      "environments.staging")
        entry = host.host_entry()
        compose = entry["compose"]
        assert isinstance(compose, dict)
        staging = re.sub(r'(?m)^file = ".*docker-compose\.yml"$', f'file = "{compose["file"]}"',
                         staging)
        staging = staging.replace('command = "docker-compose"', f'command = "{compose["command"]}"')
        staging = re.sub(r"127\.0\.0\.1:\d+/(health|version|api)", rf"127.0.0.1:{host.port}/\1",
                         staging)
        assert host.base_url in staging and str(compose["file"]) in staging, staging
        return text + "\n" + staging + "\n"
    return edit


@pytest.fixture
def staging(production: Sandbox) -> Iterator[FleetHost]:
    hosts = Fleet(production, ["staging-1"])
    try:
        hosts.up()
        deadline = time.monotonic() + 30
        while hosts["staging-1"].version() != "v1.2.3" and time.monotonic() < deadline:
            time.sleep(0.2)
        yield hosts["staging-1"]
    finally:
        hosts.down()


@pytest.fixture
async def world(production: Sandbox, store: Store, staging: FleetHost, tmp_path: Path
                ) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=with_staging(staging)) as w:
        yield w
        assert w.problems() == [], w.problems()  # every message rollbot sent was valid


async def card_for(world: SlackWorld, user: str, text: str, title: str) -> Message:
    ack = await world.command(user, text)
    assert ack.acked_in_time, ack
    return await world.wait_card(title)


async def final(world: SlackWorld, card: Message) -> Message:
    return await world.wait_message(
        lambda m: m.ts == card.ts and header(m).startswith(("✅", "❌", "🚫", "⚠️")),
        timeout=240)


async def test_two_rollbacks_at_once_under_slacks_limits_honour_every_429_and_end_exact(
        world: SlackWorld, production: Sandbox, staging: FleetHost, store: Store) -> None:
    limits = world.emu.slack_limits(per_minute=LEFT_PER_MINUTE)
    assert isinstance(limits, SlackLimits)

    prod_card = await card_for(world, ALICE, "v1.2.2 v1.2.3 fails health",
                               "Rollback production: v1.2.3 → v1.2.2")
    staging_card = await card_for(world, BOB, "v1.2.2 --env staging the same bad build",
                                  "Rollback staging: v1.2.3 → v1.2.2")
    clicks = await asyncio.gather(world.click(ALICE, prod_card, Action.CONFIRM),
                                  world.click(BOB, staging_card, Action.CONFIRM))
    assert all(c.acked_in_time for c in clicks), clicks

    ends = await asyncio.gather(final(world, prod_card), final(world, staging_card))
    runs = {r.environment: r for r in await store.history(limit=5)}
    assert {env: r.status for env, r in runs.items()} == {
        "production": RunStatus.SUCCEEDED, "staging": RunStatus.SUCCEEDED}
    for end, env in zip(ends, ("production", "staging"), strict=True):
        text = message_text(end)
        assert header(end).startswith("✅ Rolled back"), text
        run = await store.get_run(runs[env].id)
        assert run is not None and run.steps
        for i, step in enumerate(run.steps, start=1):  # every step shown done
            assert f"✅ {i}. {step.title}" in text, (env, step.title, text)
    assert production.running_image() == "azora-api:v1.2.2"
    assert staging.version() == "v1.2.2"

    def both_notices() -> list[Message] | None:
        notices = [m for m in world.posted() if m.text.startswith("Rollback completed.")]
        return notices if len(notices) == 2 else None
    await world.emu.wait_for(both_notices, timeout=120)  # stakeholders told of both
    await world.service.front.wait_idle(120)  # reports and checklists too, under the limits

    refused = limits.limited()
    assert refused, limits.calls  # the limits did bite
    assert limits.early_returns() == []  # no call came back before its Retry-After
    posts = world.emu.calls_to("chat.postMessage")
    assert posts and all(p.params.get("unfurl_links") is False
                         and p.params.get("unfurl_media") is False for p in posts), \
        [p.params for p in posts if p.params.get("unfurl_links") is not False]
    print(f"{len(refused)} call(s) answered 429, all honoured:",
          sorted({(c.key, c.retry_after) for c in refused}))
    print(world.transcript())
