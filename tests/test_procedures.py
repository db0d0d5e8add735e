"""The four procedures are the spec's, step for step, and the plan shows their exact commands."""

from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bot.config import load_runbook
from bot.engine import step_infos
from bot.model import Backup, Check, ProcedureName, RollbackRequest
from bot.preflight import Preflight
from bot.procedures.base import Safeguard
from bot.procedures.catalog import ProcedureInputs, build
from bot.service import Plan
from bot.terminal.render import render_plan
from bot.versions import reported_version

ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]
BACKUP = Backup(name="azora_prod_20261127T020000.sql.gz",
                path="/backups/azora_prod_20261127T020000.sql.gz", size=1000,
                modified=datetime(2026, 11, 27, 2, tzinfo=UTC))
INPUTS = ProcedureInputs(env=ENV, current="v1.2.3", target="v1.2.2", epoch=1764200000,
                         backup=BACKUP)


def keys(name: ProcedureName) -> list[str]:
    return [s.key for s in build(name, INPUTS).steps]


def test_simple_follows_procedure_1() -> None:
    assert keys(ProcedureName.SIMPLE) == [
        "check_current", "stop_services", "switch_version", "start_services", "wait_healthy",
        "verify_version", "confirm_services"]


def test_migrations_follows_procedure_2() -> None:
    assert keys(ProcedureName.MIGRATIONS) == [
        "check_current", "verify_backup_exists", "stop_services", "migration_status",
        "migrate_down", "verify_migration", "switch_version", "start_services", "wait_healthy",
        "verify_version", "confirm_services"]


def test_restore_follows_procedure_3_with_its_safeguards() -> None:
    proc = build(ProcedureName.RESTORE, INPUTS)
    assert [s.key for s in proc.steps] == [
        "check_current", "verify_backup", "stop_services", "safety_backup", "drop_database",
        "create_database", "restore_backup", "verify_restore", "switch_version",
        "start_services", "wait_healthy", "verify_version", "confirm_services"]
    by_key = {s.key: s for s in proc.steps}
    assert by_key["verify_backup"].establishes is Safeguard.BACKUP_VERIFIED
    assert by_key["safety_backup"].establishes is Safeguard.SAFETY_BACKUP_WRITTEN
    for k in ("drop_database", "create_database", "restore_backup"):
        assert set(by_key[k].requires) == {Safeguard.BACKUP_VERIFIED,
                                           Safeguard.SAFETY_BACKUP_WRITTEN}
    assert by_key["drop_database"].shows == (
        "docker exec -i prod-db psql -U postgres -v ON_ERROR_STOP=1 -d postgres -c "
        "'DROP DATABASE \"azora_prod\";'",)
    restore = by_key["restore_backup"].shows[0]
    # one transaction, committed only once the whole backup went through
    assert "ON_ERROR_STOP=1" in restore and "--single-transaction" not in restore
    assert 'echo "BEGIN;"; gunzip -c /backups/' in restore and '&& echo "COMMIT;"; }' in restore
    assert "pipefail" in restore
    assert "/backups/azora_prod_pre-restore_1764200000.sql.gz" in by_key["safety_backup"].shows[0]


def test_emergency_follows_procedure_4_and_recommends_restore() -> None:
    proc = build(ProcedureName.EMERGENCY, INPUTS)
    assert [s.key for s in proc.steps] == [
        "stop_services", "remove_latest", "switch_version", "start_services", "wait_healthy"]
    assert proc.steps[-1].failure_status.value == "restore_recommended"
    assert proc.steps[-1].timeout_s < build(ProcedureName.SIMPLE, INPUTS).steps[4].timeout_s


def test_destructive_steps_are_marked() -> None:
    proc = build(ProcedureName.SIMPLE, INPUTS)
    assert [s.key for s in proc.steps if s.destructive] == [
        "stop_services", "switch_version", "start_services"]


def test_plan_prints_every_exact_command() -> None:
    request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                              target=None, requested_by="alice")
    proc = build(ProcedureName.SIMPLE, INPUTS)
    plan = Plan(request=request, preflight=Preflight(
        checks=(Check("Target image present", True, "azora-api:v1.2.2 present"),),
        current="v1.2.3", target="v1.2.2", backup=None), title=proc.title,
        steps=step_infos(proc))
    console = Console(record=True, width=200)
    render_plan(console, plan)
    text = console.export_text()
    assert "v1.2.3 → v1.2.2" in text
    assert "$ cd /srv/azora && docker-compose -f /srv/azora/docker-compose.yml down" in text
    assert "$ cd /srv/azora && docker-compose -f /srv/azora/docker-compose.yml up -d" in text
    assert "azora-api:v1.2.2" in text and "(changes production)" in text
    assert "✓ Target image present" in text


def test_version_endpoint_may_answer_json_or_text() -> None:
    assert reported_version('{"version": "v1.2.2", "commit": "abc"}') == "v1.2.2"
    assert reported_version("v1.2.2\n") == "v1.2.2"
    assert reported_version("") == ""
