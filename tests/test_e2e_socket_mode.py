"""rollbot in Socket Mode: Slack (the emulator) delivers the command and the click over a WebSocket.

rollbot connects with its app-level token (``SLACK_APP_TOKEN``): ``apps.connections.open`` on
the emulator, then the WebSocket it returns. The slash command and the button click arrive as
envelopes that rollbot must acknowledge within 3 seconds; the sandbox host really rolls back.
The setup follows ``tests/slack_world.py`` (same [slack] table and people) with the app token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Settings, load_runbook
from bot.model import RunStatus
from bot.store.runs import Store
from handlers.ids import Action
from handlers.server import SlackService, running
from slack_emulator import Emulator, SocketModeSender
from slack_emulator.signing import signed_headers
from slack_emulator.state import Message
from tests.sandbox import Sandbox
from tests.slack_world import ALICE, INCIDENTS, SECRET, SLACK_TABLE, TOKEN, header, populate

pytestmark = pytest.mark.e2e

APP_TOKEN = "xapp-test-1-A0ROLLBOT-socket-mode"


def buttons(m: Message) -> list[dict[str, Any]]:
    return [e for b in m.blocks or [] if b.get("type") == "actions" for e in b["elements"]]


def emulator() -> Emulator:
    emu = Emulator(token=TOKEN, signing_secret=SECRET, app_tokens=(APP_TOKEN,))
    populate(emu)
    return emu


def write_runbook(sandbox: Sandbox, tmp: Path) -> Path:
    path = tmp / "rollbot.toml"
    path.write_text(f'incident_logs_dir = "{tmp / "incident-logs"}"\n'
                    + sandbox.runbook.read_text() + SLACK_TABLE)
    return path


def settings(emu: Emulator, dsn: str, runbook: Path, app_token: str) -> Settings:
    """Socket Mode needs no signing secret: nothing Slack sends comes over HTTP."""
    return Settings(database_url=dsn, rollbot_config=runbook, slack_bot_token=TOKEN,
                    slack_signing_secret=None, slack_app_token=app_token,
                    slack_api_url=emu.api_url, port=0)


@dataclass
class SocketWorld:
    emu: Emulator
    sender: SocketModeSender
    service: SlackService

    async def wait_message(self, match: Callable[[Message], bool], *, timeout: float = 60
                           ) -> Message:
        def find() -> Message | None:
            return next((m for m in reversed(self.emu.messages(INCIDENTS)) if match(m)), None)
        return await self.emu.wait_for(find, timeout=timeout)

    def problems(self) -> list[str]:
        """Every call Slack refused for its shape: rollbot must never send such a message."""
        bad = {"invalid_blocks", "msg_too_long", "invalid_arguments", "no_text"}
        return [f"{c.method}: {c.error}" for c in self.emu.calls if c.error in bad]


@asynccontextmanager
async def socket_world(sandbox: Sandbox, dsn: str, tmp: Path) -> AsyncIterator[SocketWorld]:
    runbook_path = write_runbook(sandbox, tmp)
    async with emulator() as emu:
        config = settings(emu, dsn, runbook_path, APP_TOKEN)
        async with running(config, load_runbook(runbook_path)) as service:
            world = SocketWorld(emu=emu, sender=SocketModeSender(emu), service=service)
            try:
                yield world
            finally:
                emu.clear_faults()  # let rollbot deliver what it still holds
                await service.front.wait_idle(120)
                await asyncio.sleep(0)


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path) -> AsyncIterator[SocketWorld]:
    async with socket_world(production, store.dsn, tmp_path) as w:
        yield w
        assert w.problems() == [], w.problems()


async def test_rollback_over_socket_mode(world: SocketWorld, production: Sandbox,
                                         store: Store) -> None:
    emu = world.emu
    # rollbot connected with its app-level token, and Slack said hello
    conn = await emu.wait_socket_connected(timeout=10)
    opened = emu.calls_to("apps.connections.open")
    assert [c.ok for c in opened] == [True]
    assert opened[0].response["url"].endswith(conn.ticket)

    command = await world.sender.slash_command(ALICE, INCIDENTS, "v1.2.2 socket mode test")
    assert command.envelope is not None and command.envelope.type == "slash_commands"
    assert command.acked_in_time, command.envelope.to_json()
    assert command.envelope.elapsed is not None and command.envelope.elapsed < 3.0
    assert command.envelope.ack is not None and command.envelope.ack.connection_id == conn.id

    title = "Rollback production: v1.2.3 → v1.2.2"
    card = await world.wait_message(lambda m: header(m).startswith(title)
                                    or header(m).startswith("🚨 " + title))
    confirm = next(b for b in buttons(card) if b.get("action_id") == Action.CONFIRM.value)
    assert confirm["text"]["text"] == "Roll back to v1.2.2"
    click = await world.sender.block_action(ALICE, INCIDENTS, card.ts, Action.CONFIRM.value,
                                            value=confirm.get("value"))
    assert click.envelope is not None and click.envelope.type == "interactive"
    assert click.envelope.payload["type"] == "block_actions"
    assert click.envelope.payload["actions"][0]["value"] == confirm.get("value")
    assert click.acked_in_time, click.envelope.to_json()

    final = await world.wait_message(
        lambda m: m.ts == card.ts and header(m).startswith("✅ Rolled back production to v1.2.2"),
        timeout=120)
    assert final.channel == INCIDENTS
    assert production.running_image() == "azora-api:v1.2.2"
    runs = await store.history(limit=5)
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED]
    assert runs[0].requested_by == ALICE
    # everything came over the socket, acknowledged in time
    assert [(e.type, e.status) for e in emu.socket_envelopes()] == [
        ("slash_commands", "acked"), ("interactive", "acked")]

    # the HTTP side still serves the health check in Socket Mode, and not Slack's events: a
    # request there, even one signed with the app's secret, is not taken
    body = b"command=%2Frollback&text=help&user_id=" + ALICE.encode()
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{world.service.port}/healthz", timeout=10)
        events = await client.post(f"http://127.0.0.1:{world.service.port}/slack/events",
                                   content=body, headers=signed_headers(SECRET, body),
                                   timeout=10)
    assert health.status_code == 200 and health.json() == {"ok": True}
    assert events.status_code == 404


async def test_a_bot_token_as_app_token_stops_startup(production: Sandbox, store: Store,
                                                      tmp_path: Path) -> None:
    runbook_path = write_runbook(production, tmp_path)
    async with emulator() as emu:
        config = settings(emu, store.dsn, runbook_path, app_token=TOKEN)  # xoxb-, not xapp-

        async def start() -> None:
            async with running(config, load_runbook(runbook_path)):
                pass

        error: BaseException | None = None
        try:
            await asyncio.wait_for(start(), 30)
        except Exception as e:
            error = e
        # Slack (the emulator) refused the token, every time it was tried
        opened = emu.calls_to("apps.connections.open")
        assert opened, "rollbot never called apps.connections.open"
        assert {c.error for c in opened} == {"not_allowed_token_type"}
        assert not emu.socket_mode.connections
        if isinstance(error, TimeoutError):
            pytest.fail(f"rollbot hung for 30 s instead of failing; apps.connections.open was "
                        f"refused {len(opened)} times")
        if error is None:
            pytest.fail("rollbot started with a bot token as its app-level token")
        said = f"{error} {error.__cause__ or ''}"
        assert "not_allowed_token_type" in said, said
