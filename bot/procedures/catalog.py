"""The spec's four procedures, step for step, as data the engine runs and the plan prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import DatabaseConfig, EnvironmentConfig
from bot.edges.host_facts import running_tag
from bot.errors import ConfigError, HealthCheckFailed, HostError
from bot.model import Backup, ProcedureName, RunStatus
from bot.procedures import commands as cmd
from bot.procedures.base import Procedure, RunFacts, Safeguard, Step, StepAction, StepContext
from bot.procedures.compose_file import switch_image_tag


@dataclass(frozen=True)
class ProcedureInputs:
    """Everything decided before the first step: versions, backup, the moment of the run."""

    env: EnvironmentConfig
    current: str
    target: str
    epoch: int
    backup: Backup | None = None


_COMMAND_S = 60.0
_ADVICE_DOWN = ("services may be stopped. Run `rollback --emergency` to force the known-good "
                "version up, or fix by hand (see the output).")
_ADVICE_HEALTH = ("the new version started but is not healthy. Check `docker-compose logs`; if it "
                  "stays down, run `rollback --emergency`, and `rollback --restore` if the data is "
                  "damaged.")


def _run(command: str, *, timeout: float, summary: str = "") -> StepAction:
    async def action(ctx: StepContext) -> str:
        result = await ctx.host.run(command, timeout=timeout, on_line=ctx.emit)
        if summary:
            return summary
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "done"
    return action


# --- step builders --------------------------------------------------------------------------

def _check_current(i: ProcedureInputs) -> Step:
    env = i.env

    # The spec's `docker-compose ps` and `docker images | grep` as Docker facts: the same answer
    # without starting docker-compose (a Python program: ~0.3 s per call) on the host.
    async def action(ctx: StepContext) -> str:
        containers = await ctx.docker.compose_containers(env.compose.project_name)
        for c in containers:
            ctx.emit(f"{c.name:<28} {c.service:<12} {c.image:<28} {c.status}")
        tags = await ctx.docker.image_tags(env.image)
        for t in tags[:5]:
            ctx.emit(f"{t.repository}  {t.tag:<12} {t.image_id.removeprefix('sha256:')[:12]}  "
                     f"created {t.created:%Y-%m-%d %H:%M:%S} UTC")
        running = running_tag(containers, env) or "nothing"
        if not any(t.tag == ctx.target for t in tags):
            raise HostError(f"image {env.image}:{ctx.target} is no longer on the host")
        return f"{env.service} runs {running}; {env.image}:{ctx.target} is present"

    return Step(
        key="check_current", title="Check current version", action=action,
        shows=(f"docker ps: containers of compose project {env.compose.project_name} "
               "(Docker API)",
               f"docker images {env.image}: tags and creation times (Docker API)"),
        leaves=f"untouched: {env.service} still runs {i.current}", timeout_s=_COMMAND_S,
    )


def _stop(i: ProcedureInputs, leaves: str) -> Step:
    t = i.env.timeouts.compose_down_s
    c = cmd.compose(i.env, "down")
    return Step(key="stop_services", title="Stop services",
                action=_run(c, timeout=t, summary="services stopped"),
                shows=(c,), leaves=leaves, timeout_s=t + 5, destructive=True,
                if_failed=_ADVICE_DOWN)


def _switch(i: ProcedureInputs, leaves: str) -> Step:
    env = i.env
    backup_path = f"{env.compose.file}.rollbot-{i.epoch}.bak"

    async def action(ctx: StepContext) -> str:
        text = await ctx.host.read_file(env.compose.file)
        change = switch_image_tag(text, service=env.service, image=env.image, new_tag=ctx.target)
        ctx.emit(f"{env.compose.file}: image {env.image}:{change.old_tag} -> "
                 f"{env.image}:{change.new_tag}")
        await ctx.host.write_file_atomic(env.compose.file, change.text, backup_path=backup_path)
        ctx.facts.compose_backup = backup_path
        ctx.emit(f"previous file kept as {backup_path}")
        return f"compose file now names {env.image}:{ctx.target}"

    return Step(
        key="switch_version", title=f"Switch compose file to {i.target}", action=action,
        shows=(f"sftp: in {env.compose.file} set services.{env.service}.image to "
               f"{env.image}:{i.target} (copy kept as {backup_path}; written to a temp file, "
               "then renamed)",),
        leaves=leaves, timeout_s=_COMMAND_S, destructive=True,
        if_failed=f"the compose file is unchanged or fully changed (never partial); the copy is "
                  f"{backup_path}. {_ADVICE_DOWN}",
    )


def _start(i: ProcedureInputs) -> Step:
    t = i.env.timeouts.compose_up_s
    c = cmd.compose(i.env, "up", "-d")
    return Step(key="start_services", title="Start services",
                action=_run(c, timeout=t, summary=f"services started on {i.target}"),
                shows=(c,), leaves=f"services started on {i.target}, health not yet confirmed",
                timeout_s=t + 5, destructive=True, if_failed=_ADVICE_DOWN)


def _wait_healthy(i: ProcedureInputs, *, deadline_s: float, title: str = "Wait for health",
                  failure_status: RunStatus = RunStatus.FAILED, if_failed: str = _ADVICE_HEALTH
                  ) -> Step:
    env = i.env
    interval = env.timeouts.health_interval_s

    async def action(ctx: StepContext) -> str:
        poll = await ctx.probe.wait_healthy(env.health_url, deadline_s=deadline_s,
                                            interval_s=interval)
        answer = f"HTTP {poll.status}" if poll.status is not None else poll.detail
        if not poll.ok:
            raise HealthCheckFailed(
                f"{env.health_url} still answered {answer} after {poll.elapsed_s:.0f} s "
                f"({poll.attempts} tries)"
            )
        ctx.emit(f"GET {env.health_url} -> {answer} after {poll.elapsed_s:.1f} s "
                 f"({poll.attempts} tries)")
        return f"healthy after {poll.elapsed_s:.1f} s"

    return Step(
        key="wait_healthy", title=title, action=action,
        shows=(f"GET {env.health_url} every {interval:g} s until 2xx "
               f"(at most {deadline_s:.0f} s)",),
        leaves=f"{env.service} runs {i.target} and answers healthy", timeout_s=deadline_s + 10,
        failure_status=failure_status, if_failed=if_failed,
        failed_state=f"services started on {i.target} but NOT healthy",
    )


def reported_version(body: str) -> str:
    """The version a /version endpoint reports: JSON ``{"version": …}`` or plain text."""
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text.splitlines()[0].strip() if text else ""
    if isinstance(data, dict):
        return str(data.get("version", ""))
    return str(data)


def _verify_version(i: ProcedureInputs) -> Step:
    env = i.env

    async def action(ctx: StepContext) -> str:
        status, body = await ctx.probe.fetch(env.version_url, timeout_s=10)
        if status is None or not 200 <= status < 300:
            raise HealthCheckFailed(f"{env.version_url} answered {status or body}")
        seen = reported_version(body)
        ctx.emit(f"GET {env.version_url} -> {seen[:80]}")
        if seen != ctx.target:
            raise HealthCheckFailed(
                f"{env.version_url} reports '{seen[:40]}', not {ctx.target}"
            )
        return f"version endpoint reports {seen}"

    return Step(
        key="verify_version", title="Check service version", action=action,
        shows=(f"GET {env.version_url} must report {i.target}",),
        leaves=f"{env.service} runs {i.target}, healthy, version confirmed", timeout_s=20,
        failed_state=f"services started and healthy, but not reporting {i.target}",
        if_failed="the host serves another version than expected; check which image runs.",
    )


def _confirm_services(i: ProcedureInputs) -> Step:
    env = i.env

    async def action(ctx: StepContext) -> str:
        containers = await ctx.docker.compose_containers(env.compose.project_name)
        for c in containers:
            ctx.emit(f"{c.name:<28} {c.service:<12} {c.image:<28} {c.status}")
        down = [c.name for c in containers if not c.up]
        if not containers:
            raise HealthCheckFailed(f"no containers of compose project "
                                    f"'{env.compose.project_name}' are running")
        if down:
            raise HealthCheckFailed(f"not running: {', '.join(down)}")
        if running_tag(containers, env) != ctx.target:
            raise HealthCheckFailed(f"{env.service} does not run {env.image}:{ctx.target}")
        return f"all {len(containers)} services Up"

    return Step(
        key="confirm_services", title="Confirm all services are up", action=action,
        shows=(f"docker ps (compose project {env.compose.project_name}): every service running",),
        leaves=f"{env.service} runs {i.target}, healthy, all services up", timeout_s=_COMMAND_S,
        if_failed="some services are not up; check `docker-compose ps` and their logs.",
    )


def _db(i: ProcedureInputs) -> DatabaseConfig:
    if i.env.database is None:
        raise ConfigError("this environment has no [database] section in the runbook")
    return i.env.database


def _latest_backup_listed(i: ProcedureInputs) -> Step:
    db = _db(i)
    # The glob is validated by the runbook schema (no shell syntax) and must stay unquoted.
    c = f"ls -laht {cmd.quote(db.backups_dir.rstrip('/'))}/{db.backup_glob} | head -1"

    async def action(ctx: StepContext) -> str:
        result = await ctx.host.run(c, timeout=_COMMAND_S, on_line=ctx.emit)
        if not result.output.strip():
            raise HostError(f"no backup matching {db.backup_glob} in {db.backups_dir}")
        return result.output.strip().splitlines()[0][-120:]

    return Step(key="verify_backup_exists", title="Verify a backup exists", action=action,
                shows=(c,), leaves=f"untouched: {i.env.service} still runs {i.current}",
                timeout_s=_COMMAND_S)


def _undo_count(i: ProcedureInputs) -> int:
    return _db(i).migrations_to_undo


def _migrations_query(i: ProcedureInputs) -> str:
    # One more row than is undone: the one that must be the newest afterwards.
    return cmd.migrations_head(_db(i), limit=max(5, _undo_count(i) + 1))


async def _applied_migrations(ctx: StepContext, query: str) -> list[str]:
    result = await ctx.host.run(query, timeout=_COMMAND_S, on_line=ctx.emit)
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
    db = _db(i)
    undo = _undo_count(i)
    query = _migrations_query(i)
    status_cmd = cmd.in_compose_dir(i.env, db.migrate_status) if db.migrate_status else None

    async def action(ctx: StepContext) -> str:
        if after and status_cmd:
            await ctx.host.run(status_cmd, timeout=_COMMAND_S, on_line=ctx.emit)
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
                timeout_s=_COMMAND_S * 2,
                if_failed="check the migrations table by hand before starting the services.")


def _migrate_down(i: ProcedureInputs, leaves: str) -> Step:
    db = _db(i)
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
                timeout_s=undo * (db.restore_timeout_s + _COMMAND_S) + 5, destructive=True,
                if_failed="the schema may be half migrated (the output says which migrations "
                          "were undone): coordinate with the DBA; services are stopped.")


def _verify_integrity(i: ProcedureInputs) -> Step:
    assert i.backup is not None
    path = i.backup.path
    c = cmd.verify_backup_integrity(path)

    async def action(ctx: StepContext) -> str:
        await ctx.host.run(c, timeout=_db(i).restore_timeout_s, on_line=ctx.emit)
        return f"{i.backup.name if i.backup else path} is a complete, readable dump"

    return Step(key="verify_backup", title="Verify backup integrity", action=action,
                shows=(c,), leaves=f"untouched: {i.env.service} still runs {i.current}",
                timeout_s=_db(i).restore_timeout_s + 5, establishes=Safeguard.BACKUP_VERIFIED,
                if_failed="choose another backup (`rollbot backups`); nothing was changed.")


def _safety_backup(i: ProcedureInputs, leaves: str) -> Step:
    db = _db(i)
    final = f"{db.backups_dir.rstrip('/')}/{db.name}_pre-restore_{i.epoch}.sql.gz"
    c = cmd.safety_backup(db, final)

    async def action(ctx: StepContext) -> str:
        await ctx.host.run(c, timeout=db.restore_timeout_s, on_line=ctx.emit)
        ctx.facts.safety_backup = final
        return f"safety backup {final}"

    return Step(key="safety_backup", title="Create safety backup of current database",
                action=action, shows=(c,), leaves=f"{leaves}; safety backup {final}",
                timeout_s=db.restore_timeout_s + 5, establishes=Safeguard.SAFETY_BACKUP_WRITTEN,
                if_failed="the database was NOT touched; free disk space or fix pg_dump, then "
                          "retry.")


def _restore_steps(i: ProcedureInputs, stopped: str) -> tuple[Step, ...]:
    db = _db(i)
    assert i.backup is not None
    backup = i.backup
    safety = f"{db.backups_dir.rstrip('/')}/{db.name}_pre-restore_{i.epoch}.sql.gz"
    guard = (Safeguard.BACKUP_VERIFIED, Safeguard.SAFETY_BACKUP_WRITTEN)
    restore_t = db.restore_timeout_s
    dropped = (f"services stopped; database {db.name} DROPPED; restore it from {backup.path} or "
               f"the safety backup {safety}")
    drop = cmd.drop_database(db)
    create = cmd.create_database(db)
    restore = cmd.restore_from(db, backup.path)
    counts = cmd.row_counts(db)

    async def verify(ctx: StepContext) -> str:
        result = await ctx.host.run(counts, timeout=_COMMAND_S, on_line=ctx.emit)
        for line in result.output.splitlines():
            name, sep, n = line.partition("|")
            if sep and n.strip().isdigit():
                ctx.facts.row_counts[name.strip()] = int(n)
        # A restore that "succeeded" but left a table the runbook cares about empty is a failure.
        empty = [t for t in db.verify_tables if ctx.facts.row_counts.get(t) == 0]
        if empty:
            raise HostError(
                f"table{'s' if len(empty) > 1 else ''} {', '.join(empty)} "
                f"{'are' if len(empty) > 1 else 'is'} EMPTY after restoring {backup.name}: the "
                "backup holds no rows for it, so the data was not brought back"
            )
        return ", ".join(f"{k}: {v} rows" for k, v in ctx.facts.row_counts.items()) or "no tables"

    return (
        Step(key="drop_database", title=f"Drop database {db.name}", action=_run(drop, timeout=120),
             shows=(drop,), leaves=dropped, timeout_s=125, destructive=True, requires=guard,
             if_failed=f"check whether {db.name} still exists; the safety backup is {safety}."),
        Step(key="create_database", title=f"Create database {db.name}",
             action=_run(create, timeout=120), shows=(create,),
             leaves=f"services stopped; database {db.name} EMPTY; restore pending from "
                    f"{backup.path} (safety backup {safety})",
             timeout_s=125, destructive=True, requires=guard,
             if_failed=f"database {db.name} does not exist: create it and restore by hand from "
                       f"{backup.path}."),
        Step(key="restore_backup", title=f"Restore {backup.name}",
             action=_run(restore, timeout=restore_t), shows=(restore,),
             leaves=f"services stopped; database {db.name} restored from {backup.name}",
             timeout_s=restore_t + 5, destructive=True, requires=guard,
             if_failed=f"the restore ran in one transaction, so {db.name} is EMPTY: retry the "
                       f"restore, or restore the safety backup {safety}."),
        Step(key="verify_restore", title="Verify restore (row counts)", action=verify,
             shows=(counts,), leaves=f"services stopped; database {db.name} restored from "
                                     f"{backup.name} and counted",
             timeout_s=_COMMAND_S,
             failed_state=f"services STOPPED; database {db.name} restored from {backup.name} "
                          f"but missing data (see the row counts); compose file still names "
                          f"{i.current}; the safety backup is {safety}",
             if_failed=f"do not start the services on this data: restore another backup "
                       f"(`rollbot backups`), or put the previous data back from the safety "
                       f"backup {safety}."),
    )


# --- the four procedures --------------------------------------------------------------------

def _bring_up(i: ProcedureInputs, switched: str) -> tuple[Step, ...]:
    """The spec's common ending: edit the compose file, start, wait for health, confirm."""
    return (
        _switch(i, switched),
        _start(i),
        _wait_healthy(i, deadline_s=i.env.timeouts.health_s),
        _verify_version(i),
        _confirm_services(i),
    )


