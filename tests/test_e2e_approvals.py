"""What two people approve is what runs: the shown backup and version, or a refusal.

On-call drives rollbot through the Slack emulator; the sandbox host really rolls back (or is left
untouched when rollbot refuses).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from bot.app import open_app
from bot.autorollback.deploys import DeployStore
from bot.config import Settings
from bot.model import RunStatus
from bot.store.runs import Store
from bot.terminal import cli
from handlers.ids import Action, Block, Field
from slack_emulator.state import Message
from tests.sandbox import BACKUP_COUNTS, CORRUPT_BACKUP, CURRENT_COUNTS, GOOD_BACKUP, Sandbox
from tests.slack_world import (
    ALICE,
    BOB,
    CAROL,
    INCIDENTS,
    MALLORY,
    SlackWorld,
    button_labels,
    header,
    message_text,
    slack_world,
)

pytestmark = pytest.mark.e2e

NIGHTLY = "azora_prod_20261128T020000.sql.gz"        # lands between the card and the approvals
HALF_WRITTEN = "azora_prod_20261128T010000.sql.gz"   # newer than the good one, but corrupt


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path) as w:
        yield w
        assert w.problems() == [], w.problems()


def new_backup(sb: Sandbox, name: str, *, copy_of: str, age_s: float = 0) -> Path:
    """A backup file written on the host now (a copy of a seeded one), as prod-user's dumps are."""
    dest = sb.backups / name
    shutil.copyfile(sb.backups / copy_of, dest)
    when = time.time() - age_s
    os.utime(dest, (when, when))
    return dest


async def confirm_and_approve(world: SlackWorld, card: Message, *, confirmer: str,
                              approver: str) -> None:
    """The restore's two people: the database name typed in the modal, then Approve restore."""
    await world.click(confirmer, card, Action.CONFIRM_RESTORE)
    view = await world.emu.wait_for(
        lambda: next(iter(world.emu.views(confirmer, open_only=True)), None))
    typed = await world.sender.view_submission(confirmer, view.id, {
        Block.DB_NAME.value: {Field.DB_NAME.value: "azora_prod"}})
    assert typed.status == 200
    waiting = await world.wait_message(
        lambda m: m.ts == card.ts and "Waiting for a second approver" in message_text(m))
    await world.click(approver, waiting, Action.APPROVE_RESTORE)


async def final(world: SlackWorld, ts: str, prefix: str) -> str:
    try:
        msg = await world.wait_message(lambda m: m.ts == ts and header(m).startswith(prefix),
                                       timeout=180)
    except TimeoutError:
        now = [message_text(m) for m in world.emu.messages(INCIDENTS) if m.ts == ts]
        raise AssertionError(f"the card never reached '{prefix}'; it says: {now}") from None
    return message_text(msg)


