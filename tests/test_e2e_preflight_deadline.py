"""A pre-flight that stalls is refused at its deadline, naming the check it was waiting for.

The stalled read here is real: the runbook's `migrate_status` sleeps on the sandbox host, over the
real SSH connection. The card, the live message and the audit log say which check and which host
stalled; nothing is changed, and the sleeping command is killed on the host.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.config import EnvironmentConfig, Runbook
from bot.model import ProcedureName, RunStatus
from bot.store.runs import Store
from tests.sandbox import CURRENT_COUNTS, Sandbox
from tests.slack_world import (
    BOB,
    CAROL,
    INCIDENTS,
    SlackWorld,
    button_labels,
    message_text,
    slack_world,
)
from tests.test_e2e_approvals import confirm_and_approve, final
from tests.test_e2e_preflight import assert_refused_before_any_step, rollback_with

pytestmark = pytest.mark.e2e

STALL = "sleep 613"  # a number no other command on the host sleeps for
HOST = r"prod-user@127\.0\.0\.1:\d+"


def stalling_migrate_status(deadline_s: float) -> Callable[[EnvironmentConfig], EnvironmentConfig]:
    """production, with a `migrate_status` that hangs, and a pre-flight deadline."""
    def change(env: EnvironmentConfig) -> EnvironmentConfig:
        assert env.database is not None and env.database.migrate_status
        db = env.database.model_copy(
            update={"migrate_status": f"{STALL}; {env.database.migrate_status}"})
        timeouts = env.timeouts.model_copy(update={"preflight_s": deadline_s})
        return env.model_copy(update={"database": db, "timeouts": timeouts})
    return change


def runbook_with(migrate_status: Callable[[str], str], deadline_s: float
                 ) -> Callable[[str], str]:
    """The sandbox runbook text with another `migrate_status` and a pre-flight deadline."""
    def edit(text: str) -> str:
        text, n = re.subn(r'^migrate_status = "(.*)"$',
                          lambda m: f'migrate_status = "{migrate_status(m.group(1))}"', text,
                          count=1, flags=re.M)
        assert n == 1
        return text + f"\n[environments.production.timeouts]\npreflight_s = {deadline_s:g}\n"
    return edit


async def refusal_audited(store: Store, says: str, timeout_s: float = 30) -> bool:
    """Whether a refusal saying ``says`` lands in the audit log (the card is posted first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(a.kind == "refusal" and says in a.detail for a in await store.audit_entries()):
            return True
        await asyncio.sleep(0.2)
    return False


def stalled_commands_left() -> list[str]:
    out = subprocess.run(["pgrep", "-a", "-f", STALL], capture_output=True, text=True,
                         timeout=10).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


def wait_until_killed(timeout_s: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := stalled_commands_left()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


async def test_a_run_whose_pre_flight_stalls_is_refused_at_the_deadline_naming_the_check(
    production: Sandbox, runbook: Runbook, store: Store
) -> None:
    started = time.monotonic()
    outcome = await rollback_with(runbook, store, stalling_migrate_status(3),
                                  ProcedureName.RESTORE)
    took = time.monotonic() - started
    await assert_refused_before_any_step(outcome, store, production)
    assert re.search(r"pre-flight did not finish in 3 s: still waiting for 'Migrate status' on "
                     + HOST, outcome.message), outcome.message
    assert took < 30  # the deadline, not the command's own 120 s timeout
    audit = await store.audit_entries(run_id=outcome.run_id)
    assert any(a.kind == "refusal" and "still waiting for 'Migrate status'" in a.detail
               for a in audit)
    assert wait_until_killed() == []  # nothing of the stalled read is left on the host


@pytest.fixture
async def stalling_world(production: Sandbox, store: Store, tmp_path: Path
                         ) -> AsyncIterator[SlackWorld]:
    """Slack, with a runbook whose `migrate_status` sleeps 613 s and a 3 s pre-flight deadline."""
    edit = runbook_with(lambda cmd: f"{STALL}; {cmd}", 3)
    async with slack_world(production, store.dsn, tmp_path, runbook_text=edit) as w:
        yield w
        assert w.problems() == [], w.problems()


async def test_a_card_whose_pre_flight_stalls_says_which_check_and_offers_no_button(
    stalling_world: SlackWorld, production: Sandbox, store: Store
) -> None:
    world = stalling_world
    await world.command(BOB, "v1.2.2 --restore orders corrupted")
    card = await world.wait_card("Rollback production: ? → v1.2.2")
    text = message_text(card)
    assert re.search("Pre-flight finished.*pre-flight did not finish in 3 s: still waiting for "
                     "'Migrate status' on " + HOST, text), text
    assert not any(label.startswith("Restore") for label in button_labels(card))
    assert await refusal_audited(store, "still waiting for 'Migrate status'")
    assert await store.history() == []  # a card is not a run
    assert wait_until_killed() == []


@pytest.fixture
async def held_world(production: Sandbox, store: Store, tmp_path: Path
                     ) -> AsyncIterator[SlackWorld]:
    """Slack, with a `migrate_status` that waits while a file exists in the backups dir."""
    hold = production.backups / ".rollbot-test-hold-preflight"
    edit = runbook_with(lambda cmd: f"while [ -e {hold} ]; do sleep 0.2; done; {cmd}", 10)
    try:
        async with slack_world(production, store.dsn, tmp_path, runbook_text=edit) as w:
            yield w
            assert w.problems() == [], w.problems()
    finally:
        hold.unlink(missing_ok=True)


async def test_approved_restore_whose_pre_flight_stalls_is_refused_on_its_live_message(
    held_world: SlackWorld, production: Sandbox, store: Store
) -> None:
    world = held_world
    await world.command(BOB, "v1.2.2 --restore orders corrupted")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    # the card's own pre-flight passed: it offers the restore
    assert "Restore database and roll back to v1.2.2" in button_labels(card)
    # between the card and the approvals, the host starts answering migrate_status no more
    (production.backups / ".rollbot-test-hold-preflight").touch()
    await confirm_and_approve(world, card, confirmer=BOB, approver=CAROL)
    text = await final(world, card.ts, "🚫")
    assert "Refused before any step, nothing was changed" in text
    assert re.search("pre-flight did not finish in 10 s: still waiting for 'Migrate status' on "
                     + HOST, text), text
    [shown] = [m for m in world.emu.messages(INCIDENTS) if m.ts == card.ts]
    assert "Cancel run" not in button_labels(shown)
    assert production.running_image() == "azora-api:v1.2.3"
    assert production.row_counts() == CURRENT_COUNTS
    [run] = await store.history()
    assert run.status is RunStatus.REFUSED
    entries = await store.audit_entries(run_id=run.id)
    assert any(a.kind == "refusal" and "still waiting for 'Migrate status'" in a.detail
               for a in entries)
    assert not any(" down" in a.command or "DROP" in a.command for a in entries)
