"""rollbot's Home tab: what runs, the lock, the watch, quarantine, checks and runs, per person.

Slack is the emulator (real HTTP, signed events); rollbot serves it for real on a real
PostgreSQL; the stories that need real runs roll the sandbox host back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store.runs import Store
from handlers.ids import Action, AssessView, HomeAction, HomeBlock, HomeField, HomeView, numbered
from tests.home_tab import (
    open_tab,
    plan_values,
    publishes,
    tab_button,
    tab_buttons,
    tab_text,
    wait_modal,
    wait_tab,
)
from tests.sandbox import Sandbox
from tests.slack_world import (
    ALICE,
    BOB,
    CAROL,
    INCIDENTS,
    MALLORY,
    SlackWorld,
    header,
    message_text,
    slack_world,
    slack_world_without_host,
)
from tests.test_e2e_autorollback import HOOK_SECRET, TRUSTED, deploy, fast, hook
from tests.test_e2e_slack import SLOW_COMPOSE
from tests.test_e2e_socket_mode import socket_world

pytestmark = pytest.mark.e2e


@pytest.fixture
async def bare_world(store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    """No production host behind it: the tab's own behaviour, changes made in the database."""
    async with slack_world_without_host(store.dsn, tmp_path) as w:
        yield w
        assert w.problems() == [], w.problems()


async def quarantine(world: SlackWorld, version: str) -> None:
    """A version is quarantined, as the engine does when a rollback ends (any replica)."""
    await world.service.app.deploys.quarantine(environment="production", version=version,
                                               by=BOB, reason=f"{version} broke checkout",
                                               run_id=None)


async def test_a_burst_of_changes_republishes_at_most_every_2_s_and_only_to_recent_viewers(
        bare_world: SlackWorld, store: Store) -> None:
    world = bare_world
    await open_tab(world, ALICE)
    await open_tab(world, CAROL)
    # Carol looked at the tab two hours ago, not since.
    await store.pool.execute("UPDATE home_viewers SET opened_at = now() - interval '2 hours'"
                             " WHERE user_id = $1", CAROL)
    await asyncio.sleep(2.4)  # past the opening's publish
    world.emu.clear_calls()
    started = time.monotonic()  # the emulator's clock
    for n in range(12):  # twelve changes over about three seconds
        await quarantine(world, f"v2.0.{n}")
        await asyncio.sleep(0.25)
    burst = time.monotonic() - started
    view = await wait_tab(world, ALICE, "`v2.0.11` by", timeout=10)
    await asyncio.sleep(2.5)  # anything still to come
    times = [c.at for c in publishes(world, ALICE)]
    assert 1 <= len(times) <= 2 + burst / 2, (times, burst)
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(times)), times
    assert publishes(world, CAROL) == []
    assert "*Quarantined versions:* 12" in tab_text(view)
    # Carol opens it again: she is a recent viewer once more, and gets the current state.
    assert "`v2.0.11` by" in tab_text(await open_tab(world, CAROL))


async def test_assess_opens_the_decision_matrix_and_nobody_else_gets_buttons(
        bare_world: SlackWorld, store: Store) -> None:
    world = bare_world
    alice = await open_tab(world, ALICE)
    assert tab_buttons(alice)[:2] == [HomeAction.PLAN, HomeAction.ASSESS]
    mallory = await open_tab(world, MALLORY)
    assert tab_buttons(mallory) == [] and "Read-only" in tab_text(mallory)
    click = await world.sender.home_action(ALICE, HomeAction.ASSESS.value)
    assert click.acked_in_time
    await wait_modal(world, ALICE, AssessView.ASSESS.value)
    # A click forged from someone else's tab is refused, told in a modal, and audited.
    forged = await world.sender.block_action(MALLORY, None, None, HomeAction.ASSESS.value,
                                             view=alice.id)
    assert forged.acked_in_time
    refused = await wait_modal(world, MALLORY, HomeView.REFUSED.value)
    assert "you cannot assess a rollback" in tab_text(refused)
    assert [v for v in world.emu.views(MALLORY) if v.payload.get("callback_id")
            == AssessView.ASSESS.value] == []
    audit = await store.audit_entries()
    assert any(a.kind == "refusal" and a.actor == MALLORY and "home tab" in a.detail
               for a in audit)


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    """Every docker-compose call takes 3 s longer: the run lasts long enough to see its lock."""
    def slow(text: str) -> str:
        assert 'command = "docker-compose"' in text
        return text.replace('command = "docker-compose"', SLOW_COMPOSE)
    async with slack_world(production, store.dsn, tmp_path, runbook_text=slow) as w:
        yield w
        assert w.problems() == [], w.problems()