def simple(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    return Procedure(
        name=ProcedureName.SIMPLE, title="Simple service rollback (no data changes)",
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            _check_current(i),
            _stop(i, f"services STOPPED; compose file still names {i.current}"),
            *_bring_up(i, f"services STOPPED; compose file names {i.target}"),
        ),
        succeeded_state=f"{s} runs {i.target}, healthy, all services up",
    )


def migrations(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    stopped = f"services STOPPED; compose file still names {i.current}"
    n = _undo_count(i)
    undone = "newest migration" if n == 1 else f"{n} newest migrations"
    return Procedure(
        name=ProcedureName.MIGRATIONS, title="Rollback with database migration rollback",
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            _check_current(i),
            _latest_backup_listed(i),
            _stop(i, stopped),
            _migration_status(i, key="migration_status", title="Check current migration status",
                              leaves=stopped, after=False),
            _migrate_down(i, f"{stopped}; {undone} rolled back"),
            _migration_status(i, key="verify_migration", title="Verify migration rolled back",
                              leaves=f"{stopped}; {undone} rolled back", after=True),
            *_bring_up(i, f"services STOPPED; {undone} rolled back; compose file names "
                          f"{i.target}"),
        ),
        succeeded_state=f"{s} runs {i.target} on the previous schema, healthy, all services up",
    )


