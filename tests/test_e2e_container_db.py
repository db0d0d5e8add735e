"""The database in a container outside the compose project: `docker exec -i prod-db psql`.

The sandbox runs container prod-db (`docker run`, not compose) with its own azora_prod; the
runbook's environment `containerdb` rolls the same compose app back and reaches that database the
way the spec writes it. The host's own PostgreSQL keeps its data: what changes is prod-db's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bot.config import EnvironmentConfig, Runbook
from bot.edges.http import HttpxProbe
from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus, StepStatus
from bot.service import Rollbot
from bot.store.runs import Store
from tests.sandbox import BACKUP_COUNTS, CURRENT_COUNTS, GOOD_BACKUP, Sandbox
from tests.test_e2e_cli import rollbot_cli
from tests.test_e2e_procedures import assert_runs_v122, request

pytestmark = pytest.mark.e2e

ENV = "containerdb"
CONTAINER = "prod-db"


def in_container_db(procedure: ProcedureName, **kw: object) -> RollbackRequest:
    return dataclasses.replace(request(procedure, **kw), environment=ENV)


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60,
                         check=check)
    return out.stdout.strip()


def container_psql(sql: str, *, database: str = "azora_prod") -> str:
    """What a person checks by hand: `docker exec prod-db psql -c ...`."""
    return docker("exec", CONTAINER, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U",
                  "postgres", "-d", database, "-c", sql)


def container_row_counts() -> dict[str, int]:
    return {t: int(container_psql(f"SELECT count(*) FROM {t}")) for t in ("users", "orders")}


def container_newest_migration() -> str:
    return container_psql("SELECT name FROM migrations ORDER BY executed_at DESC, id DESC LIMIT 1")


def container_life() -> str:
    """The container's id and when it started: equal before and after means never restarted."""
    return docker("inspect", "-f", "{{.Id}} {{.State.StartedAt}} {{.State.Running}}", CONTAINER)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def container_db(production: Sandbox) -> Iterator[Sandbox]:
    """Production with prod-db running as `sandbox reset` leaves it (5 users, migration 003)."""
    assert container_life().endswith(" true")
    assert container_row_counts() == CURRENT_COUNTS
    yield production
    # A test may stop the container; the next test's reset starts it again, but leave it up.
    if not container_life().endswith(" true"):
        docker("start", CONTAINER)
        wait_until(lambda: subprocess.run(["docker", "exec", CONTAINER, "pg_isready", "-q"],
                                          timeout=30).returncode == 0,
                   timeout=60, what="prod-db did not accept connections again")


async def rollback_with(runbook: Runbook, store: Store, request_: RollbackRequest,
                        change: Callable[[EnvironmentConfig], EnvironmentConfig] | None = None
                        ) -> RunOutcome:
    """A rollback of the containerdb environment, its runbook entry changed by ``change``."""
    env = runbook.environments[ENV]
    if change is not None:
        env = change(env)
    changed = runbook.model_copy(update={"environments": {**runbook.environments, ENV: env}})
    async with httpx.AsyncClient() as client:
        bot = Rollbot(runbook=changed, store=store, probe=HttpxProbe(client))
        return await bot.rollback(request_)


async def commands_sent(store: Store, run_id: int) -> list[str]:
    return [a.command for a in await store.audit_entries(run_id=run_id) if a.kind == "command"]


async def test_the_plan_proves_the_container_database_through_docker_exec(
    container_db: Sandbox, rollbot: Rollbot
) -> None:
    plan = await rollbot.plan(in_container_db(ProcedureName.RESTORE, backup=GOOD_BACKUP))
    checks = {c.name: c for c in plan.preflight.checks}
    for name in ("Database reachable", "Migrate status", "Backups dir writable",
                 "Backups dir space"):
        assert name in checks and checks[name].ok, (name, checks.get(name))
    # the restore pipes the backup into psql: pre-flight proved that pipe, not only psql -c
    assert "SELECT 1 piped into it" in checks["Database reachable"].detail
    shown = " ".join(c for s in plan.steps for c in s.shows)
    assert "docker exec -i prod-db psql -U postgres" in shown
    assert "docker exec prod-db pg_dump -U postgres" in shown
    assert container_row_counts() == CURRENT_COUNTS  # a plan changes nothing


