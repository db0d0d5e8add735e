"""A fleet's plan: every host's own steps, the database work once, and the terminal names hosts."""

from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bot.config import EnvironmentConfig, load_runbook
from bot.fleet.lanes import numbered_infos, plan_hosts
from bot.model import Backup, Check, ProcedureName, RollbackRequest
from bot.preflight import Preflight
from bot.procedures.catalog import ProcedureInputs
from bot.service import Plan
from bot.terminal.render import render_plan

BASE = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]
BACKUP = Backup(name="azora_prod_20261127T020000.sql.gz",
                path="/backups/azora_prod_20261127T020000.sql.gz", size=1000,
                modified=datetime(2026, 11, 27, 2, tzinfo=UTC))


def fleet_env() -> EnvironmentConfig:
    data = BASE.model_dump(exclude={"host_envs"})
    data["hosts"] = [{"name": f"web-{n}", "ssh": {"host": f"10.0.0.1{n}"},
                      "compose": {"file": f"/srv/web{n}/docker-compose.yml"},
                      "health_url": f"http://10.0.0.1{n}:8080/health",
                      "version_url": f"http://10.0.0.1{n}:8080/version"} for n in (1, 2, 3)]
    data["database"] = {**data["database"], "host": "web-2"}
    return EnvironmentConfig.model_validate(data)


def inputs(env: EnvironmentConfig) -> list[tuple[str, ProcedureInputs]]:
    return [(name, ProcedureInputs(env=e, current="v1.2.3", target="v1.2.2", epoch=1764200000,
                                   backup=BACKUP)) for name, e in env.members]


def test_simple_runs_every_step_on_every_host_with_its_own_compose_file() -> None:
    plans = plan_hosts(ProcedureName.SIMPLE, inputs(fleet_env()), database_host="web-2")
    assert [len(p.steps) for p in plans] == [7, 7, 7]
    stops = [p.steps[1].shows[0] for p in plans]
    assert stops[2] == ("cd /srv/web3 && docker-compose -f /srv/web3/docker-compose.yml down")


def test_migrations_do_the_database_work_only_on_the_database_host() -> None:
    plans = {p.name: p for p in plan_hosts(ProcedureName.MIGRATIONS, inputs(fleet_env()),
                                           database_host="web-2")}
    bring_up = ["switch_version", "start_services", "wait_healthy", "verify_version",
                "confirm_services"]
    assert [s.key for s in plans["web-1"].steps] == ["check_current", "stop_services",
                                                      *bring_up]
    assert [s.key for s in plans["web-2"].steps] == [
        "check_current", "verify_backup_exists", "stop_services", "migration_status",
        "migrate_down", "verify_migration", *bring_up]
    assert (plans["web-1"].stopped_end, plans["web-1"].database_end) == (2, 2)
    assert (plans["web-2"].stopped_end, plans["web-2"].database_end) == (3, 6)
    restore = {p.name: p for p in plan_hosts(ProcedureName.RESTORE, inputs(fleet_env()),
                                             database_host="web-2")}
    assert [s.key for s in restore["web-3"].steps][:2] == ["check_current", "stop_services"]
    assert "drop_database" in [s.key for s in restore["web-2"].steps]
    assert "drop_database" not in [s.key for s in restore["web-3"].steps]


def test_the_terminal_plan_names_each_steps_host() -> None:
    plans = plan_hosts(ProcedureName.SIMPLE, inputs(fleet_env()), database_host="web-2")
    steps = tuple(i for infos in numbered_infos(plans) for i in infos)
    request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                              target=None, requested_by="alice")
    plan = Plan(request=request, preflight=Preflight(
        checks=(Check("web-2: Target image present", True, "azora-api:v1.2.2 present"),),
        current="v1.2.3", target="v1.2.2", backup=None), title="Simple, on 3 hosts",
        steps=steps)
    console = Console(record=True, width=200)
    render_plan(console, plan)
    text = console.export_text()
    assert "  1. web-1: Check current version" in text
    assert "  9. web-2: Stop services (changes production)" in text
    assert "✓ web-2: Target image present" in text