def restore(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    stopped = f"services STOPPED; database untouched; compose file still names {i.current}"
    return Procedure(
        name=ProcedureName.RESTORE, title="Full database restore from backup (DATA LOSS)",
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            _check_current(i),
            _verify_integrity(i),
            _stop(i, stopped),
            _safety_backup(i, stopped),
            *_restore_steps(i, stopped),
            *_bring_up(i, f"services STOPPED; database restored; compose file names {i.target}"),
        ),
        succeeded_state=f"{s} runs {i.target} on data restored from "
                        f"{i.backup.name if i.backup else '?'}, healthy, all services up",
    )


def emergency(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    remove = cmd.remove_latest_tag(i.env)
    return Procedure(
        name=ProcedureName.EMERGENCY, title="Emergency rollback (fastest)",
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            _stop(i, f"services STOPPED; compose file still names {i.current}"),
            Step(key="remove_latest", title=f"Remove {i.env.image}:latest (if present)",
                 action=_run(remove, timeout=_COMMAND_S), shows=(remove,),
                 leaves=f"services STOPPED; compose file still names {i.current}",
                 timeout_s=_COMMAND_S + 5, destructive=True, if_failed=_ADVICE_DOWN),
            _switch(i, f"services STOPPED; compose file names {i.target}"),
            _start(i),
            _wait_healthy(
                i, deadline_s=i.env.timeouts.emergency_health_s, title="Verify immediately",
                failure_status=RunStatus.RESTORE_RECOMMENDED,
                if_failed="restore from backup: run the `restore` procedure (Procedure 3).",
            ),
        ),
        succeeded_state=f"{s} runs {i.target} and answers healthy",
    )


BUILDERS: dict[ProcedureName, Callable[[ProcedureInputs], Procedure]] = {
    ProcedureName.SIMPLE: simple,
    ProcedureName.MIGRATIONS: migrations,
    ProcedureName.RESTORE: restore,
    ProcedureName.EMERGENCY: emergency,
}


def build(name: ProcedureName, inputs: ProcedureInputs) -> Procedure:
    return BUILDERS[name](inputs)
