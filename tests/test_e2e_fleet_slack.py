"""A fleet rolled back from Slack: the card shows every host, the live message a line per host.

Real parts end to end: two fleet hosts (copies of the sandbox app reached through the sandbox's
sshd, Docker and docker-compose), rollbot's HTTP server, and the local Slack over real HTTP.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.model import RunStatus
from bot.store.runs import Store
from handlers.ids import Action
from tests.fleet import Fleet
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, SlackWorld, button_labels, header, message_text, slack_world

pytestmark = pytest.mark.e2e


@pytest.fixture
def fleet(production: Sandbox) -> Iterator[Fleet]:
    hosts = Fleet(production, ["web-1", "web-2", "web-3"])
    try:
        hosts.up()
        deadline = time.monotonic() + 30
        while set(hosts.versions().values()) != {"v1.2.3"} and time.monotonic() < deadline:
            time.sleep(0.2)
        yield hosts
    finally:
        hosts.down()


def as_fleet(fleet: Fleet, **overrides: str) -> str:
    """The `[[environments.production.hosts]]` tables of ``fleet``, canary 1 then the rest."""
    lines = ["", "[environments.production.fleet]", "canary = 1", "max_failed_hosts = 0"]
    for h in fleet.hosts:
        entry = h.host_entry()
        compose = entry["compose"]
        assert isinstance(compose, dict)
        lines += ["[[environments.production.hosts]]", f'name = "{h.name}"',
                  f'compose = {{ file = "{compose["file"]}", command = "{compose["command"]}" }}',
                  f'health_url = "{overrides.get(h.name, entry["health_url"])}"',
                  f'version_url = "{entry["version_url"]}"',
                  f'smoke_urls = ["{h.base_url}/api/users"]']
    return "\n".join(lines) + "\n"


@pytest.fixture
async def world(production: Sandbox, store: Store, fleet: Fleet, tmp_path: Path
                ) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=lambda t: t + as_fleet(fleet)) as w:
        yield w
        assert w.problems() == [], w.problems()  # every message rollbot sent was valid


async def test_a_fleet_rolled_back_from_slack_shows_each_host_and_ends_all_on_v1_2_2(
        world: SlackWorld, production: Sandbox, store: Store, fleet: Fleet) -> None:
    original = production.running_image()
    ack = await world.command(ALICE, "v1.2.2 v1.2.3 fails health on every web host")
    assert ack.acked_in_time, ack
    card = await world.wait_card("Rollback production")
    shown = message_text(card)
    for name in ("web-1", "web-2", "web-3"):
        assert name in shown, shown                         # pre-flight covered every host
    assert "canary" in shown, shown                         # the rollout order is stated
    assert "Roll back to v1.2.2" in button_labels(card), button_labels(card)

    click = await world.click(ALICE, card, Action.CONFIRM)
    assert click.acked_in_time
    final = await world.wait_message(
        lambda m: m.ts == card.ts and header(m).startswith(("✅", "❌", "🚫", "⚠️")),
        timeout=180)
    text = message_text(final)
    assert header(final).startswith("✅"), text
    for name in ("web-1", "web-2", "web-3"):
        assert name in text, text                           # one line per host
    assert fleet.versions() == {"web-1": "v1.2.2", "web-2": "v1.2.2", "web-3": "v1.2.2"}
    assert production.running_image() == original           # not a fleet host: untouched

    notice = await world.wait_message(lambda m: "Rollback completed." in m.text)
    assert "web-1" in message_text(notice) and "web-3" in message_text(notice), \
        message_text(notice)
    runs = await store.history(limit=5)
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED]
    run = await store.get_run(runs[0].id)
    assert run is not None and {s.host for s in run.steps} == {"web-1", "web-2", "web-3"}
    print(world.transcript())


async def test_a_fleet_whose_canary_fails_stops_and_the_live_message_says_who_runs_what(
        production: Sandbox, store: Store, fleet: Fleet, tmp_path: Path) -> None:
    # web-1's health URL answers nothing: the canary is rolled back but never turns healthy.
    dead = "http://127.0.0.1:9/health"
    async with slack_world(production, store.dsn, tmp_path,
                           runbook_text=lambda t: t + as_fleet(fleet, **{"web-1": dead})
                           + _short_health()) as w:
        ack = await w.command(ALICE, "v1.2.2 canary first")
        assert ack.acked_in_time, ack
        card = await w.wait_card("Rollback production")
        await w.click(ALICE, card, Action.CONFIRM)
        final = await w.wait_message(
            lambda m: m.ts == card.ts and header(m).startswith(("✅", "❌", "🚫", "⚠️")),
            timeout=180)
        text = message_text(final)
        assert not header(final).startswith("✅"), text
        assert "web-1" in text and "FAILED" in text, text
        assert "untouched" in text, text                    # web-2 and web-3 were never touched
        assert w.problems() == [], w.problems()
    versions = fleet.versions()
    assert versions["web-2"] == versions["web-3"] == "v1.2.3", versions
    assert fleet["web-1"].running_image() == "azora-api:v1.2.2"


def _short_health() -> str:
    """Health waits of a few seconds, so a host that never turns healthy fails quickly."""
    return ("\n[environments.production.timeouts]\nhealth_s = 4\n"
            "emergency_health_s = 4\n")
