"""`./run demo`: the Slack flow end to end, on this machine, with nothing to configure.

A local Slack (the emulator, real HTTP), the sandbox production host (real sshd, Docker, compose,
PostgreSQL) and rollbot serving Slack over HTTP. Alice types `/rollback v1.2.2` as a signed Slack
request, clicks the confirmation, and the #incidents channel is printed as a person reads it,
live, until the stakeholder notice arrives.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from bot.config import Settings, load_runbook
from handlers.ids import Action
from handlers.server import running
from slack_emulator import Emulator, Message, SlackSender

ROOT = Path(__file__).resolve().parent.parent
SECRET = "demo-signing-secret-0123456789abcdef"
TOKEN = "xoxb-rollbot-demo"
INCIDENTS = "C0INCIDENTS"
ALICE = "U0ALICE"
SLACK_TABLE = f"""
[slack]
incidents_channel = "{INCIDENTS}"
oncall_channel = "C0ONCALL"
allowed_users = ["{ALICE}", "U0BOB"]
restore_approvers = ["U0BOB"]
"""


class LivePrinter:
    """Prints each line of the channel's transcript the first time it appears."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self._seen: set[str] = set()

    def show(self) -> None:
        for line in self._emu.transcript(INCIDENTS).splitlines():
            if line.strip() and line not in self._seen:
                self._seen.add(line)
                print(line, flush=True)


def prepare() -> tuple[Path, Path]:
    """The sandbox's runbook plus the [slack] table; rollbot's data directory."""
    runbook_src = Path(os.environ["ROLLBOT_CONFIG"])
    data = Path(os.environ.get("ROLLBOT_DATA_DIR", ROOT / ".rollbot"))
    data.mkdir(exist_ok=True)
    runbook_path = data / "demo-rollbot.toml"
    runbook_path.write_text(runbook_src.read_text() + SLACK_TABLE)
    return runbook_path, data


async def main(runbook_path: Path, data: Path) -> int:
    async with Emulator(token=TOKEN, signing_secret=SECRET) as emu:
        emu.add_channel(INCIDENTS, "incidents")
        emu.add_channel("C0ONCALL", "on-call")
        emu.add_user(ALICE, "alice")
        emu.add_user("U0BOB", "bob")
        settings = Settings(rollbot_config=runbook_path, rollbot_data_dir=data,
                            slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                            slack_api_url=emu.api_url, port=0)
        async with running(settings, load_runbook(runbook_path)) as service:
            url = f"http://127.0.0.1:{service.port}/slack/events"
            print(f"rollbot serves Slack at {url}; Slack is the local emulator at "
                  f"{emu.base_url}\n", flush=True)
            sender = SlackSender(url, SECRET, emu)
            printer = LivePrinter(emu)
            print("alice: /rollback v1.2.2 v1.2.3 fails its health check", flush=True)
            sent = await sender.slash_command(ALICE, INCIDENTS,
                                              "v1.2.2 v1.2.3 fails its health check")
            print(f"   (acknowledged in {sent.elapsed * 1000:.0f} ms)", flush=True)

            def card() -> Message | None:
                return next((m for m in emu.messages(INCIDENTS)
                             if any(b.get("type") == "actions" for b in m.blocks or [])), None)
            message = await emu.wait_for(card, timeout=120)
            printer.show()
            print("\nalice clicks [Roll back to v1.2.2]\n", flush=True)
            await sender.block_action(ALICE, INCIDENTS, message.ts, Action.CONFIRM.value)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                printer.show()
                if any("Rollback completed." in m.text or "did not complete" in m.text
                       for m in emu.messages(INCIDENTS)):
                    break
                await asyncio.sleep(0.3)
            await service.front.wait_idle(60)
            printer.show()
            print("\n===== #incidents as a person reads it =====", flush=True)
            print(emu.transcript(INCIDENTS), flush=True)
            ok = any("Rollback completed." in m.text for m in emu.messages(INCIDENTS))
            return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*prepare())))