async def test_home_tab_after_a_real_rollback_planned_from_it(
        world: SlackWorld, production: Sandbox, store: Store) -> None:
    first = await open_tab(world, ALICE)
    assert "*Lock:* 🔓 free" in tab_text(first)
    await open_tab(world, MALLORY)

    # Plan a rollback from the tab: a bad version is answered in the modal, nothing is posted.
    await world.sender.home_action(ALICE, HomeAction.PLAN.value)
    plan = await wait_modal(world, ALICE, HomeView.PLAN.value)
    bad = await world.sender.view_submission(ALICE, plan.id, plan_values(
        version="1.2.2; rm -rf /", reason="v1.2.3 fails health"))
    assert bad.json is not None and bad.json["response_action"] == "errors"
    assert "is not a release version" in bad.json["errors"][HomeBlock.PLAN_VERSION.value]
    await asyncio.sleep(1)
    assert world.posted() == []
    assert any(a.kind == "refusal" and a.actor == ALICE and "home tab plan" in a.detail
               for a in await store.audit_entries())
    good = await world.sender.view_submission(ALICE, plan.id, plan_values(
        version="v1.2.2", reason="v1.2.3 fails health"))
    assert good.acked_in_time and not good.json
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    assert card.channel == INCIDENTS and "v1.2.3 fails health" in message_text(card)
    await world.click(ALICE, card, Action.CONFIRM)

    # The lock shows while it runs, without reopening the tab.
    await wait_tab(world, ALICE, "🔒 rollback #1", timeout=60)
    await world.wait_message(lambda m: m.ts == card.ts and header(m).startswith("✅ Rolled back"),
                             timeout=120)
    run = await store.get_run(1)
    assert run is not None and run.live_message_url
    view = await wait_tab(world, ALICE, "*Runs now:* `v1.2.2`", "`v1.2.3` by",
                          f"<{run.live_message_url}|live message>", "🔓 free", timeout=30)
    shown = tab_text(view)
    for words in ("*Automatic watch:* no deploy being watched",
                  "Immediate check of rollback #1 due", "*Last run:*",
                  "#1 v1.2.3 → v1.2.2 `simple` succeeded by <@U0ALICE>",
                  "v1.2.3 fails health"):
        assert words in shown, words
    assert HomeAction.UNQUARANTINE in tab_buttons(view)

    # Mallory, not allowed, sees the same state and no button.
    mallory = await wait_tab(world, MALLORY, "`v1.2.3` by", "*Runs now:* `v1.2.2`")
    assert tab_buttons(mallory) == []
    assert f"<{run.live_message_url}|live message>" in tab_text(mallory)

    # Unquarantine: refused for Mallory (forged from Alice's tab), done for Alice with a reason.
    unquarantine = tab_button(view, "Unquarantine")
    await world.sender.block_action(MALLORY, None, None, unquarantine, view=view.id)
    await wait_modal(world, MALLORY, HomeView.REFUSED.value)
    assert await world.service.app.deploys.quarantined("production", "v1.2.3") is not None
    await world.sender.home_action(ALICE, unquarantine)
    modal = await wait_modal(world, ALICE, HomeView.UNQUARANTINE.value)
    empty = await world.sender.view_submission(ALICE, modal.id, {
        HomeBlock.UNQUARANTINE_REASON.value: {HomeField.REASON.value: ""}})
    assert empty.json is not None and empty.json["response_action"] == "errors"
    lifted = await world.sender.view_submission(ALICE, modal.id, {
        HomeBlock.UNQUARANTINE_REASON.value: {HomeField.REASON.value: "fixed in v1.2.4"}})
    assert lifted.acked_in_time and not lifted.json
    await world.wait_message(lambda m: "quarantine lifted by <@U0ALICE>" in m.text)
    await wait_tab(world, ALICE, "*Quarantined versions:* none")
    assert await world.service.app.deploys.quarantined("production", "v1.2.3") is None
    audit = await store.audit_entries()
    assert any(a.kind == "unquarantine" and a.actor == ALICE and "fixed in v1.2.4" in a.detail
               for a in audit)
    assert any(a.kind == "refusal" and a.actor == MALLORY and "lift a quarantine" in a.detail
               for a in audit)


@pytest.fixture
async def countdown_world(production: Sandbox, store: Store, tmp_path: Path
                          ) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=fast(30.0, trust=TRUSTED),
                           webhook_secret=HOOK_SECRET) as w:
        yield w
        await w.service.auto.wait_idle(60)
        assert w.problems() == []


async def test_a_countdown_shows_in_the_tab_and_its_cancel_button_stops_it(
        countdown_world: SlackWorld, production: Sandbox, store: Store) -> None:
    world = countdown_world
    await open_tab(world, BOB)
    assert (await hook(world, "/hooks/deploy", deploy(stage="start_failed"))).status_code == 202
    view = await wait_tab(world, BOB, "*Countdown:* `v1.2.3`", "Roll back now", timeout=30)
    assert [b for b in tab_buttons(view) if b.startswith("rollbot.auto")] == [
        Action.AUTO_ROLL_BACK_NOW, Action.AUTO_CANCEL]
    cancel = tab_button(view, "Cancel")
    assert cancel.startswith(numbered(Action.AUTO_CANCEL))
    # Mallory has no button; a click forged from Bob's tab is refused in a modal, and audited.
    await world.sender.block_action(MALLORY, None, None, cancel, view=view.id)
    refused = await wait_modal(world, MALLORY, HomeView.REFUSED.value)
    assert "cannot cancel an automatic rollback" in tab_text(refused)
    await world.sender.home_action(BOB, cancel)
    await world.wait_message(lambda m: "cancelled by <@U0BOB>" in m.text)
    await wait_tab(world, BOB, "*Automatic watch:* no deploy being watched")
    assert await store.history() == []
    assert production.running_image() == "azora-api:v1.2.3"


async def test_the_tab_over_socket_mode(production: Sandbox, store: Store,
                                        tmp_path: Path) -> None:
    async with socket_world(production, store.dsn, tmp_path) as world:
        await world.emu.wait_socket_connected(timeout=10)
        opened = await world.sender.app_home_opened(ALICE)
        assert opened.acked_in_time and opened.envelope is not None
        assert opened.envelope.type == "events_api"
        view = await world.emu.wait_for(lambda: world.emu.home_view(ALICE), timeout=15)
        assert "*Lock:* 🔓 free" in tab_text(view)
        click = await world.sender.home_action(ALICE, HomeAction.ASSESS.value)
        assert click.acked_in_time
        await world.emu.wait_for(lambda: next(
            (v for v in world.emu.views(ALICE, open_only=True)
             if v.payload.get("callback_id") == AssessView.ASSESS.value), None), timeout=10)
        assert world.problems() == []
