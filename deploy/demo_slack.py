"""`./run demo`: one rollback from Slack, told as a timeline, then each channel as one reads it.

A local Slack (the emulator, real HTTP), the sandbox production host (real sshd, Docker, compose,
PostgreSQL) and rollbot serving Slack over HTTP. Production runs the bad v1.2.3; alice types
`/rollback v1.2.2 …` as a signed Slack request, reads the card and clicks it. While rollbot works,
only a timeline is printed (the live message is edited many times and would repeat itself); at
the end each channel is printed once, every message in its final state, in channel order, with
its thread indented under it. The first verification check is brought forward to seconds, so
its thread entry and its status line are part of the story.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from bot.config import EnvironmentConfig, Runbook, Settings, load_runbook
from handlers.ids import Action
from handlers.server import running
from slack_emulator import Emulator, Message, SlackSender
from slack_emulator.render import render_message
from slack_emulator.state import Workspace

ROOT = Path(__file__).resolve().parent.parent
SECRET = "demo-signing-secret-0123456789abcdef"
TOKEN = "xoxb-rollbot-demo"
INCIDENTS = "C0INCIDENTS"
ONCALL = "C0ONCALL"
ALICE = "U0ALICE"
BOB = "U0BOB"
TARGET = "v1.2.2"
REASON = "v1.2.3 fails its health check"
SLACK_TABLE = f"""
[slack]
incidents_channel = "{INCIDENTS}"
oncall_channel = "{ONCALL}"
allowed_users = ["{ALICE}", "{BOB}"]
restore_approvers = ["{BOB}"]
"""
# Production checks after 5, 30 and 120 minutes. The demo keeps only the first, after 12 s: the
# later two would outlive the demo and fire, late, into the next demo's fresh channel.
FIRST_CHECK_MINUTES = 0.2
RUN_TIMEOUT_S = 180.0  # the notice; a healthy run takes about 15 s here
AFTER_RUN_TIMEOUT_S = FIRST_CHECK_MINUTES * 60 + 60.0  # report, checklist, first check
QUIET_S = 1.5  # no Slack call for this long: rollbot is done writing
RULE, HEADER_WIDTH = "═", 72
T = TypeVar("T")


# --- rendering: a workspace in, text out (no I/O; tests/test_demo_render.py) ---------------------

def render_channels(ws: Workspace, channels: Sequence[str]) -> str:
    """Each channel under its header: messages in their final state, in order, threads indented."""
    return "\n\n".join("\n".join(render_channel(ws, channel)) for channel in channels)


def render_channel(ws: Workspace, channel: str) -> list[str]:
    """One channel: a header, then each top-level message followed by its thread replies."""
    messages = ws.visible(channel)
    present = {m.ts for m in messages if not m.is_reply}
    # A reply whose parent is gone (deleted) still happened: it stands at its own place.
    roots = [m for m in messages if not m.is_reply or m.thread_ts not in present]
    replies: dict[str, list[Message]] = {}
    for m in messages:
        if m.is_reply and m.thread_ts in present:
            replies.setdefault(str(m.thread_ts), []).append(m)
    name = ws.channels[channel].name if channel in ws.channels else channel
    count = f"{len(roots)} message{'s' * (len(roots) != 1)}"
    if n := sum(len(r) for r in replies.values()):
        count += f", {n} thread repl{'ies' if n != 1 else 'y'}"
    lines = [f"{RULE * 3} #{name} · {count} ".ljust(HEADER_WIDTH, RULE)]
    if not roots:
        return [*lines, "(nothing posted)"]
    for i, root in enumerate(sorted(roots, key=lambda m: float(m.ts))):
        if i:
            lines.append("")
        lines.extend(render_message(ws, root))
        for reply in sorted(replies.get(root.ts, []), key=lambda m: float(m.ts)):
            first, *rest = render_message(ws, reply)
            lines.append(f"    ↳ {first}")
            lines.extend(f"      {line}" for line in rest)
    return lines


# --- the story --------------------------------------------------------------------------------

class Timeline:
    """What happens, with the seconds since alice typed the command."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def restart(self) -> None:
        self._start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"  {time.monotonic() - self._start:5.1f} s  {text}", flush=True)


async def wait_until(found: Callable[[], T | None], *, timeout: float) -> T | None:
    """Poll until ``found`` returns something truthy; None if nothing came within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := found()):
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.2)
    return value


async def wait_quiet(emu: Emulator, *, quiet_s: float, timeout: float) -> None:
    """Until rollbot has made no Slack call for ``quiet_s`` seconds (at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    seen, since = len(emu.calls), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.2)
        if len(emu.calls) != seen:
            seen, since = len(emu.calls), time.monotonic()


async def production_facts(env: EnvironmentConfig) -> str:
    """What production's own endpoints answer right now, in one line."""
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            version = (await client.get(env.version_url)).text.strip()
        except httpx.HTTPError as exc:
            version = f"no answer ({type(exc).__name__})"
        try:
            health = str((await client.get(env.health_url)).status_code)
        except httpx.HTTPError as exc:
            health = f"no answer ({type(exc).__name__})"
    return f"{env.version_url} says {version}; {env.health_url} answers {health}"