async def test_a_restore_restores_the_backup_on_the_card_though_a_newer_one_landed(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    new_backup(production, HALF_WRITTEN, copy_of=CORRUPT_BACKUP, age_s=600)
    await world.command(BOB, "v1.2.2 --restore orders corrupted")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    shown = message_text(card)
    # "newest backup" skipped the corrupt newer file, and says so on the card
    assert f"skipped {HALF_WRITTEN}: gunzip failed: the file is damaged or cut short" in shown
    assert f"restoring `{GOOD_BACKUP}`" in shown
    # the nightly dump (of the corrupted database, perhaps) lands while people confirm
    new_backup(production, NIGHTLY, copy_of=GOOD_BACKUP)
    await confirm_and_approve(world, card, confirmer=BOB, approver=CAROL)
    text = await final(world, card.ts, "✅ Rolled back")
    assert f"on data restored from {GOOD_BACKUP}" in text
    assert production.row_counts() == BACKUP_COUNTS
    [run] = await store.history()
    assert run.backup == GOOD_BACKUP
    sent = [a.command for a in await store.audit_entries(run_id=run.id) if a.kind == "command"]
    restore = next(c for c in sent if 'echo "COMMIT;"' in c)
    assert f"/{GOOD_BACKUP}" in restore
    assert not any(NIGHTLY in c for c in sent)


@pytest.mark.parametrize(("change", "says"), [
    ("touched", f"backup {GOOD_BACKUP} changed since the card was approved (modified "),
    ("removed", f"backup {GOOD_BACKUP} is gone since the card was approved"),
])
async def test_a_restore_refuses_when_the_shown_backup_changed_and_stops_nothing(
    world: SlackWorld, production: Sandbox, store: Store, change: str, says: str
) -> None:
    await world.command(BOB, "v1.2.2 --restore orders corrupted")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    assert f"restoring `{GOOD_BACKUP}`" in message_text(card)
    shown = production.backups / GOOD_BACKUP
    if change == "touched":
        os.utime(shown, None)  # rewritten in place: same name, another file
    else:
        shown.unlink()
    await confirm_and_approve(world, card, confirmer=BOB, approver=CAROL)
    text = await final(world, card.ts, "🚫")
    assert says in text
    assert "nothing was run; type the command again for a fresh card" in text
    # nothing destructive ran: production still runs what it ran, with all its data
    assert production.running_image() == "azora-api:v1.2.3"
    assert production.row_counts() == CURRENT_COUNTS
    [run] = await store.history()
    assert run.status is RunStatus.REFUSED
    entries = await store.audit_entries(run_id=run.id)
    assert not any(" down" in a.command or "DROP" in a.command for a in entries)
    assert any(a.kind == "refusal" and says in a.detail for a in entries)


async def test_previous_skips_a_quarantined_version_on_the_card_plan_and_run(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    # v1.2.2 was rolled back earlier and quarantined
    await DeployStore(store.pool).quarantine(environment="production", version="v1.2.2",
                                             by=BOB, reason="drops orders", run_id=None)
    await world.command(ALICE, "plan previous")
    plan = await world.emu.wait_for(lambda: next(
        (m for m in world.emu.ephemerals(INCIDENTS, ALICE) if "Plan:" in message_text(m)),
        None), timeout=60)
    skipped = f"skipped v1.2.2: quarantined by {BOB} on "
    assert "v1.2.3 → v1.2.1" in message_text(plan) and skipped in message_text(plan)
    await world.command(ALICE, "previous site is down")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.1")
    assert skipped in message_text(card) and "(drops orders)" in message_text(card)
    await world.click(ALICE, card, Action.CONFIRM)
    await final(world, card.ts, "✅ Rolled back production to v1.2.1")
    assert production.running_image() == "azora-api:v1.2.1"
    [run] = await store.history()
    assert (run.from_version, run.to_version) == ("v1.2.3", "v1.2.1")


async def test_a_card_for_previous_refuses_when_previous_now_means_another_version(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    await world.command(ALICE, "previous site is down")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    # before anyone confirms, v1.2.2 is quarantined: "previous" would now be v1.2.1
    await DeployStore(store.pool).quarantine(environment="production", version="v1.2.2",
                                             by=BOB, reason="drops orders", run_id=None)
    await world.click(ALICE, card, Action.CONFIRM)
    text = await final(world, card.ts, "🚫")
    assert ("the card approved v1.2.2, but the target now resolves to v1.2.1" in text
            and "nothing was run; type the command again for a fresh card" in text)
    assert production.running_image() == "azora-api:v1.2.3"
    [run] = await store.history()
    assert run.status is RunStatus.REFUSED
    assert not any(a.kind == "command" and " down" in a.command
                   for a in await store.audit_entries(run_id=run.id))


async def test_a_migration_rollback_names_the_migration_and_needs_a_second_person(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    await world.command(BOB, "v1.2.2 --migrations the new column breaks checkout")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    text = message_text(card)
    assert "`migrate_down` undoes `003_add_orders_discount" in text
    assert "coordinate with the DBA" in text
    await world.click(BOB, card, Action.CONFIRM)
    waiting = await world.wait_message(
        lambda m: m.ts == card.ts and "Waiting for a second approver" in message_text(m))
    assert button_labels(waiting)[0] == "Approve migration rollback"
    # the requester who confirmed cannot approve too; nothing has run
    await world.click(BOB, waiting, Action.APPROVE_RESTORE)
    await world.emu.wait_for(lambda: any(
        "A migration rollback needs a second person" in message_text(m)
        for m in world.emu.ephemerals(INCIDENTS, BOB)))
    assert await store.history() == []
    assert "003_add_orders_discount" in production.psql("SELECT name FROM migrations")
    await world.click(CAROL, waiting, Action.APPROVE_RESTORE)
    done = await final(world, card.ts, "✅ Rolled back")
    assert f"<@{BOB}>, <@{CAROL}>" in done
    assert "003_add_orders_discount" not in production.psql("SELECT name FROM migrations")
    assert production.running_image() == "azora-api:v1.2.2"


async def test_a_migration_applied_after_the_card_makes_the_run_refuse(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    await world.command(ALICE, "v1.2.2 --migrations checkout fails")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    assert "`migrate_down` undoes `003_add_orders_discount" in message_text(card)
    # CI applies another migration before the second person approves
    production.psql("INSERT INTO migrations (name, executed_at) VALUES "
                    "('004_add_orders_index', now())")
    await world.click(ALICE, card, Action.CONFIRM)
    waiting = await world.wait_message(
        lambda m: m.ts == card.ts and "Waiting for a second approver" in message_text(m))
    await world.click(BOB, waiting, Action.APPROVE_RESTORE)
    text = await final(world, card.ts, "🚫")
    assert "the card named 003_add_orders_discount" in text
    assert "migrate_down would now undo 004_add_orders_index" in text
    names = production.psql("SELECT name FROM migrations")
    assert "003_add_orders_discount" in names and "004_add_orders_index" in names
    assert production.running_image() == "azora-api:v1.2.3"


async def test_only_allowed_people_set_the_eta(world: SlackWorld, store: Store) -> None:
    await world.command(ALICE, "v1.2.2")
    card = await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    await world.click(ALICE, card, Action.CONFIRM)
    notice = await world.wait_message(lambda m: "Rollback completed." in m.text, timeout=120)
    await world.click(MALLORY, notice, Action.SET_ETA)
    await world.emu.wait_for(lambda: any("cannot set the fix ETA" in message_text(m)
                                         for m in world.emu.ephemerals(INCIDENTS, MALLORY)))
    assert list(world.emu.views(MALLORY, open_only=True)) == []
    # an allowed person's modal, submitted by someone else, is refused in the modal itself
    await world.click(BOB, notice, Action.SET_ETA)
    view = await world.emu.wait_for(lambda: next(iter(world.emu.views(BOB, open_only=True)),
                                                 None))
    forged = await world.sender.view_submission(MALLORY, view.id, {
        Block.ETA.value: {Field.ETA.value: "never"}})
    assert forged.json["response_action"] == "errors"
    assert "cannot set the fix ETA" in forged.json["errors"][Block.ETA.value]
    assert "ETA for fix: TBD" in (await world.wait_message(lambda m: m.ts == notice.ts)).text
    refusals = [a for a in await store.audit_entries() if a.kind == "refusal"]
    assert sum(a.actor == MALLORY and "fix ETA" in a.detail for a in refusals) == 2


async def run_cli(store: Store, production: Sandbox, *argv: str) -> tuple[int, str]:
    """`rollbot ARGV` in this process (its terminal answers are patched by the test)."""
    out = io.StringIO()
    settings = Settings(database_url=store.dsn, rollbot_config=production.runbook)
    async with open_app(settings) as app:
        status = await cli._dispatch(app, cli._parser().parse_args(list(argv)),
                                     Console(file=out, width=200))
    return status, out.getvalue()


async def test_the_cli_plan_names_skipped_versions_and_its_confirmation_pins_the_backup(
    production: Sandbox, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the report goes to ./incident-logs
    await DeployStore(store.pool).quarantine(environment="production", version="v1.2.2",
                                             by="cli:bob", reason="drops orders", run_id=None)
    status, shown = await run_cli(store, production, "plan", "--as", "alice")
    assert status == 0, shown
    assert "v1.2.3 → v1.2.1" in shown
    assert "skipped v1.2.2: quarantined by cli:bob on " in shown and "(drops orders)" in shown

    def confirm(console: Console, request: object, database: str | None) -> bool:
        # while the person reads the plan and types the database name, a newer dump lands
        new_backup(production, NIGHTLY, copy_of=GOOD_BACKUP)
        return True
    monkeypatch.setattr(cli, "_confirm", confirm)
    status, said = await run_cli(store, production, "rollback", "v1.2.2", "--procedure",
                                 "restore", "--as", "alice")
    assert status == 0, said
    assert f"Backup exists: {GOOD_BACKUP}" in said
    [run] = await store.history()
    assert run.status is RunStatus.SUCCEEDED and run.backup == GOOD_BACKUP
    sent = [a.command for a in await store.audit_entries(run_id=run.id)]
    assert not any(NIGHTLY in c for c in sent)
