"""Procedure 2: a rollback with database migration rollback, one checked migrate_down at a time."""

from __future__ import annotations

from bot.errors import ConfigError, HostError
from bot.model import ProcedureName
from bot.procedures import commands as cmd
from bot.procedures import steps
from bot.procedures.base import (
    Procedure,
    ProcedureInputs,
    ProcedureTitle,
    RunFacts,
    Step,
    StepContext,
)

TITLE = ProcedureTitle(
    name=ProcedureName.MIGRATIONS, number=2,
    words="rollback with database migration rollback",
    spec_heading="Rollback with Database Migration Rollback",
    use_when="Database schema changed and needs rollback",
)


def procedure(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    stopped = f"services STOPPED; compose file still names {i.current}"
    n = _undo_count(i)
    undone = "newest migration" if n == 1 else f"{n} newest migrations"
    return Procedure(
        name=TITLE.name, title=TITLE.title,
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            steps.check_current(i),
            _latest_backup_listed(i),
            steps.stop(i, stopped),
            _migration_status(i, key="migration_status", title="Check current migration status",
                              leaves=stopped, after=False),
            _migrate_down(i, f"{stopped}; {undone} rolled back"),
            _migration_status(i, key="verify_migration", title="Verify migration rolled back",
                              leaves=f"{stopped}; {undone} rolled back", after=True),
            *steps.bring_up(i, f"services STOPPED; {undone} rolled back; compose file names "
                               f"{i.target}"),
        ),
        succeeded_state=f"{s} runs {i.target} on the previous schema, healthy, all services up",
    )


def _latest_backup_listed(i: ProcedureInputs) -> Step:
    db = steps.database(i)
    # The glob is validated by the runbook schema (no shell syntax) and must stay unquoted.
    c = f"ls -laht {cmd.quote(db.backups_dir.rstrip('/'))}/{db.backup_glob} | head -1"

    async def action(ctx: StepContext) -> str:
        result = await ctx.host.run(c, timeout=steps.COMMAND_S, on_line=ctx.emit)
        if not result.output.strip():
            raise HostError(f"no backup matching {db.backup_glob} in {db.backups_dir}")
        return result.output.strip().splitlines()[0][-120:]

    return Step(key="verify_backup_exists", title="Verify a backup exists", action=action,
                shows=(c,), leaves=f"untouched: {i.env.service} still runs {i.current}",
                timeout_s=steps.COMMAND_S)


def _undo_count(i: ProcedureInputs) -> int:
    return steps.database(i).migrations_to_undo


def _migrations_query(i: ProcedureInputs) -> str:
    # One more row than is undone: the one that must be the newest afterwards.
    return cmd.migrations_head(steps.database(i), limit=max(5, _undo_count(i) + 1))


async def _applied_migrations(ctx: StepContext, query: str) -> list[str]:
    result = await ctx.host.run(query, timeout=steps.COMMAND_S, on_line=ctx.emit)
    return cmd.migration_rows(result.output)


def _check_undone(facts: RunFacts, rows: list[str], undone: int) -> str:
    """After ``undone`` migrate_downs the newest row must be the one that was that far down."""
    before = facts.migrations_before
    expected = before[undone] if undone < len(before) else ""
    newest = rows[0] if rows else ""
    facts.newest_migration_after = newest
    if newest == before[undone - 1]:
        raise HostError(f"after migrate_down #{undone} the newest migration is still "
                        f"'{newest[:120]}': nothing was rolled back")
    if newest != expected:
        raise HostError(
            f"after migrate_down #{undone} the newest migration is '{newest[:120] or '(none)'}', "
            f"not '{expected[:120] or '(none)'}', the one before it: migrate_down undid more "
            "than one migration, or something else changed the table"
        )
    return newest


def _migration_status(i: ProcedureInputs, *, key: str, title: str, leaves: str,
                      after: bool) -> Step:
    db = steps.database(i)
    undo = _undo_count(i)
    query = _migrations_query(i)
    status_cmd = cmd.in_compose_dir(i.env, db.migrate_status) if db.migrate_status else None

    async def action(ctx: StepContext) -> str:
        if after and status_cmd:
            await ctx.host.run(status_cmd, timeout=steps.COMMAND_S, on_line=ctx.emit)
        rows = await _applied_migrations(ctx, query)
        if not after:
            ctx.facts.migrations_before = rows
            ctx.facts.newest_migration_before = rows[0] if rows else ""
            if len(rows) < undo:
                raise HostError(f"only {len(rows)} migration(s) are applied, but the runbook "
                                f"undoes {undo} (database.migrations_to_undo); nothing was "
                                "rolled back")
            return f"to undo: {'; '.join(r[:120] for r in rows[:undo])}"
        newest = _check_undone(ctx.facts, rows, undo)
        undone = "; ".join(r[:120] for r in ctx.facts.migrations_before[:undo])
        return f"undone: {undone}; newest migration now: {newest[:120] or '(none)'}"

    shows = ((status_cmd,) if after and status_cmd else ()) + (query,)
    return Step(key=key, title=title, action=action, shows=shows, leaves=leaves,
                timeout_s=steps.COMMAND_S * 2,
                if_failed="check the migrations table by hand before starting the services.")


def _migrate_down(i: ProcedureInputs, leaves: str) -> Step:
    db = steps.database(i)
    if not db.migrate_down:
        raise ConfigError("the runbook has no database.migrate_down command")
    c = cmd.in_compose_dir(i.env, db.migrate_down)
    undo = _undo_count(i)
    query = _migrations_query(i)

    async def action(ctx: StepContext) -> str:
        # One migrate_down per migration, each checked before the next: never undo blindly.
        for n in range(1, undo + 1):
            if undo > 1:
                ctx.emit(f"--- migrate_down {n} of {undo}")
            await ctx.host.run(c, timeout=db.restore_timeout_s, on_line=ctx.emit)
            _check_undone(ctx.facts, await _applied_migrations(ctx, query), n)
            gone = ctx.facts.migrations_before[n - 1]
            ctx.facts.migrations_undone.append(gone)
            ctx.emit(f"undone: {gone}")
        return f"undone: {'; '.join(r[:120] for r in ctx.facts.migrations_undone)}"

    title = ("Roll back the newest migration" if undo == 1 else
             f"Roll back the {undo} newest migrations, one at a time")
    shows = tuple(command for _ in range(undo) for command in (c, query))
    return Step(key="migrate_down", title=title, action=action, shows=shows, leaves=leaves,
                timeout_s=undo * (db.restore_timeout_s + steps.COMMAND_S) + 5, destructive=True,
                if_failed="the schema may be half migrated (the output says which migrations "
                          "were undone): coordinate with the DBA; services are stopped.")
