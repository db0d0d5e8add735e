"""A fleet's plan: every host's own steps, the database work once, and the terminal names hosts."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bot.config import EnvironmentConfig, load_runbook
from bot.edges.session import HostSession
from bot.fleet.lanes import numbered_infos, plan_hosts
from bot.fleet.prepare import FleetHosts, FleetPreflight, combine_preflights, fleet_changes
from bot.model import Backup, Check, ContainerState, ProcedureName, RollbackRequest
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


def _pre(current: str, target: str = "v1.2.2", ok: bool = True) -> Preflight:
    return Preflight(checks=(Check("Host reachable", True, "connected"),
                             Check("Target image present", ok, "azora-api:v1.2.2")),
                     current=current, target=target, backup=BACKUP if current else None)


def test_the_fleet_preflight_names_every_check_by_host_and_a_mix_of_versions() -> None:
    whole = combine_preflights({"web-1": _pre("v1.2.3"), "web-2": _pre("v1.2.3", ok=False),
                                "web-3": _pre("v1.2.1")}, (), "web-1")
    assert [c.name for c in whole.checks][:4] == [
        "web-1: Host reachable", "web-1: Target image present", "web-2: Host reachable",
        "web-2: Target image present"]
    assert whole.current == "v1.2.3" and whole.target == "v1.2.2" and whole.backup == BACKUP
    assert not whole.ok and whole.refusal == "web-2: Target image present: azora-api:v1.2.2"
    assert whole.checks[-1] == Check(
        "Current version", True, "the hosts disagree: web-1, web-2 run v1.2.3; web-3 runs "
        "v1.2.1; each host rolls back from its own version")


def test_hosts_resolving_previous_differently_or_unreachable_refuse() -> None:
    whole = combine_preflights({"web-1": _pre("v1.2.3", "v1.2.2"),
                                "web-2": _pre("v1.2.2", "v1.2.1")}, (), "web-1")
    assert not whole.ok and whole.target == ""
    assert "Target version: the hosts resolve the target differently: web-1 runs v1.2.2; " \
           "web-2 runs v1.2.1; name the version to roll back to" in whole.refusal
    gone = Check("web-3: Host reachable", False, "cannot reach web-3")
    whole = combine_preflights({"web-1": _pre("v1.2.3")}, (gone,), "web-1")
    assert not whole.ok and whole.refusal == "web-3: Host reachable: cannot reach web-3"


class _Host:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def read_file(self, path: str) -> str:
        return f"services:\n  api:\n    image: azora-api:{self.tag}\n"


class _Docker:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def compose_containers(self, compose: object) -> list[ContainerState]:
        return [ContainerState(name="x-api-1", service="api", image=f"azora-api:{self.tag}",
                               state="running", status="Up")]


async def test_the_relook_after_the_lock_covers_every_host() -> None:
    env = fleet_env()
    any_: Any = None
    sessions = {n: HostSession(host=any_, docker=any_) for n, _ in env.members}
    for name, tag in (("web-1", "v1.2.3"), ("web-2", "v1.2.3"), ("web-3", "v1.2.4")):
        host: Any = _Host(tag)
        docker: Any = _Docker(tag)
        sessions[name] = HostSession(host=host, docker=docker)
    pre = FleetPreflight(whole=_pre("v1.2.3"), hosts={n: _pre("v1.2.3") for n in sessions})
    moved = await fleet_changes(FleetHosts(sessions, ()), env, pre)
    assert moved.startswith("web-3: production changed while pre-flight ran: it was v1.2.3, "
                            "it is now v1.2.4")
    assert "web-1" not in moved and "web-2" not in moved
