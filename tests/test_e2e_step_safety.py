"""Steps that stop what they start, check what they did, and read before they lock.

On the sandbox host (real sshd, Docker, compose, PostgreSQL): a step that times out is gone from
the host's process list; a migration rollback is judged by what the migrations table says
afterwards; a restore that brings back an empty table fails; pre-flight reads the host before the
environment's lock is taken.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from bot.errors import RunLocked
from bot.model import ProcedureName, RunStatus, StepStatus
from bot.service import Rollbot
from bot.store.runs import Store
from tests.sandbox import CORRUPT_BACKUP, CURRENT_COUNTS, GOOD_BACKUP, Sandbox
from tests.test_e2e_procedures import assert_runs_v122, request

pytestmark = pytest.mark.e2e


def set_database(bot: Rollbot, **changes: Any) -> None:
    """Edit production's [database] table of the runbook, as a person would in rollbot.toml."""
    env = bot.runbook.environments["production"]
    assert env.database is not None
    changed = env.model_copy(update={"database": env.database.model_copy(update=changes)})
    bot.runbook = bot.runbook.model_copy(
        update={"environments": {**bot.runbook.environments, "production": changed}})


def applied_migrations(sb: Sandbox) -> list[str]:
    return sb.psql("SELECT name FROM migrations ORDER BY executed_at DESC").splitlines()


def step(outcome: Any, key: str) -> Any:
    return next(s for s in outcome.steps if s.key == key)


async def test_a_migration_that_runs_past_its_timeout_is_killed_on_the_host(
    production: Sandbox, rollbot: Rollbot
) -> None:
    sleeper = f"sleep 600.{secrets.randbelow(10**6):06d}"  # a migration that hangs
    set_database(rollbot, migrate_down=sleeper, restore_timeout_s=2)
    outcome = await rollbot.rollback(request(ProcedureName.MIGRATIONS))
    assert outcome.status is RunStatus.FAILED
    assert step(outcome, "migrate_down").status is StepStatus.FAILED
    assert "did not finish within 2 s and was stopped: its processes on the host were killed" \
        in outcome.message
    assert "services" in outcome.host_state
    # the message says it stopped, and it did: nothing of it still runs on the host
    assert production.processes(sleeper) == []
    assert applied_migrations(production)[0] == "003_add_orders_discount"


async def test_two_migrations_are_undone_one_migrate_down_at_a_time(
    production: Sandbox, rollbot: Rollbot
) -> None:
    before = applied_migrations(production)
    set_database(rollbot, migrations_to_undo=2)
    outcome = await rollbot.rollback(request(ProcedureName.MIGRATIONS))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert applied_migrations(production) == before[2:] == ["001_create_users"]
    down = step(outcome, "migrate_down")
    assert down.title == "Roll back the 2 newest migrations, one at a time"
    assert "003_add_orders_discount" in down.summary and "002_create_orders" in down.summary
    assert "newest migration now: " in step(outcome, "verify_migration").summary
    assert "001_create_users" in step(outcome, "verify_migration").summary
    assert_runs_v122(production)


async def test_a_migrate_down_that_changes_nothing_stops_before_the_services_start(
    production: Sandbox, rollbot: Rollbot
) -> None:
    set_database(rollbot, migrate_down="echo 'migrations are up to date'")
    outcome = await rollbot.rollback(request(ProcedureName.MIGRATIONS))
    assert outcome.status is RunStatus.FAILED
    assert "the newest migration is still" in outcome.message
    assert "003_add_orders_discount" in outcome.message
    assert "nothing was rolled back" in outcome.message
    assert step(outcome, "start_services").status is StepStatus.SKIPPED
    assert production.running_image() == ""  # stopped, as the message says


async def test_a_migrate_down_that_undoes_two_migrations_is_caught(
    production: Sandbox, rollbot: Rollbot
) -> None:
    migrate = str(production.compose_file.parent / "bin" / "migrate")
    set_database(rollbot, migrate_down=f"sh {migrate} down && sh {migrate} down")
    outcome = await rollbot.rollback(request(ProcedureName.MIGRATIONS))
    assert outcome.status is RunStatus.FAILED
    # the newest row changed, but to the wrong one: 001 is newest, 002 was expected
    assert "the newest migration is '" in outcome.message
    assert "001_create_users" in outcome.message and "002_create_orders" in outcome.message
    assert "undid more than one migration" in outcome.message
    assert step(outcome, "start_services").status is StepStatus.SKIPPED


