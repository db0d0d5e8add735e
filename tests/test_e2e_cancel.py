"""On-call cancels a rollback after the services were stopped: production is DOWN, and says so.

The live message offers Resume rollback and Put back what ran before; the first click of an
allowed user decides, and the sandbox host really ends at v1.2.2 (Resume) or back at v1.2.3
(Put back). The terminal offers the same after a Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.config import load_runbook
from bot.edges.http import HttpxProbe
from bot.engine import Run
from bot.events import RunEvent, StepStarted
from bot.model import ProcedureName, RollbackRequest, RunStatus, StepStatus
from bot.recovery.offers import RecoveryChoice
from bot.recovery.runs import Recoveries
from bot.service import Rollbot
from bot.store.runs import Store
from bot.versions import parse_version
from handlers.ids import Action
from tests.sandbox import BACKUP_COUNTS, GOOD_BACKUP, Sandbox
from tests.slack_world import (
    ALICE,
    BOB,
    INCIDENTS,
    MALLORY,
    SlackWorld,
    button_labels,
    header,
    message_text,
    slack_world,
)
from tests.test_e2e_slack import SLOW_COMPOSE, roll_back_by_slack

pytestmark = pytest.mark.e2e

# What ran before is the unhealthy v1.2.3: a put-back's health check need not wait 30 s for it.
QUICK_HEALTH = "\n[environments.production.timeouts]\nemergency_health_s = 4\n"


def slow_and_quick(text: str) -> str:
    """Every docker-compose call takes 3 s longer (time to click), health gives up sooner."""
    assert 'command = "docker-compose"' in text
    return text.replace('command = "docker-compose"', SLOW_COMPOSE) + QUICK_HEALTH


@pytest.fixture
async def world(production: Sandbox, store: Store, tmp_path: Path) -> AsyncIterator[SlackWorld]:
    async with slack_world(production, store.dsn, tmp_path, runbook_text=slow_and_quick) as w:
        yield w
        assert w.problems() == [], w.problems()


async def cancel_after_stop(world: SlackWorld) -> str:
    """Alice rolls back; Bob cancels while "Stop services" runs. Returns the live message ts."""
    _, ts = await roll_back_by_slack(world)
    live = await world.wait_message(
        lambda m: m.ts == ts and "⏳ 2. Stop services" in message_text(m))
    await world.click(BOB, live, Action.CANCEL_RUN)
    return ts


async def test_cancel_after_stop_shows_production_down_and_resume_finishes_the_rollback(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    ts = await cancel_after_stop(world)
    down = await world.wait_message(lambda m: m.ts == ts and header(m).startswith("🔴"),
                                    timeout=120)
    text = message_text(down)
    assert header(down) == "🔴 Rollback cancelled: production is DOWN"
    assert ("Production is DOWN.* The host is left: services STOPPED; compose file still names "
            "v1.2.3") in text
    assert button_labels(down) == ["Resume rollback", "Put back what ran before"]
    assert production.running_image() == ""  # really down

    # someone not on the list cannot choose; it is refused, audited, and changes nothing
    await world.click(MALLORY, down, Action.RECOVERY_RESUME)
    await world.emu.wait_for(lambda: any("not on rollbot's list" in message_text(m)
                                         for m in world.emu.ephemerals(INCIDENTS, MALLORY)))

    # Alice and Bob click at once, and Slack retries Alice's click: one resumed run
    first, second = await asyncio.gather(world.click(ALICE, down, Action.RECOVERY_RESUME),
                                         world.click(BOB, down, Action.RECOVERY_RESUME))
    retried = await world.sender.retry(first.request, retry_num=1, retry_reason="http_timeout")
    assert all(r.status == 200 for r in (first, second, retried))
    resumed = await world.wait_message(
        lambda m: m.ts != ts and header(m).startswith("✅ Rolled back production to v1.2.2"),
        timeout=120)
    steps = message_text(resumed)
    assert "Stop services" not in steps  # done by the cancelled run, not repeated
    assert "✅ 1. Switch compose file to v1.2.2" in steps
    assert "after run #1 was cancelled" in steps
    assert production.running_image() == "azora-api:v1.2.2"
    told = world.emu.ephemerals(INCIDENTS, ALICE) + world.emu.ephemerals(INCIDENTS, BOB)
    assert any("already chose “Resume rollback” for run #1" in message_text(m) for m in told)
    chosen = await world.wait_message(lambda m: m.ts == ts and "chose *Resume rollback*"
                                      in message_text(m))
    assert button_labels(chosen) == []  # the choice is made: no buttons left to click

    await world.service.front.wait_idle(60)
    runs = await store.history()
    assert [(r.id, r.status) for r in runs] == [(2, RunStatus.SUCCEEDED),
                                                (1, RunStatus.CANCELLED)]
    assert await store.pool.fetchval("SELECT continues_run FROM runs WHERE id = 2") == 1
    audit = await store.audit_entries()
    assert sum(a.kind == "recovery" for a in audit) == 1
    assert any(a.kind == "refusal" and a.actor == MALLORY for a in audit)
    assert any(a.kind == "refusal" and "already chose" in a.detail for a in audit)
    # each run's notice carries its metadata: the cancelled one failed, the resumed one completed
    notices = {m.metadata["event_payload"]["run_id"]: m.metadata
               for m in world.emu.messages(INCIDENTS) if m.metadata}
    assert notices[1]["event_type"] == "rollback_failed"
    assert notices[1]["event_payload"]["outcome"] == "cancelled"
    assert notices[2]["event_type"] == "rollback_completed"
    assert notices[2]["event_payload"]["live_message_url"] == (
        f"https://azora.slack.com/archives/{INCIDENTS}/p{resumed.ts.replace('.', '')}")


async def test_put_back_starts_what_ran_before_and_says_it_is_unhealthy(
    world: SlackWorld, production: Sandbox, store: Store
) -> None:
    ts = await cancel_after_stop(world)
    down = await world.wait_message(lambda m: m.ts == ts and header(m).startswith("🔴"),
                                    timeout=120)
    await world.click(BOB, down, Action.RECOVERY_PUT_BACK)
    back = await world.wait_message(
        lambda m: m.ts != ts and header(m).startswith("⚠️ v1.2.3 is back up in production but "
                                                      "NOT healthy"), timeout=120)
    assert "v1.2.3 (all services running) but NOT healthy" in message_text(back)
    assert button_labels(back) == ["Roll back to v1.2.2 again"]
    assert production.running_image() == "azora-api:v1.2.3"
    assert "azora-api:v1.2.3" in production.compose_file.read_text()

    # a second click on the old message does nothing: its buttons are gone
    old = await world.wait_message(lambda m: m.ts == ts and "chose *Put back what ran before*"
                                   in message_text(m))
    assert button_labels(old) == []
    # and roll back again opens a fresh card, nothing runs by itself
    await world.click(ALICE, back, Action.RECOVERY_AGAIN)
    await world.wait_card("Rollback production: v1.2.3 → v1.2.2")
    await world.service.front.wait_idle(60)
    runs = await store.history()
    assert [(r.procedure, r.status) for r in runs] == [
        (ProcedureName.PUT_BACK, RunStatus.FAILED), (ProcedureName.SIMPLE, RunStatus.CANCELLED)]
    # a put-back is not a rollback: v1.2.3 is not quarantined for it, no checks are scheduled
    assert await store.pool.fetchval("SELECT count(*) FROM quarantine") == 0


async def test_put_back_restores_the_kept_compose_file_copy(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    """Cancelled right after the compose file was switched: Put back brings v1.2.3's file back."""
    runbook_path = tmp_path / "rollbot.toml"
    runbook_path.write_text(production.runbook.read_text() + QUICK_HEALTH)
    async with httpx.AsyncClient() as client:
        rollbot = Rollbot(runbook=load_runbook(runbook_path), store=store,
                          probe=HttpxProbe(client))
        runs: list[Run] = []

        async def cancel_during_switch(event: RunEvent) -> None:
            # Bob presses Cancel while the compose file is being switched.
            if isinstance(event, StepStarted) and event.step.key == "switch_version":
                runs[0].cancel("bob")

        outcome = await rollbot.rollback(
            RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                            target=parse_version("v1.2.2"), requested_by="alice"),
            observers=[cancel_during_switch], on_run=runs.append)
        assert outcome.status is RunStatus.CANCELLED
        assert outcome.host_state == "services STOPPED; compose file names v1.2.2"
        assert "azora-api:v1.2.2" in production.compose_file.read_text()
        claim = await Recoveries(rollbot).choose(outcome.run_id, choice=RecoveryChoice.PUT_BACK,
                                              by="bob")
        assert claim.moved and claim.offer is not None
        again = await Recoveries(rollbot).choose(outcome.run_id, choice=RecoveryChoice.RESUME,
                                              by="alice")
        assert not again.moved and "bob already chose" in again.reason
        back = await Recoveries(rollbot).recover(claim.offer, by="bob")
    assert back.status is RunStatus.FAILED  # v1.2.3 is back, and as unhealthy as before
    assert back.host_state == "api is back up on v1.2.3 (all services running) but NOT healthy"
    assert "azora-api:v1.2.3" in production.compose_file.read_text()
    assert production.running_image() == "azora-api:v1.2.3"
    steps = {s.key: s.status for s in back.steps}
    assert steps["put_back_compose"] is StepStatus.SUCCEEDED
    assert steps["confirm_services"] is StepStatus.SUCCEEDED
    assert steps["wait_healthy"] is StepStatus.FAILED