def test_rollbot_plan_shows_the_container_database_checks(container_db: Sandbox, store: Store,
                                                          tmp_path: Path) -> None:
    plan = rollbot_cli(container_db, store.dsn, "plan", "v1.2.2", "--env", ENV, "--procedure",
                       "migrations", cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    for line in ("✓ Database reachable: psql on prod-user@127.0.0.1:",
                 "✓ Migrate status: database.migrate_status ran on prod-user@",
                 "docker exec -i prod-db psql -U postgres"):
        assert line in plan.stdout, plan.stdout
    assert container_newest_migration() == "003_add_orders_discount"


async def test_a_migrations_rollback_changes_the_container_database_and_leaves_it_running(
    container_db: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    life = container_life()
    outcome = await rollbot.rollback(in_container_db(ProcedureName.MIGRATIONS))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert_runs_v122(container_db)
    # migration 003 (orders.discount) is gone from prod-db's azora_prod ...
    assert container_newest_migration() == "002_create_orders"
    assert container_psql("SELECT count(*) FROM information_schema.columns WHERE "
                          "table_name = 'orders' AND column_name = 'discount'") == "0"
    assert container_row_counts() == CURRENT_COUNTS
    # ... not from the host's own cluster, which this environment does not use
    assert container_db.newest_migration() == "003_add_orders_discount"
    # docker-compose down/up ran, and prod-db (not in the compose project) never stopped
    assert container_life() == life
    sent = " | ".join(await commands_sent(store, outcome.run_id))
    assert " down" in sent and "up -d" in sent
    assert "docker exec -i prod-db psql -U postgres" in sent


async def test_a_restore_through_docker_exec_restores_the_backup_and_keeps_a_safety_dump(
    container_db: Sandbox, rollbot: Rollbot, store: Store
) -> None:
    life = container_life()
    outcome = await rollbot.rollback(in_container_db(ProcedureName.RESTORE, backup=GOOD_BACKUP))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.message
    assert_runs_v122(container_db)
    assert container_row_counts() == BACKUP_COUNTS
    assert container_newest_migration() == "003_add_orders_discount"
    assert container_db.row_counts() == CURRENT_COUNTS  # the host's cluster is not this database
    verify = next(s for s in outcome.steps if s.key == "verify_restore")
    assert verify.summary == "users: 3 rows, orders: 4 rows"
    # the safety dump, taken with `docker exec prod-db pg_dump` before the DROP, holds the data
    # as it was (5 users) and is complete
    [safety] = container_db.backups.glob("azora_prod_pre-restore_*.sql.gz")
    dump = gzip.decompress(safety.read_bytes()).decode()
    assert "dave@azora.world" in dump and "PostgreSQL database dump complete" in dump
    assert not list(container_db.backups.glob("*.partial"))
    sent = await commands_sent(store, outcome.run_id)
    drop = next(i for i, c in enumerate(sent) if "DROP DATABASE" in c)
    assert any("docker exec prod-db pg_dump" in c and "pre-restore" in c for c in sent[:drop])
    assert any("docker exec -i prod-db psql" in c and GOOD_BACKUP in c and "COMMIT" in c
               for c in sent[drop:])
    assert container_life() == life


@pytest.mark.parametrize("procedure", [ProcedureName.MIGRATIONS, ProcedureName.RESTORE])
async def test_a_stopped_database_container_refuses_before_anything_stops(
    container_db: Sandbox, runbook: Runbook, store: Store, procedure: ProcedureName
) -> None:
    docker("stop", CONTAINER)
    outcome = await rollback_with(runbook, store, in_container_db(procedure))
    assert outcome.status is RunStatus.REFUSED, outcome.message
    assert outcome.steps == ()
    assert "Database reachable" in outcome.message
    assert re.search(r"cannot reach database azora_prod on prod-user@127\.0\.0\.1:\d+|"
                     r"on prod-user@127\.0\.0\.1:\d+ cannot reach database azora_prod",
                     outcome.message), outcome.message
    assert "is not running" in outcome.message  # Docker's own reason, passed on
    sent = await commands_sent(store, outcome.run_id)
    assert not [c for c in sent if re.search(r"\s(stop|down)(\s|$)|DROP DATABASE", c)]
    assert container_db.running_image() == "azora-api:v1.2.3"


async def test_a_psql_that_does_not_read_its_input_is_refused_for_a_restore(
    container_db: Sandbox, runbook: Runbook, store: Store
) -> None:
    def without_dash_i(env: EnvironmentConfig) -> EnvironmentConfig:
        assert env.database is not None
        psql = env.database.psql.replace("docker exec -i ", "docker exec ")
        return env.model_copy(update={"database": env.database.model_copy(
            update={"psql": psql})})

    outcome = await rollback_with(runbook, store,
                                  in_container_db(ProcedureName.RESTORE, backup=GOOD_BACKUP),
                                  without_dash_i)
    assert outcome.status is RunStatus.REFUSED, outcome.message
    assert "does not read its standard input" in outcome.message
    assert "add -i" in outcome.message
    assert container_row_counts() == CURRENT_COUNTS
    assert container_db.running_image() == "azora-api:v1.2.3"


def slow_backup(sb: Sandbox, name: str) -> Path:
    """A complete-looking backup whose restore creates a table, then runs for a minute."""
    sql = ("CREATE TABLE users (id serial PRIMARY KEY, email text);\n"
           "INSERT INTO users (email) VALUES ('half@restored.example');\n"
           "SELECT pg_sleep(60);\n"
           "CREATE TABLE orders (id serial PRIMARY KEY, user_id int, total numeric);\n"
           "\n--\n-- PostgreSQL database dump complete\n--\n")
    path = sb.backups / name
    path.write_bytes(gzip.compress(sql.encode()))
    os.chmod(path, 0o644)
    return path


def sessions_left() -> str:
    """The backup's SQL still running in prod-db, whoever's session it is."""
    return container_psql("SELECT application_name || ': ' || query FROM pg_stat_activity "
                          "WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
                          database="postgres")


async def test_a_restore_past_its_timeout_commits_nothing_and_stops_inside_the_container(
    container_db: Sandbox, runbook: Runbook, store: Store
) -> None:
    backup = slow_backup(container_db, "azora_prod_20261128T020000.sql.gz")

    def restore_within_5_s(env: EnvironmentConfig) -> EnvironmentConfig:
        assert env.database is not None
        return env.model_copy(update={"database": env.database.model_copy(
            update={"restore_timeout_s": 5.0})})

    outcome = await rollback_with(runbook, store,
                                  in_container_db(ProcedureName.RESTORE, backup=backup.name),
                                  restore_within_5_s)
    assert outcome.status is RunStatus.FAILED, outcome.message
    [failed] = [s for s in outcome.steps if s.status is StepStatus.FAILED]
    assert failed.key == "restore_backup"
    assert "did not finish within 5 s" in failed.error
    # Killing `docker exec` on the host does not stop the psql it started in the container:
    # rollbot had the server end that session, so nothing runs on and nothing was committed.
    await asyncio.to_thread(wait_until, lambda: sessions_left() == "", timeout=10,
                            what="the restore's query still runs inside prod-db")
    assert container_psql("SELECT to_regclass('public.users') IS NULL") == "t"
    assert "azora_prod is EMPTY" in outcome.message  # what the message says is now so
    top = docker("top", CONTAINER)
    assert "psql" not in top, top