async def test_a_restore_that_leaves_a_verified_table_empty_fails(
    production: Sandbox, rollbot: Rollbot
) -> None:
    backup = production.make_backup("azora_prod_20261127T030000.sql.gz", emptied=("orders",))
    outcome = await rollbot.rollback(request(ProcedureName.RESTORE, backup=backup.name))
    assert outcome.status is RunStatus.FAILED
    verify = step(outcome, "verify_restore")
    assert verify.status is StepStatus.FAILED
    assert "table orders is EMPTY after restoring azora_prod_20261127T030000.sql.gz" \
        in verify.error
    assert "services STOPPED" in outcome.host_state
    assert "restored from azora_prod_20261127T030000.sql.gz but missing data" \
        in outcome.host_state
    assert "azora_prod_pre-restore_" in outcome.host_state  # where the old data is
    assert production.row_counts() == {"users": CURRENT_COUNTS["users"], "orders": 0}
    assert step(outcome, "start_services").status is StepStatus.SKIPPED


async def test_preflight_reads_the_host_before_the_lock_is_taken(
    production: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    outcome = await rollbot.rollback(request(ProcedureName.RESTORE, backup=CORRUPT_BACKUP))
    assert outcome.status is RunStatus.REFUSED
    record = await store.get_run(outcome.run_id)
    assert record is not None
    reads = [a for a in await store.audit_entries(run_id=outcome.run_id)
             if a.kind == "command"]
    # the backup listing and the integrity check belong to the run, and were sent before it
    # existed (the run's row is the environment's lock)
    assert any("find " in a.command for a in reads)
    assert any("gunzip -c" in a.command for a in reads)
    assert all(a.at < record.created_at for a in reads)


async def test_a_locked_environment_refuses_after_preflight_naming_who_holds_it(
    production: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    # Another rollbot process is running alice's rollback in production.
    await store.begin_run(request(ProcedureName.SIMPLE), owner="other-host:4242")
    bob = request(ProcedureName.RESTORE, backup=GOOD_BACKUP)
    bob = type(bob)(**{**bob.__dict__, "requested_by": "bob"})
    with pytest.raises(RunLocked, match=r"started by alice"):
        await rollbot.rollback(bob)
    audit = await store.audit_entries()
    bobs = [a for a in audit if a.actor == "bob"]
    assert any(a.kind == "command" and "gunzip -c" in a.command for a in bobs)  # read first
    assert bobs[-1].kind == "refusal" and "started by alice" in bobs[-1].detail
    assert not any("DROP DATABASE" in a.command or "pre-restore" in a.command for a in bobs)
    assert production.row_counts() == CURRENT_COUNTS
    assert production.running_image() == "azora-api:v1.2.3"


async def test_production_changing_while_preflight_ran_is_refused(
    production: Sandbox, rollbot: Rollbot, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    take_lock = store.begin_run

    async def someone_fixes_it_by_hand_first(*args: Any, **kw: Any) -> int:
        # Between rollbot's reads and its lock, a person puts v1.2.2 back by hand.
        text = production.compose_file.read_text()
        production.compose_file.write_text(text.replace("azora-api:v1.2.3", "azora-api:v1.2.2"))
        await asyncio.to_thread(production.compose_up)
        return await take_lock(*args, **kw)

    monkeypatch.setattr(store, "begin_run", someone_fixes_it_by_hand_first)
    outcome = await rollbot.rollback(request(ProcedureName.SIMPLE))
    assert outcome.status is RunStatus.REFUSED
    assert "production changed while pre-flight ran: it was v1.2.3, it is now v1.2.2" \
        in outcome.message
    assert "nothing was changed" in outcome.message
    sent = [a.command for a in await store.audit_entries(run_id=outcome.run_id)]
    assert not any(" down" in c or "up -d" in c for c in sent)
