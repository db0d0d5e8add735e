"""A run cancelled with production down: the offer, one choice, and what Resume runs again."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.config import load_runbook
from bot.engine import Run
from bot.errors import CommandFailed
from bot.events import RunFinished
from bot.model import (
    ProcedureName,
    RollbackRequest,
    RunOutcome,
    RunStatus,
    StepResult,
    StepStatus,
)
from bot.procedures.base import Procedure, RunFacts, StepContext
from bot.procedures.catalog import ProcedureInputs, build
from bot.procedures.put_back import put_back_procedure
from bot.procedures.resume import resume_procedure
from bot.recovery.offers import (
    RecoveryChoice,
    RecoveryOffer,
    left_down,
    offer_recorder,
    put_back_refusal,
)
from bot.recovery.store import RecoveryStore
from bot.store.runs import Store
from tests.test_procedures import BACKUP

ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]
INPUTS = ProcedureInputs(env=ENV, current="v1.2.3", target="v1.2.2", epoch=1764200000,
                         backup=BACKUP)
NOW = datetime(2026, 11, 28, 3, tzinfo=UTC)


def done(*keys: str) -> tuple[StepResult, ...]:
    return tuple(StepResult(key=k, title=k, status=StepStatus.SUCCEEDED, started_at=NOW,
                            finished_at=NOW) for k in keys)


def offer(procedure: ProcedureName, *done_steps: str, run_id: int = 12,
          facts: RunFacts | None = None, **kw: Any) -> RecoveryOffer:
    return RecoveryOffer(
        run_id=run_id, environment="production", procedure=procedure, from_version="v1.2.3",
        to_version="v1.2.2", backup=BACKUP.name, backup_size=BACKUP.size,
        backup_modified=BACKUP.modified, done_steps=done_steps,
        host_state="services STOPPED; compose file still names v1.2.3",
        facts=json.dumps((facts or RunFacts()).__dict__),
        put_back_refusal=put_back_refusal(done_steps, run_id=run_id, from_version="v1.2.3"),
        **kw)


def resumed(procedure: ProcedureName, *done_steps: str, **kw: Any) -> Procedure:
    return resume_procedure(build(procedure, INPUTS), offer(procedure, *done_steps, **kw))


def test_production_is_down_between_stop_and_start_only() -> None:
    assert not left_down(done("check_current"))
    assert left_down(done("check_current", "stop_services"))
    assert left_down(done("check_current", "stop_services", "switch_version"))
    assert not left_down(done("stop_services", "switch_version", "start_services"))
    assert left_down(done(), started_down=True)  # a continuation starts with it down


def test_resume_of_a_simple_rollback_starts_where_it_stopped() -> None:
    after_stop = resumed(ProcedureName.SIMPLE, "check_current", "stop_services")
    assert [s.key for s in after_stop.steps] == [
        "switch_version", "start_services", "wait_healthy", "verify_version", "confirm_services"]
    assert after_stop.initial_state == "services STOPPED; compose file still names v1.2.3"
    after_switch = resumed(ProcedureName.SIMPLE, "check_current", "stop_services",
                           "switch_version")
    # switching again would overwrite the kept copy of the v1.2.3 file with a v1.2.2 one
    assert after_switch.steps[0].key == "start_services"


def test_resume_never_rolls_back_a_second_migration() -> None:
    steps = [s.key for s in resumed(ProcedureName.MIGRATIONS, "check_current",
                                    "verify_backup_exists", "stop_services", "migration_status",
                                    "migrate_down").steps]
    assert steps[0] == "verify_migration"  # compares with the recorded "before" row
    assert "migrate_down" not in steps and "migration_status" not in steps


def test_resumed_restore_before_the_drop_verifies_and_backs_up_again() -> None:
    steps = [s.key for s in resumed(ProcedureName.RESTORE, "check_current", "verify_backup",
                                    "stop_services", "safety_backup").steps]
    assert steps[:4] == ["verify_backup", "safety_backup", "drop_database", "create_database"]


def test_resumed_restore_after_the_drop_verifies_the_kept_safety_backup() -> None:
    facts = RunFacts(safety_backup="/backups/azora_prod_pre-restore_1764200000.sql.gz")
    proc = resumed(ProcedureName.RESTORE, "check_current", "verify_backup", "stop_services",
                   "safety_backup", "drop_database", facts=facts)
    steps = [s.key for s in proc.steps]
    assert steps[:4] == ["verify_backup", "verify_safety_backup", "create_database",
                         "restore_backup"]
    assert "drop_database" not in steps
    assert "azora_prod_pre-restore_1764200000.sql.gz" in proc.steps[1].shows[0]


def _ctx() -> StepContext:
    none: Any = None
    return StepContext(host=none, docker=none, probe=none, env=ENV, current="v1.2.3",
                       target="v1.2.2", facts=RunFacts(), emit=lambda _l: None)


async def _run(proc: Procedure, fail: str = "") -> tuple[RunOutcome, list[str]]:
    """Run ``proc`` through the engine with every action replaced by a recorder."""
    log: list[str] = []

    def fake(key: str) -> Any:
        async def action(ctx: StepContext) -> str:
            log.append(key)
            if key == fail:
                raise CommandFailed("gunzip: unexpected end of file", exit_status=1,
                                    output_tail="")
            return "ok"
        return action

    steps = tuple(replace(s, action=fake(s.key)) for s in proc.steps)
    run = Run(run_id=13, request=RollbackRequest(environment="production",
                                                 procedure=proc.name, target=None,
                                                 requested_by="bob"),
              procedure=replace(proc, steps=steps), context=_ctx(), checks=(), observers=[])
    return await run.execute(), log


async def test_a_resumed_restore_reaches_create_only_with_both_safeguards_in_this_run() -> None:
    facts = RunFacts(safety_backup="/backups/azora_prod_pre-restore_1764200000.sql.gz")
    proc = resumed(ProcedureName.RESTORE, "check_current", "verify_backup", "stop_services",
                   "safety_backup", "drop_database", facts=facts)
    outcome, log = await _run(proc)
    assert outcome.status is RunStatus.SUCCEEDED
    assert log.index("verify_safety_backup") < log.index("create_database")
    outcome, log = await _run(proc, fail="verify_safety_backup")
    assert outcome.status is RunStatus.FAILED
    assert "create_database" not in log and "restore_backup" not in log


async def test_without_its_safeguard_steps_the_engine_refuses_the_restore() -> None:
    proc = resumed(ProcedureName.RESTORE, "check_current", "verify_backup", "stop_services",
                   "safety_backup")
    stripped = replace(proc, steps=tuple(s for s in proc.steps
                                         if s.key not in ("verify_backup", "safety_backup")))
    outcome, log = await _run(stripped)
    assert "drop_database" not in log
    assert "safeguard not met" in outcome.message


def test_put_back_is_not_offered_once_the_database_changed() -> None:
    assert put_back_refusal(["stop_services", "switch_version"], run_id=3,
                            from_version="v1.2.3") == ""
    why = put_back_refusal(["stop_services", "migrate_down"], run_id=3, from_version="v1.2.3")
    assert why.startswith("Put back is not offered: run #3 already rolled back a database "
                          "migration")


def test_put_back_restores_the_copy_starts_and_checks_health() -> None:
    o = offer(ProcedureName.SIMPLE, "stop_services", "switch_version",
              facts=RunFacts(compose_backup="/srv/azora/docker-compose.yml.rollbot-1.bak"))
    proc = put_back_procedure(ENV, o, epoch=2, in_compose_file="v1.2.2")
    assert [s.key for s in proc.steps] == ["put_back_compose", "start_services",
                                           "confirm_services", "wait_healthy"]
    assert "docker-compose.yml.rollbot-1.bak over" in proc.steps[0].shows[0]
    assert proc.steps[-1].failed_state == ("api is back up on v1.2.3 (all services running) "
                                           "but NOT healthy")
    assert proc.succeeded_message.startswith("Put back v1.2.3 after run #12 was cancelled")


async def _offer_run(store: Store, who: str = "alice") -> int:
    run_id = await store.begin_run(RollbackRequest(
        environment="production", procedure=ProcedureName.SIMPLE, target=None,
        requested_by=who), owner="test")
    await store.finish_run(RunOutcome(run_id=run_id, status=RunStatus.CANCELLED,
                                      host_state="services STOPPED", message="cancelled"))
    return run_id


async def test_the_offer_is_recorded_only_when_the_cancel_left_production_down(
        store: Store) -> None:
    recoveries = RecoveryStore(store.pool)
    first, second = await _offer_run(store), await _offer_run(store)
    ctx = _ctx()
    ctx.facts.compose_backup = "/srv/azora/docker-compose.yml.rollbot-1.bak"
    record = offer_recorder(recoveries, environment="production",
                            procedure=ProcedureName.SIMPLE, ctx=ctx, backup=None)
    for run_id, steps in ((first, done("check_current")),
                          (second, done("check_current", "stop_services", "switch_version"))):
        await record(RunFinished(run_id, RunOutcome(
            run_id=run_id, status=RunStatus.CANCELLED, message="Cancelled by bob",
            host_state="services STOPPED; compose file names v1.2.2", steps=steps)))
    assert await recoveries.get(first) is None  # nothing was stopped: no buttons, as today
    o = await recoveries.get(second)
    assert o is not None and o.state == "offered"
    assert (o.from_version, o.to_version) == ("v1.2.3", "v1.2.2")
    assert set(o.done_steps) == {"check_current", "stop_services", "switch_version"}
    assert o.run_facts().compose_backup.endswith("rollbot-1.bak")


async def test_two_clicks_at_once_take_the_offer_once(store: Store) -> None:
    recoveries = RecoveryStore(store.pool)
    run_id = await _offer_run(store)
    await recoveries.offer(offer(ProcedureName.SIMPLE, "stop_services", run_id=run_id))
    a, b = await asyncio.gather(
        recoveries.claim(run_id, choice=RecoveryChoice.RESUME, by="U0ALICE"),
        recoveries.claim(run_id, choice=RecoveryChoice.PUT_BACK, by="U0BOB"))
    assert sorted([a.moved, b.moved]) == [False, True]
    lost = b if a.moved else a
    assert "already chose" in lost.reason and "it runs once" in lost.reason
    again = await recoveries.claim(run_id, choice=RecoveryChoice.RESUME, by="U0ALICE")
    assert not again.moved
    await recoveries.release(run_id)  # the chosen action changed nothing
    assert (await recoveries.claim(run_id, choice=RecoveryChoice.RESUME, by="U0BOB")).moved


async def test_a_stale_or_impossible_choice_is_refused_with_the_reason(store: Store) -> None:
    recoveries = RecoveryStore(store.pool)
    run_id = await _offer_run(store)
    await recoveries.offer(offer(ProcedureName.MIGRATIONS, "stop_services", "migrate_down",
                                 run_id=run_id))
    put_back = await recoveries.claim(run_id, choice=RecoveryChoice.PUT_BACK, by="U0BOB")
    assert not put_back.moved and "rolled back a database migration" in put_back.reason
    await _offer_run(store)  # a newer rollback ran in production since
    stale = await recoveries.claim(run_id, choice=RecoveryChoice.RESUME, by="U0BOB")
    assert not stale.moved and "Another rollback ran in production" in stale.reason
    missing = await recoveries.claim(999, choice=RecoveryChoice.RESUME, by="U0BOB")
    assert "did not leave production down" in missing.reason


async def test_a_choice_whose_run_never_began_can_be_made_again_later(store: Store) -> None:
    recoveries = RecoveryStore(store.pool)
    run_id = await _offer_run(store)
    await recoveries.offer(offer(ProcedureName.SIMPLE, "stop_services", run_id=run_id))
    assert (await recoveries.claim(run_id, choice=RecoveryChoice.RESUME, by="U0ALICE")).moved
    assert not (await recoveries.claim(run_id, choice=RecoveryChoice.RESUME, by="U0BOB")).moved
    # rollbot died between the click and the run: ten minutes later, nothing holds it
    await store.pool.execute("UPDATE run_recoveries SET chosen_at = now() - interval '10 min'")
    assert (await recoveries.claim(run_id, choice=RecoveryChoice.PUT_BACK, by="U0BOB")).moved