def rollbot_cli(sb: Sandbox, dsn: str, runbook: Path, *args: str, cwd: Path
                ) -> subprocess.Popen[str]:
    env = {**os.environ, "ROLLBOT_CONFIG": str(runbook), "DATABASE_URL": dsn,
           "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bot", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)


def test_ctrl_c_after_stop_prints_resume_and_put_back_and_resume_finishes(
    production: Sandbox, store: Store, tmp_path: Path
) -> None:
    runbook = tmp_path / "rollbot.toml"
    runbook.write_text(slow_and_quick(production.runbook.read_text()))
    run = rollbot_cli(production, store.dsn, runbook, "rollback", "v1.2.2", "--yes",
                      "--as", "alice", cwd=tmp_path)
    assert run.stdout is not None
    seen = []
    for line in run.stdout:
        seen.append(line)
        if "▶ [2/7] Stop services" in line:
            run.send_signal(signal.SIGINT)  # the first Ctrl-C: stop before the next step
            break
    rest, _ = run.communicate(timeout=120)
    out = "".join(seen) + rest
    assert run.returncode == 1, out
    assert "Production is DOWN: services STOPPED; compose file still names v1.2.3." in out
    assert "rollbot resume 1" in out and "rollbot put-back 1" in out
    assert production.running_image() == ""

    resume = rollbot_cli(production, store.dsn, runbook, "resume", "1", "--yes", "--as", "bob",
                         cwd=tmp_path)
    done, _ = resume.communicate(timeout=300)
    assert resume.returncode == 0, done
    assert "Switch compose file to v1.2.2" in done and "Stop services" not in done
    assert production.running_image() == "azora-api:v1.2.2"
    twice = rollbot_cli(production, store.dsn, runbook, "put-back", "1", "--yes",
                        cwd=tmp_path)
    said, _ = twice.communicate(timeout=120)
    assert twice.returncode == 1
    assert "cli:bob already chose “Resume rollback” for run #1" in said


