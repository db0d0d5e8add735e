"""Procedure 3: a full database restore from a backup (data loss), behind its two safeguards."""

from __future__ import annotations

from bot.errors import HostError
from bot.model import ProcedureName
from bot.procedures import commands as cmd
from bot.procedures import steps
from bot.procedures.base import (
    Procedure,
    ProcedureInputs,
    ProcedureTitle,
    Safeguard,
    Step,
    StepContext,
)

TITLE = ProcedureTitle(
    name=ProcedureName.RESTORE, number=3,
    words="full database restore from backup", note="DATA LOSS",
    spec_heading="Full Database Restore from Backup",
    use_when="Data corruption or critical data loss",
)
# Step keys that bot/recovery/offers.py reasons about (what a cancelled run left behind).
SAFETY_BACKUP, DROP = "safety_backup", "drop_database"


def procedure(i: ProcedureInputs) -> Procedure:
    s = i.env.service
    stopped = f"services STOPPED; database untouched; compose file still names {i.current}"
    return Procedure(
        name=TITLE.name, title=TITLE.title,
        initial_state=f"untouched: {s} still runs {i.current}",
        steps=(
            steps.check_current(i),
            _verify_integrity(i),
            steps.stop(i, stopped),
            _safety_backup(i, stopped),
            *_restore_steps(i),
            *steps.bring_up(i, f"services STOPPED; database restored; compose file names "
                               f"{i.target}"),
        ),
        succeeded_state=f"{s} runs {i.target} on data restored from "
                        f"{i.backup.name if i.backup else '?'}, healthy, all services up",
    )


def _verify_integrity(i: ProcedureInputs) -> Step:
    assert i.backup is not None
    path = i.backup.path
    c = cmd.verify_backup_integrity(path)
    timeout = steps.database(i).restore_timeout_s

    async def action(ctx: StepContext) -> str:
        await ctx.host.run(c, timeout=timeout, on_line=ctx.emit)
        return f"{i.backup.name if i.backup else path} is a complete, readable dump"

    return Step(key="verify_backup", title="Verify backup integrity", action=action,
                shows=(c,), leaves=f"untouched: {i.env.service} still runs {i.current}",
                timeout_s=timeout + 5, establishes=Safeguard.BACKUP_VERIFIED,
                if_failed="choose another backup (`rollbot backups`); nothing was changed.")


def _safety_backup_path(i: ProcedureInputs) -> str:
    db = steps.database(i)
    return f"{db.backups_dir.rstrip('/')}/{db.name}_pre-restore_{i.epoch}.sql.gz"


def _safety_backup(i: ProcedureInputs, leaves: str) -> Step:
    db = steps.database(i)
    final = _safety_backup_path(i)
    c = cmd.safety_backup(db, final)

    async def action(ctx: StepContext) -> str:
        await ctx.host.run(c, timeout=db.restore_timeout_s, on_line=ctx.emit)
        ctx.facts.safety_backup = final
        return f"safety backup {final}"

    return Step(key=SAFETY_BACKUP, title="Create safety backup of current database",
                action=action, shows=(c,), leaves=f"{leaves}; safety backup {final}",
                timeout_s=db.restore_timeout_s + 5, establishes=Safeguard.SAFETY_BACKUP_WRITTEN,
                if_failed="the database was NOT touched; free disk space or fix pg_dump, then "
                          "retry.")


def _restore_steps(i: ProcedureInputs) -> tuple[Step, ...]:
    db = steps.database(i)
    assert i.backup is not None
    backup = i.backup
    safety = _safety_backup_path(i)
    guard = (Safeguard.BACKUP_VERIFIED, Safeguard.SAFETY_BACKUP_WRITTEN)
    restore_t = db.restore_timeout_s
    dropped = (f"services stopped; database {db.name} DROPPED; restore it from {backup.path} or "
               f"the safety backup {safety}")
    drop = cmd.drop_database(db)
    create = cmd.create_database(db)
    restore = cmd.restore_from(db, backup.path)
    counts = cmd.row_counts(db)

    async def verify(ctx: StepContext) -> str:
        result = await ctx.host.run(counts, timeout=steps.COMMAND_S, on_line=ctx.emit)
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
        Step(key=DROP, title=f"Drop database {db.name}",
             action=steps.run_command(drop, timeout=120), shows=(drop,), leaves=dropped,
             timeout_s=125, destructive=True, requires=guard,
             if_failed=f"check whether {db.name} still exists; the safety backup is {safety}."),
        Step(key="create_database", title=f"Create database {db.name}",
             action=steps.run_command(create, timeout=120), shows=(create,),
             leaves=f"services stopped; database {db.name} EMPTY; restore pending from "
                    f"{backup.path} (safety backup {safety})",
             timeout_s=125, destructive=True, requires=guard,
             if_failed=f"database {db.name} does not exist: create it and restore by hand from "
                       f"{backup.path}."),
        Step(key="restore_backup", title=f"Restore {backup.name}",
             action=steps.run_command(restore, timeout=restore_t), shows=(restore,),
             leaves=f"services stopped; database {db.name} restored from {backup.name}",
             timeout_s=restore_t + 5, destructive=True, requires=guard,
             if_failed=f"the restore ran in one transaction, so {db.name} is EMPTY: retry the "
                       f"restore, or restore the safety backup {safety}."),
        Step(key="verify_restore", title="Verify restore (row counts)", action=verify,
             shows=(counts,), leaves=f"services stopped; database {db.name} restored from "
                                     f"{backup.name} and counted",
             timeout_s=steps.COMMAND_S,
             failed_state=f"services STOPPED; database {db.name} restored from {backup.name} "
                          f"but missing data (see the row counts); compose file still names "
                          f"{i.current}; the safety backup is {safety}",
             if_failed=f"do not start the services on this data: restore another backup "
                       f"(`rollbot backups`), or put the previous data back from the safety "
                       f"backup {safety}."),
    )
