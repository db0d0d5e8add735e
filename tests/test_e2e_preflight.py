"""Pre-flight proves the database, backups dir, version endpoint and compose project first."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bot.config import EnvironmentConfig, Runbook
from bot.edges.http import HttpxProbe
from bot.model import ProcedureName, RunOutcome, RunStatus
from bot.service import Rollbot
from bot.store.runs import Store
from tests.sandbox import CURRENT_COUNTS, Sandbox
from tests.test_e2e_cli import rollbot_cli
from tests.test_e2e_procedures import request

pytestmark = pytest.mark.e2e


async def rollback_with(runbook: Runbook, store: Store,
                        change: Callable[[EnvironmentConfig], EnvironmentConfig],
                        procedure: ProcedureName) -> RunOutcome:
    """A rollback of production whose runbook entry was changed by ``change``."""
    env = change(runbook.environments["production"])
    changed = runbook.model_copy(update={"environments": {"production": env}})
    async with httpx.AsyncClient() as client:
        bot = Rollbot(runbook=changed, store=store, probe=HttpxProbe(client))
        return await bot.rollback(request(procedure))


def psql_on_wrong_port(env: EnvironmentConfig) -> EnvironmentConfig:
    assert env.database is not None
    psql = re.sub(r"-p \d+", "-p 1", env.database.psql)  # nothing listens on port 1
    return env.model_copy(update={"database": env.database.model_copy(update={"psql": psql})})


async def assert_refused_before_any_step(outcome: RunOutcome, store: Store,
                                         production: Sandbox) -> None:
    assert outcome.status is RunStatus.REFUSED, outcome.message
    assert "nothing was changed" in outcome.message
    assert outcome.steps == ()
    audit = await store.audit_entries(run_id=outcome.run_id)
    assert any(a.kind == "refusal" for a in audit)
    assert not [a for a in audit if a.kind == "command" and re.search(
        r"\s(stop|down)(\s|$)|DROP DATABASE|gzip \| tee", a.command)]
    assert production.running_image() == "azora-api:v1.2.3"
    assert production.row_counts() == CURRENT_COUNTS


@pytest.mark.parametrize("procedure", [ProcedureName.MIGRATIONS, ProcedureName.RESTORE])
async def test_psql_that_cannot_reach_the_database_refuses_before_the_services_stop(
    production: Sandbox, runbook: Runbook, store: Store, procedure: ProcedureName
) -> None:
    migration = production.newest_migration()
    outcome = await rollback_with(runbook, store, psql_on_wrong_port, procedure)
    await assert_refused_before_any_step(outcome, store, production)
    assert "Database reachable" in outcome.message
    assert "cannot reach database azora_prod" in outcome.message
    assert re.search(r"prod-user@127\.0\.0\.1:\d+", outcome.message)  # the host is named
    assert production.newest_migration() == migration
    audit = await store.audit_entries(run_id=outcome.run_id)
    # The migrations card reads names from migrate_status, which is also the prerequisite: it
    # runs once. A restore stops asking once psql failed.
    runs = [a for a in audit if a.kind == "command" and "migrate status" in a.command]
    assert len(runs) == (1 if procedure is ProcedureName.MIGRATIONS else 0)


async def test_a_read_only_backups_dir_refuses_a_restore(
    production: Sandbox, runbook: Runbook, store: Store
) -> None:
    mode = production.backups.stat().st_mode & 0o7777
    production.backups.chmod(0o555)
    try:
        outcome = await rollback_with(runbook, store, lambda env: env, ProcedureName.RESTORE)
    finally:
        production.backups.chmod(mode)
    await assert_refused_before_any_step(outcome, store, production)
    assert "Backups dir writable" in outcome.message
    assert f"cannot create a file in {production.backups}" in outcome.message
    assert "safety dump" in outcome.message


@pytest.fixture
async def version_server() -> AsyncIterator[Callable[[int, str], str]]:
    """A local HTTP server standing in for a version endpoint; returns its URL for an answer."""
    answer = {"status": 200, "body": ""}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = answer["body"].encode()  # type: ignore[union-attr]
        writer.write(f"HTTP/1.1 {answer['status']} X\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def answering(status: int, body: str) -> str:
        answer.update(status=status, body=body)
        return f"http://127.0.0.1:{port}/version"

    async with server:
        yield answering


@pytest.mark.parametrize(("status", "body", "reason"), [
    (200, "<html>Down for maintenance</html>", "which is not a version"),
])
async def test_a_version_endpoint_that_answers_no_version_refuses_with_the_reason(
    production: Sandbox, runbook: Runbook, store: Store,
    version_server: Callable[[int, str], str], status: int, body: str, reason: str
) -> None:
    url = version_server(status, body)
    outcome = await rollback_with(runbook, store,
                                  lambda env: env.model_copy(update={"version_url": url}),
                                  ProcedureName.SIMPLE)
    await assert_refused_before_any_step(outcome, store, production)
    assert "Version endpoint" in outcome.message and url in outcome.message
    assert reason in outcome.message


async def test_an_emergency_rollback_is_not_held_up_by_the_version_endpoint(
    production: Sandbox, runbook: Runbook, store: Store,
    version_server: Callable[[int, str], str]
) -> None:
    url = version_server(500, "Internal Server Error")
    outcome = await rollback_with(runbook, store,
                                  lambda env: env.model_copy(update={"version_url": url}),
                                  ProcedureName.EMERGENCY)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert production.running_image() == "azora-api:v1.2.2"


async def test_a_compose_project_name_that_finds_no_containers_is_refused(
    production: Sandbox, runbook: Runbook, store: Store
) -> None:
    def other_project(env: EnvironmentConfig) -> EnvironmentConfig:
        return env.model_copy(update={"compose": env.compose.model_copy(
            update={"project": "not-the-real-project"})})

    outcome = await rollback_with(runbook, store, other_project, ProcedureName.SIMPLE)
    await assert_refused_before_any_step(outcome, store, production)
    assert "Compose project" in outcome.message
    assert "'not-the-real-project'" in outcome.message


async def test_the_plan_shows_every_prerequisite_of_a_restore(production: Sandbox,
                                                              rollbot: Rollbot) -> None:
    plan = await rollbot.plan(request(ProcedureName.RESTORE))
    checks = {c.name: c for c in plan.preflight.checks}
    for name in ("Compose project", "Version endpoint", "Database reachable", "Migrate status",
                 "Backups dir writable", "Backups dir space"):
        assert name in checks and checks[name].ok, (name, checks.get(name))
    assert "reports v1.2.3" in checks["Version endpoint"].detail
    assert "free in" in checks["Backups dir space"].detail


def test_rollbot_plan_lists_the_database_and_backups_checks(production: Sandbox, store: Store,
                                                            tmp_path: Path) -> None:
    plan = rollbot_cli(production, store.dsn, "plan", "v1.2.2", "--procedure", "migrations",
                       cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    for line in ("✓ Database reachable: psql on prod-user@127.0.0.1:",
                 "✓ Migrate status: database.migrate_status ran on prod-user@",
                 "✓ Version endpoint: http://127.0.0.1:",
                 "✓ Compose project: api runs in the compose project of "):
        assert line in plan.stdout, plan.stdout
    assert "Backups dir" not in plan.stdout  # a migrations rollback takes no safety dump
    assert production.running_image() == "azora-api:v1.2.3"
