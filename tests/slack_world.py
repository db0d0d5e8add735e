"""The Slack world of the end-to-end tests: the emulator, rollbot serving it, signed senders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Settings, load_runbook
from handlers.ids import Action
from handlers.server import SlackService, running
from slack_emulator import Emulator, SendResult, SlackSender
from slack_emulator.state import Message
from tests.sandbox import Sandbox

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-rollbot-test"
INCIDENTS, ONCALL, RANDOM = "C0INCIDENTS", "C0ONCALL", "C0RANDOM"
ALICE, BOB, CAROL, MALLORY = "U0ALICE", "U0BOB", "U0CAROL", "U0MALLORY"

SLACK_TABLE = f"""
[slack]
incidents_channel = "{INCIDENTS}"
oncall_channel = "#on-call"
allowed_users = ["{ALICE}", "{BOB}"]
allowed_usergroups = ["S0ONCALL"]
restore_approvers = ["{BOB}", "{CAROL}"]
restore_requires_second_approver = true
card_ttl_minutes = 15
"""


@dataclass
class SlackWorld:
    emu: Emulator
    sender: SlackSender
    service: SlackService
    sandbox: Sandbox

    async def command(self, user: str, text: str, channel: str = INCIDENTS,
                      **opts: Any) -> SendResult:
        return await self.sender.slash_command(user, channel, text, **opts)

    async def click(self, user: str, message: Message, action: Action,
                    **opts: Any) -> SendResult:
        return await self.sender.block_action(user, message.channel, message.ts, action.value,
                                              **opts)

    def posted(self, channel: str = INCIDENTS) -> list[Message]:
        return [m for m in self.emu.messages(channel, include_replies=False)
                if m.user == self.emu.ident.bot_user_id]

    async def wait_message(self, match: Callable[[Message], bool], *, channel: str = INCIDENTS,
                           timeout: float = 60) -> Message:
        def find() -> Message | None:
            return next((m for m in reversed(self.emu.messages(channel)) if match(m)), None)
        return await self.emu.wait_for(find, timeout=timeout)

    async def wait_card(self, title: str, timeout: float = 60) -> Message:
        return await self.wait_message(lambda m: header(m).startswith(title)
                                       or header(m).startswith("🚨 " + title), timeout=timeout)

    def transcript(self) -> str:
        return self.emu.transcript(INCIDENTS)

    def problems(self) -> list[str]:
        """Every call Slack refused for its shape: rollbot must never send such a message."""
        bad = {"invalid_blocks", "msg_too_long", "invalid_arguments", "no_text",
               "invalid_metadata_format", "invalid_metadata_schema"}
        return [f"{c.method}: {c.error}" for c in self.emu.calls if c.error in bad]


def header(m: Message) -> str:
    for b in m.blocks or []:
        if b.get("type") == "header":
            return str(b["text"]["text"])
    return ""


def message_text(m: Message) -> str:
    parts = [m.text]
    for b in m.blocks or []:
        if isinstance(b.get("text"), dict):
            parts.append(str(b["text"]["text"]))
        for e in b.get("elements", []):
            if isinstance(e.get("text"), dict):
                parts.append(str(e["text"]["text"]))
            elif isinstance(e.get("text"), str):
                parts.append(e["text"])
    return "\n".join(parts)


def button_labels(m: Message) -> list[str]:
    return [str(e["text"]["text"]) for b in m.blocks or [] if b.get("type") == "actions"
            for e in b["elements"]]


def populate(emu: Emulator) -> None:
    """The workspace of the stories: three channels, four people, the on-call group."""
    emu.add_channel(INCIDENTS, "incidents")
    emu.add_channel(ONCALL, "on-call")
    emu.add_channel(RANDOM, "random")
    for uid, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (MALLORY, "mallory")):
        emu.add_user(uid, name)
    emu.add_usergroup("S0ONCALL", [CAROL])


@asynccontextmanager
async def slack_world(sandbox: Sandbox, dsn: str, tmp: Path, *,
                      runbook_text: Callable[[str], str] = lambda t: t,
                      min_update_interval_s: float = 1.0,
                      webhook_secret: str | None = None) -> AsyncIterator[SlackWorld]:
    runbook_path = tmp / "rollbot.toml"
    runbook_path.write_text(f'incident_logs_dir = "{tmp / "incident-logs"}"\n'
                            + runbook_text(sandbox.runbook.read_text()) + SLACK_TABLE)
    async with Emulator(token=TOKEN, signing_secret=SECRET) as emu:
        populate(emu)
        settings = Settings(database_url=dsn, rollbot_config=runbook_path,
                            slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                            slack_api_url=emu.api_url, port=0,
                            rollbot_webhook_secret=webhook_secret)
        async with running(settings, load_runbook(runbook_path),
                           min_update_interval_s=min_update_interval_s) as service:
            sender = SlackSender(f"http://127.0.0.1:{service.port}/slack/events", SECRET, emu)
            world = SlackWorld(emu=emu, sender=sender, service=service, sandbox=sandbox)
            try:
                yield world
            finally:
                world.emu.clear_faults()  # let rollbot deliver what it still holds
                await service.front.wait_idle(120)
                await asyncio.sleep(0)


EXAMPLE_RUNBOOK = Path(__file__).parent / "data" / "rollbot.example.toml"


@asynccontextmanager
async def slack_world_without_host(dsn: str, tmp: Path) -> AsyncIterator[SlackWorld]:
    """The Slack world on the example runbook, with no production host behind it: for what
    Slack sees before any SSH (acks, signatures, replies)."""
    host = tmp / "host"
    host.mkdir()
    (host / "rollbot.toml").write_text(EXAMPLE_RUNBOOK.read_text())
    unused = Sandbox(state=host, ssh_port=0, hardened_ssh_port=0, api_port=0, pg_port=0)
    async with slack_world(unused, dsn, tmp) as world:
        yield world