def with_first_check_soon(runbook: Runbook) -> Runbook:
    """The runbook with the default environment's first verification check due in seconds."""
    name = runbook.default_environment
    env = runbook.environments[name].model_copy(
        update={"verify_after_minutes": (FIRST_CHECK_MINUTES,)})
    return runbook.model_copy(update={"environments": {**runbook.environments, name: env}})


def prepare() -> tuple[Path, Path]:
    """The sandbox's runbook plus the [slack] table; rollbot's data directory."""
    runbook_src = Path(os.environ["ROLLBOT_CONFIG"])
    data = Path(os.environ.get("ROLLBOT_DATA_DIR", ROOT / ".rollbot"))
    data.mkdir(exist_ok=True)
    runbook_path = data / "demo-rollbot.toml"
    runbook_path.write_text(runbook_src.read_text() + SLACK_TABLE)
    return runbook_path, data


def _card(emu: Emulator) -> Message | None:
    return next((m for m in emu.messages(INCIDENTS)
                 if any(b.get("type") == "actions" for b in m.blocks or [])), None)


def _notice(emu: Emulator) -> Message | None:
    return next((m for m in emu.messages(INCIDENTS, include_replies=False)
                 if "Rollback completed." in m.text or "did not complete" in m.text), None)


def _posted(emu: Emulator, starts: str) -> Message | None:
    return next((m for m in emu.messages(INCIDENTS) if m.text.startswith(starts)), None)


def _status_line(emu: Emulator) -> Message | None:
    return next((m for m in emu.messages(INCIDENTS, include_replies=False)
                 if " verification of rollback #" in m.text), None)


async def main(runbook_path: Path, data: Path) -> int:
    runbook = with_first_check_soon(load_runbook(runbook_path))
    env = runbook.environments[runbook.default_environment]
    print(f"production before: {await production_facts(env)}\n", flush=True)
    async with Emulator(token=TOKEN, signing_secret=SECRET) as emu:
        emu.add_channel(INCIDENTS, "incidents")
        emu.add_channel(ONCALL, "on-call")
        emu.add_user(ALICE, "alice")
        emu.add_user(BOB, "bob")
        settings = Settings(rollbot_config=runbook_path, rollbot_data_dir=data,
                            slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                            slack_api_url=emu.api_url, port=0)
        async with running(settings, runbook) as service:
            print(f"rollbot serves Slack at http://127.0.0.1:{service.port}/slack/events; "
                  f"Slack is the local emulator at {emu.base_url}\n", flush=True)
            ok = await tell_the_story(emu, SlackSender(
                f"http://127.0.0.1:{service.port}/slack/events", SECRET, emu))
            await wait_quiet(emu, quiet_s=QUIET_S, timeout=15)
            print(f"\n{render_channels(emu.ws, [INCIDENTS, ONCALL])}\n", flush=True)
    print(f"production after: {await production_facts(env)}", flush=True)
    return 0 if ok else 1


async def tell_the_story(emu: Emulator, sender: SlackSender) -> bool:
    """Command, card, click; then the run's milestones as they land. True when all landed."""
    timeline = Timeline()
    print(f"alice types in #incidents: /rollback {TARGET} {REASON}", flush=True)
    sent = await sender.slash_command(ALICE, INCIDENTS, f"{TARGET} {REASON}")
    timeline.say(f"rollbot acknowledges in {sent.elapsed * 1000:.0f} ms and runs pre-flight")
    card = await wait_until(lambda: _card(emu), timeout=120)
    if card is None:
        timeline.say("no card after 120 s: pre-flight did not finish (see the log above)")
        return False
    timeline.say("the pre-flight card, as alice reads it before she decides:")
    print("\n".join(f"      │ {line}" for line in render_message(emu.ws, card)), flush=True)
    label = f"Roll back to {TARGET}"
    print(f"\nalice clicks [{label}]", flush=True)
    timeline.restart()
    await sender.block_action(ALICE, INCIDENTS, card.ts, Action.CONFIRM.value)
    if await wait_until(lambda: card.edits, timeout=30):
        timeline.say("the card becomes the live message; each step's output goes in its thread")
    notice = await wait_until(lambda: _notice(emu), timeout=RUN_TIMEOUT_S)
    if notice is None:
        timeline.say(f"no stakeholder notice after {RUN_TIMEOUT_S:.0f} s: the run is stuck")
        return False
    timeline.say("the run is over; the stakeholder notice is posted in #incidents")
    if "Rollback completed." not in notice.text:
        timeline.say("the rollback did NOT complete: see the notice below")
        return False
    steps: list[tuple[str, Callable[[], object | None]]] = [
        ("the rollback report is uploaded in the run's thread", emu.files),
        ("the rollback checklist is posted in the thread, rollbot's items ticked",
         lambda: _posted(emu, "Rollback checklist, run #")),
        (f"the first verification check ran ({FIRST_CHECK_MINUTES * 60:.0f} s after the run, "
         "5 min in production): its result in the thread, a status line in #incidents",
         lambda: _status_line(emu)),
    ]
    deadline = time.monotonic() + AFTER_RUN_TIMEOUT_S
    for what, found in steps:
        if await wait_until(found, timeout=max(0.0, deadline - time.monotonic())) is None:
            timeline.say(f"still waiting, {AFTER_RUN_TIMEOUT_S:.0f} s after the run, for: {what}")
            return False
        timeline.say(what)
    return True


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*prepare())))