async def test_a_restore_cancelled_after_the_drop_resumes_only_behind_its_safeguards(
    production: Sandbox, store: Store, rollbot: Rollbot
) -> None:
    """The database is gone when the cancel lands: Resume verifies again, then restores."""
    runs: list[Run] = []

    async def cancel_at_drop(event: RunEvent) -> None:
        if isinstance(event, StepStarted) and event.step.key == "drop_database":
            runs[0].cancel("bob")

    outcome = await rollbot.rollback(
        RollbackRequest(environment="production", procedure=ProcedureName.RESTORE,
                        target=parse_version("v1.2.2"), requested_by="alice",
                        backup=GOOD_BACKUP, approved_by=("bob", "carol")),
        observers=[cancel_at_drop], on_run=runs.append)
    assert outcome.status is RunStatus.CANCELLED
    assert "DROPPED" in outcome.host_state or "EMPTY" in outcome.host_state
    put_back = await Recoveries(rollbot).choose(outcome.run_id, choice=RecoveryChoice.PUT_BACK,
                                             by="bob")
    assert not put_back.moved and "dropped the database" in put_back.reason
    claim = await Recoveries(rollbot).choose(outcome.run_id, choice=RecoveryChoice.RESUME,
                                          by="bob")
    assert claim.moved and claim.offer is not None
    resumed = await Recoveries(rollbot).recover(claim.offer, by="bob")
    assert resumed.status is RunStatus.SUCCEEDED, resumed.message
    keys = [s.key for s in resumed.steps]
    assert keys[:2] == ["verify_backup", "verify_safety_backup"]
    assert "drop_database" not in keys and "stop_services" not in keys
    assert production.row_counts() == BACKUP_COUNTS
    assert production.running_image() == "azora-api:v1.2.2"
    sent = [a.command for a in await store.audit_entries(run_id=resumed.run_id)
            if a.kind == "command"]
    safety = next(i for i, c in enumerate(sent) if "_pre-restore_" in c and "gunzip -t" in c)
    create = next(i for i, c in enumerate(sent) if "CREATE DATABASE" in c)
    assert safety < create  # the kept safety backup was verified in this run, before CREATE
