"""The migration and restore steps check what the database looks like afterwards, not just
that a command exited 0 (a host that answers like psql does, scripted per test)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import EnvironmentConfig, load_runbook
from bot.errors import HostError
from bot.model import Backup, CommandResult, ProcedureName
from bot.procedures.base import RunFacts, Step, StepContext
from bot.procedures.catalog import ProcedureInputs, build

ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]
BACKUP = Backup(name="azora_prod_20261127T020000.sql.gz",
                path="/backups/azora_prod_20261127T020000.sql.gz", size=1000,
                modified=datetime(2026, 11, 27, 2, tzinfo=UTC))
MIGRATIONS = ["3 | 003_add_orders_discount | 2026-09-20 10:00:00+00",
              "2 | 002_create_orders | 2026-09-10 10:00:00+00",
              "1 | 001_create_users | 2026-09-01 10:00:00+00"]


def psql_table(rows: list[str]) -> str:
    """Rows as psql prints them: every column padded to its widest value in this result."""
    cells = [r.split(" | ") for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)])
              for i, h in enumerate(("id", "name", "executed_at"))]
    header = " | ".join(h.ljust(w) for h, w in zip(("id", "name", "executed_at"), widths,
                                                    strict=True))
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([header, "-+-".join("-" * w for w in widths), *lines,
                      f"({len(rows)} rows)"])


class MigrationsHost:
    """Answers the migrations query from a list; ``migrate_down`` does what ``down`` says."""

    name = "prod-user@prod-host:22"

    def __init__(self, applied: list[str], down: Callable[[list[str]], None]) -> None:
        self.applied = list(applied)
        self.down = down
        self.sent: list[str] = []

    async def run(self, command: str, *, timeout: float, on_line: Any = None,
                  check: bool = True) -> CommandResult:
        self.sent.append(command)
        if "FROM migrations" in command:
            out = psql_table(self.applied)
        elif "migrate:down" in command:
            self.down(self.applied)
            out = "migrated down"
        else:
            out = ""
        for line in out.splitlines():
            if on_line is not None:
                on_line(line)
        return CommandResult(command=command, exit_status=0, output=out, truncated=False,
                             duration_s=0.0)


def env_undoing(n: int) -> EnvironmentConfig:
    assert ENV.database is not None
    return ENV.model_copy(update={"database": ENV.database.model_copy(
        update={"migrations_to_undo": n})})


def steps(env: EnvironmentConfig, procedure: ProcedureName) -> dict[str, Step]:
    inputs = ProcedureInputs(env=env, current="v1.2.3", target="v1.2.2", epoch=1764200000,
                             backup=BACKUP)
    return {s.key: s for s in build(procedure, inputs).steps}


def context(host: Any, lines: list[str]) -> StepContext:
    none: Any = None
    return StepContext(host=host, docker=none, probe=none, env=ENV, current="v1.2.3",
                       target="v1.2.2", facts=RunFacts(), emit=lines.append)


async def run_migration_steps(n: int, down: Callable[[list[str]], None]
                              ) -> tuple[MigrationsHost, StepContext, list[str], list[str]]:
    """Check status, migrate down, verify; returns the host, context, output and summaries."""
    host = MigrationsHost(MIGRATIONS, down)
    lines: list[str] = []
    ctx = context(host, lines)
    by_key = steps(env_undoing(n), ProcedureName.MIGRATIONS)
    summaries = []
    for key in ("migration_status", "migrate_down", "verify_migration"):
        summaries.append(await by_key[key].action(ctx))
    return host, ctx, lines, summaries


def undo_newest(applied: list[str]) -> None:
    applied.pop(0)


async def test_one_migration_undone_and_the_one_before_it_is_newest() -> None:
    host, ctx, _, summaries = await run_migration_steps(1, undo_newest)
    assert summaries[0] == f"to undo: {MIGRATIONS[0]}"
    assert "undone: 3 | 003_add_orders_discount" in summaries[1]
    assert ctx.facts.newest_migration_after == MIGRATIONS[1]
    assert sum("migrate:down" in c for c in host.sent) == 1


async def test_two_migrations_undone_one_migrate_down_each_every_one_checked() -> None:
    host, ctx, lines, summaries = await run_migration_steps(2, undo_newest)
    downs = [i for i, c in enumerate(host.sent) if "migrate:down" in c]
    assert len(downs) == 2
    # each migrate_down is followed by a look at the table before the next one
    assert "FROM migrations" in host.sent[downs[0] + 1]
    assert ctx.facts.migrations_undone == MIGRATIONS[:2]
    assert f"undone: {MIGRATIONS[0]}" in lines and f"undone: {MIGRATIONS[1]}" in lines
    assert summaries[1] == f"undone: {MIGRATIONS[0]}; {MIGRATIONS[1]}"
    assert summaries[2].endswith(f"newest migration now: {MIGRATIONS[2]}")


async def test_a_migrate_down_that_changes_nothing_fails() -> None:
    with pytest.raises(HostError, match=r"after migrate_down #1 the newest migration is still "
                                        r"'3 \| 003_add_orders_discount.*nothing was rolled back"):
        await run_migration_steps(1, lambda applied: None)


async def test_a_migrate_down_that_undoes_two_fails_even_though_the_newest_changed() -> None:
    def undo_two(applied: list[str]) -> None:
        del applied[:2]

    with pytest.raises(HostError, match=r"the newest migration is '1 \| 001_create_users.*', "
                                        r"not '2 \| 002_create_orders.*undid more than one"):
        await run_migration_steps(1, undo_two)


async def test_the_second_of_two_migrate_downs_doing_nothing_stops_the_step() -> None:
    calls = 0

    def only_once(applied: list[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            applied.pop(0)

    with pytest.raises(HostError, match=r"after migrate_down #2 the newest migration is still "
                                        r"'2 \| 002_create_orders"):
        await run_migration_steps(2, only_once)


async def test_undoing_more_migrations_than_are_applied_fails_before_any_migrate_down() -> None:
    host = MigrationsHost(MIGRATIONS[:1], undo_newest)
    ctx = context(host, [])
    status = steps(env_undoing(2), ProcedureName.MIGRATIONS)["migration_status"]
    with pytest.raises(HostError, match=r"only 1 migration\(s\) are applied, but the runbook "
                                        r"undoes 2"):
        await status.action(ctx)
    assert not any("migrate:down" in c for c in host.sent)


def test_the_plan_shows_each_migrate_down_with_its_check() -> None:
    down = steps(env_undoing(2), ProcedureName.MIGRATIONS)["migrate_down"]
    assert down.title == "Roll back the 2 newest migrations, one at a time"
    assert [("migrate:down" in c, "FROM migrations" in c) for c in down.shows] == [
        (True, False), (False, True), (True, False), (False, True)]


class CountsHost:
    """Answers the verify_tables row counts query."""

    name = "prod-user@prod-host:22"

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    async def run(self, command: str, *, timeout: float, on_line: Any = None,
                  check: bool = True) -> CommandResult:
        out = "\n".join(f"{t}|{n}" for t, n in self.counts.items())
        return CommandResult(command=command, exit_status=0, output=out, truncated=False,
                             duration_s=0.0)


async def test_a_restore_that_leaves_a_verify_table_empty_fails() -> None:
    verify = steps(ENV, ProcedureName.RESTORE)["verify_restore"]
    ctx = context(CountsHost({"users": 3, "orders": 0}), [])
    with pytest.raises(HostError, match=r"table orders is EMPTY after restoring "
                                        r"azora_prod_20261127T020000\.sql\.gz"):
        await verify.action(ctx)
    assert ctx.facts.row_counts == {"users": 3, "orders": 0}
    assert "database azora_prod restored from azora_prod_20261127T020000.sql.gz but missing " \
           "data" in verify.failed_state
    assert "azora_prod_pre-restore_1764200000.sql.gz" in verify.failed_state


async def test_a_restore_with_rows_in_every_verify_table_passes() -> None:
    verify = steps(ENV, ProcedureName.RESTORE)["verify_restore"]
    ctx = context(CountsHost({"users": 3, "orders": 4}), [])
    assert await verify.action(ctx) == "users: 3 rows, orders: 4 rows"
