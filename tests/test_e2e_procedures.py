"""On-call rolls production back with each procedure; the sandbox host really ends up there.

Real sshd, Docker engine, docker-compose and PostgreSQL (deploy/sandbox). Production starts on
v1.2.3, whose health check fails; v1.2.2 is the last good release.
"""

from __future__ import annotations

import httpx
import pytest

from bot.model import ProcedureName, RollbackRequest, RunStatus, StepStatus
from bot.service import Rollbot
from bot.store.runs import Store
from bot.versions import parse_version
from tests.sandbox import BACKUP_COUNTS, CURRENT_COUNTS, GOOD_BACKUP, Sandbox

pytestmark = pytest.mark.e2e


def request(procedure: ProcedureName, target: str | None = "v1.2.2", **kw: object
            ) -> RollbackRequest:
    return RollbackRequest(environment="production", procedure=procedure,
                           target=parse_version(target) if target else None,
                           requested_by="alice", reason="v1.2.3 health check fails",
                           **kw)  # type: ignore[arg-type]


def health(sb: Sandbox) -> int:
    return httpx.get(f"http://127.0.0.1:{sb.api_port}/health", timeout=5).status_code


def assert_runs_v122(sb: Sandbox) -> None:
    assert sb.running_image() == "azora-api:v1.2.2"
    assert health(sb) == 200
    assert httpx.get(f"http://127.0.0.1:{sb.api_port}/version", timeout=5).text.strip() == \
        "v1.2.2"
    assert "image: azora-api:v1.2.2" in sb.compose_file.read_text()


async def test_simple_rollback_puts_v122_back(production: Sandbox, rollbot: Rollbot,
                                              store: Store) -> None:
    assert health(production) != 200  # the incident
    outcome = await rollbot.rollback(request(ProcedureName.SIMPLE))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert_runs_v122(production)
    assert outcome.from_version == "v1.2.3" and outcome.to_version == "v1.2.2"
    assert all(s.status is StepStatus.SUCCEEDED for s in outcome.steps)
    # the previous compose file is kept beside it
    backups = list(production.compose_file.parent.glob("docker-compose.yml.rollbot-*.bak"))
    assert len(backups) == 1 and "azora-api:v1.2.3" in backups[0].read_text()
    # the store has the run, its steps and every command sent
    record = await store.get_run(outcome.run_id)
    assert record is not None and record.status is RunStatus.SUCCEEDED
    assert [s.key for s in record.steps][:3] == ["check_current", "stop_services",
                                                 "switch_version"]
    commands = [a for a in await store.audit_entries(run_id=outcome.run_id)
                if a.kind == "command"]
    sent = " | ".join(a.command for a in commands)
    assert " down" in sent and "up -d" in sent
    assert all(a.exit_status == 0 for a in commands)


async def test_without_a_version_the_previous_one_is_chosen(production: Sandbox,
                                                            rollbot: Rollbot) -> None:
    outcome = await rollbot.rollback(request(ProcedureName.SIMPLE, target=None))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert outcome.to_version == "v1.2.2"
    assert_runs_v122(production)


async def test_migrations_rollback_removes_the_newest_migration(production: Sandbox,
                                                                rollbot: Rollbot) -> None:
    before = production.psql("SELECT name FROM migrations ORDER BY executed_at DESC")
    assert before.splitlines()[0] == "003_add_orders_discount"
    outcome = await rollbot.rollback(request(ProcedureName.MIGRATIONS))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    after = production.psql("SELECT name FROM migrations ORDER BY executed_at DESC")
    assert after.splitlines() == before.splitlines()[1:]
    assert_runs_v122(production)


async def test_restore_brings_back_the_backup_and_keeps_a_safety_copy(
    production: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    assert production.row_counts() == CURRENT_COUNTS
    outcome = await rollbot.rollback(request(ProcedureName.RESTORE, backup=GOOD_BACKUP))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert production.row_counts() == BACKUP_COUNTS
    assert_runs_v122(production)
    safety = list(production.backups.glob("azora_prod_pre-restore_*.sql.gz"))
    assert len(safety) == 1 and safety[0].stat().st_size > 100
    verify = next(s for s in outcome.steps if s.key == "verify_restore")
    assert verify.summary == "users: 3 rows, orders: 4 rows"
    sent = [a.command for a in await store.audit_entries(run_id=outcome.run_id)]
    drop = next(i for i, c in enumerate(sent) if "DROP DATABASE" in c)
    assert any("gunzip -c" in c and "dump complete" in c for c in sent[:drop])
    assert any("pre-restore" in c for c in sent[:drop])


async def test_emergency_rollback_is_fast_and_healthy(production: Sandbox,
                                                      rollbot: Rollbot) -> None:
    outcome = await rollbot.rollback(request(ProcedureName.EMERGENCY))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert next(s.key for s in outcome.steps) == "stop_services"
    assert_runs_v122(production)


async def test_emergency_still_unhealthy_ends_as_restore_recommended(
    production: Sandbox, rollbot: Rollbot, runbook: object
) -> None:
    first = await rollbot.rollback(request(ProcedureName.SIMPLE))
    assert first.status is RunStatus.SUCCEEDED
    # Someone forces the bad release back in an emergency: rollbot must not restore by itself.
    env = rollbot.runbook.environments["production"]
    quick = env.model_copy(update={"timeouts": env.timeouts.model_copy(
        update={"emergency_health_s": 3.0})})
    rollbot.runbook = rollbot.runbook.model_copy(
        update={"environments": {**rollbot.runbook.environments, "production": quick}})
    outcome = await rollbot.rollback(request(ProcedureName.EMERGENCY, target="v1.2.3"))
    assert outcome.status is RunStatus.RESTORE_RECOMMENDED
    assert "restore" in outcome.message
    assert production.row_counts() == CURRENT_COUNTS  # it did not restore on its own
