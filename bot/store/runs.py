"""The store (asyncpg): runs, steps, and the audit log, in PostgreSQL.

Migrations are versioned SQL files applied at start under an advisory lock. One run per
environment: the run holds the environment's advisory lock on a session of its own
(``run_lock.py``), and a partial unique index keeps a second active row out regardless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg

from bot.approvals import Approvals
from bot.errors import RunLocked, StoreError
from bot.events import Observer, RunEvent, RunFinished, StepFinished, StepStarted
from bot.model import (
    AuditEntry,
    Check,
    ProcedureName,
    RollbackRequest,
    RunOutcome,
    RunRecord,
    RunStatus,
    StepResult,
    StepStatus,
)
from bot.redaction import redact
from bot.store.dead_runs import ACTIVE, mark_interrupted
from bot.store.run_lock import EnvironmentLock, Guarded

log = logging.getLogger(__name__)

_LOCK_SETTLE_S = 5.0  # a lock held with no run row yet: another process is about to write it
# A run of an older rollbot (during a rolling upgrade) holds no session lock: for it alone, a
# heartbeat quiet this long still means its process died.
_LEGACY_QUIET_S = 60
_MIGRATION_LOCK = 0x726F6C6C  # "roll"
_ACTIVE = ACTIVE


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("bot.store.migrations").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(found)


class Store:
    """Owns an asyncpg pool; whoever opens it closes it."""

    def __init__(self, pool: asyncpg.Pool, *, dsn: str) -> None:
        self._pool = pool
        self.pool = pool  # shared with the approvals and verification tables
        self.dsn = dsn
        self.approvals = Approvals(pool)
        # Told of every run as it is recorded ended, whichever path ended it (the metrics).
        self.ended_hooks: list[Callable[[RunRecord], None]] = []
        self._locks: dict[int, EnvironmentLock] = {}  # the runs of this process, by id

    @classmethod
    async def open(cls, dsn: str) -> Store:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5, timeout=10,
                                             command_timeout=30)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"cannot reach the rollbot database: {exc}") from None
        store = cls(pool, dsn=dsn)
        await store.migrate()
        return store

    async def close(self) -> None:
        for lock in list(self._locks.values()):
            await lock.release()
        self._locks.clear()
        await self._pool.close()

    async def migrate(self) -> list[str]:
        """Apply the SQL migrations not applied yet; returns their names."""
        applied: list[str] = []
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in _migrations():
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                   version, name)
                applied.append(name)
        if applied:
            log.info("applied database migrations: %s", ", ".join(applied))
        return applied

    async def ping(self) -> bool:
        try:
            async with self._pool.acquire(timeout=3) as conn:
                return bool(await conn.fetchval("SELECT 1"))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False

    # --- runs --------------------------------------------------------------------------------

    async def begin_run(self, request: RollbackRequest, *, owner: str) -> int:
        """Take the environment's lock and create the run, or raise ``RunLocked``.

        The lock is held by a session of the run's own until ``finish_run``. An active run found
        while holding the lock belongs to a process that died: it is marked interrupted first.
        """
        env = request.environment
        lock = await _take_lock(self._pool, self.dsn, env)
        dead: int | None = None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                holder = await conn.fetchrow(
                    "SELECT id, requested_by, created_at, to_version, holds_session_lock,"
                    " now() - heartbeat_at > make_interval(secs => $3) AS quiet FROM runs"
                    " WHERE environment = $1 AND state = ANY($2::text[])",
                    env, list(_ACTIVE), _LEGACY_QUIET_S)
                if holder is not None and not (holder["holds_session_lock"] or holder["quiet"]):
                    raise _locked(env, holder)  # an older rollbot's live run: it holds no lock
                if holder is not None:  # we hold its lock, so its process is gone
                    await mark_interrupted(conn, int(holder["id"]), found_by=owner)
                    dead = int(holder["id"])
                run_id = int(await conn.fetchval(
                    "INSERT INTO runs (environment, procedure, state, requested_by, approved_by,"
                    " reason, to_version, backup, owner, holds_session_lock) VALUES ($1, $2,"
                    " 'preflight', $3, $4, $5, $6, $7, $8, true) RETURNING id",
                    env, request.procedure.value, request.requested_by,
                    list(request.approved_by), request.reason,
                    str(request.target) if request.target else None, request.backup, owner))
        except asyncpg.UniqueViolationError:
            # An older rollbot (it takes no session lock) inserted its run in between.
            await lock.release()
            if (holder := await _active_holder(self._pool, env)) is None:
                raise StoreError("could not take the environment lock; try again") from None
            raise _locked(env, holder) from None
        except BaseException:
            await lock.release()
            raise
        self._locks[run_id] = lock
        if dead is not None:
            await self.tell_ended(dead)
        return run_id

    def run_lock(self, run_id: int) -> EnvironmentLock | None:
        """The lock a run of this process holds, until it finishes."""
        return self._locks.get(run_id)

    def held_locks(self) -> list[str]:
        """The environments whose lock a run of this process holds now (for the metrics)."""
        return sorted({lock.environment for lock in self._locks.values()})

    def guard(self, run: Guarded) -> None:
        """``run`` stops before its next step once its lock's session is lost."""
        if (lock := self._locks.get(run.run_id)) is not None:
            lock.guard(run)

    async def start_run(self, run_id: int, *, from_version: str, to_version: str,
                        backup: str | None, checks: tuple[Check, ...]) -> None:
        await self._pool.execute(
            "UPDATE runs SET state = 'running', from_version = $2, to_version = $3, backup = $4,"
            " checks = $5::jsonb, heartbeat_at = now() WHERE id = $1",
            run_id, from_version, to_version, backup, _checks_json(checks))

    async def heartbeat(self, run_id: int) -> None:
        """The run's last sign of life (shown when it is found dead; the lock decides that)."""
        await self._pool.execute("UPDATE runs SET heartbeat_at = now() WHERE id = $1", run_id)

    async def finish_run(self, outcome: RunOutcome, *, unless_ended: bool = False) -> None:
        """Record how the run ended, then free the environment (end the lock's session).

        ``unless_ended``: only if nothing recorded its end yet (the catch-all after an error,
        which must not turn a run recorded as succeeded into an interrupted one).
        """
        try:
            await self._record_end(outcome, unless_ended=unless_ended)
        finally:
            if (lock := self._locks.pop(outcome.run_id, None)) is not None:
                await lock.release()

    async def _record_end(self, outcome: RunOutcome, *, unless_ended: bool) -> None:
        recorded = await self._pool.fetchval(
            "UPDATE runs SET state = $2, host_state = $3, message = $4, finished_at = now(),"
            " from_version = COALESCE($5, from_version), to_version = COALESCE($6, to_version),"
            " checks = CASE WHEN $7::jsonb = '[]'::jsonb THEN checks ELSE $7::jsonb END"
            " WHERE id = $1 AND (NOT $8 OR finished_at IS NULL) RETURNING true",
            outcome.run_id, outcome.status.value, outcome.host_state, outcome.message,
            outcome.from_version or None, outcome.to_version or None,
            _checks_json(outcome.checks), unless_ended)
        if recorded:
            await self.tell_ended(outcome.run_id)

    async def tell_ended(self, run_id: int) -> None:
        """Tell ``ended_hooks`` of a run just recorded ended (any path that ends a run calls it)."""
        if not self.ended_hooks:
            return
        row = await self._pool.fetchrow("SELECT * FROM runs WHERE id = $1", run_id)
        for hook in self.ended_hooks if row is not None else []:
            try:
                hook(_record(row, []))
            except Exception:
                log.exception("run-ended hook failed for run #%s", run_id)

    async def step_started(self, run_id: int, *, position: int, key: str, title: str,
                           destructive: bool, started_at: datetime, host: str = "") -> None:
        await self._pool.execute(
            "INSERT INTO run_steps (run_id, position, key, title, destructive, state, started_at,"
            " host) VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)"
            " ON CONFLICT (run_id, position) DO UPDATE"
            " SET state = 'running', started_at = EXCLUDED.started_at",
            run_id, position, key, title, destructive, started_at, host)

    async def step_finished(self, run_id: int, *, position: int, result: StepResult,
                            destructive: bool, host_state: str) -> None:
        await self._pool.execute(
            "INSERT INTO run_steps (run_id, position, key, title, destructive, state, started_at,"
            " finished_at, summary, output_tail, error, host_state, host)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            " ON CONFLICT (run_id, position) DO UPDATE SET state = EXCLUDED.state,"
            # The step's own start: the "started" record is written by an observer, later.
            " started_at = COALESCE(EXCLUDED.started_at, run_steps.started_at),"
            " finished_at = EXCLUDED.finished_at, summary = EXCLUDED.summary,"
            " output_tail = EXCLUDED.output_tail, error = EXCLUDED.error,"
            " host_state = EXCLUDED.host_state",
            run_id, position, result.key, result.title, destructive, result.status.value,
            result.started_at, result.finished_at, result.summary, result.output_tail,
            result.error, host_state, result.host)

    async def get_run(self, run_id: int) -> RunRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM runs WHERE id = $1", run_id)
        if row is None:
            return None
        steps = await self._pool.fetch(
            "SELECT * FROM run_steps WHERE run_id = $1 ORDER BY position", run_id)
        return _record(row, steps)

    async def run_checks(self, run_id: int) -> tuple[Check, ...]:
        raw = await self._pool.fetchval("SELECT checks FROM runs WHERE id = $1", run_id)
        return tuple(Check(**c) for c in json.loads(raw or "[]"))

    async def approvers(self, run_id: int) -> tuple[str, ...]:
        raw = await self._pool.fetchval("SELECT approved_by FROM runs WHERE id = $1", run_id)
        return tuple(raw or ())

    async def save_report(self, run_id: int, *, path: str, markdown: str) -> None:
        await self._pool.execute(
            "INSERT INTO run_reports (run_id, path, markdown) VALUES ($1, $2, $3)"
            " ON CONFLICT (run_id) DO UPDATE SET path = EXCLUDED.path,"
            " markdown = EXCLUDED.markdown, updated_at = now(),"
            " revision = run_reports.revision + 1", run_id, path, markdown)

    async def report(self, run_id: int) -> str | None:
        value = await self._pool.fetchval("SELECT markdown FROM run_reports WHERE run_id = $1",
                                          run_id)
        return str(value) if value is not None else None

    async def notice_posted(self, run_id: int) -> bool:
        return bool(await self._pool.fetchval(
            "SELECT true FROM run_notices WHERE run_id = $1", run_id))

    async def active_run(self, environment: str) -> RunRecord | None:
        row = await self._pool.fetchrow(
            "SELECT id FROM runs WHERE environment = $1 AND state = ANY($2::text[])",
            environment, list(_ACTIVE))
        return await self.get_run(int(row["id"])) if row else None

    async def history(self, *, limit: int = 10, environment: str | None = None
                      ) -> list[RunRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM runs WHERE ($2::text IS NULL OR environment = $2)"
            " ORDER BY created_at DESC, id DESC LIMIT $1", limit, environment)
        return [_record(r, []) for r in rows]

    # --- cancellation, notices ---------------------------------------------------------------

    async def request_cancel(self, run_id: int, *, by: str) -> bool:
        """Ask an active run (in any rollbot process) to stop before its next step."""
        return await self._pool.fetchval(
            "UPDATE runs SET cancel_requested_by = $2 WHERE id = $1"
            " AND state = ANY($3::text[]) RETURNING true", run_id, by, list(_ACTIVE)) or False

    async def cancel_requested_by(self, run_id: int) -> str | None:
        value = await self._pool.fetchval(
            "SELECT cancel_requested_by FROM runs WHERE id = $1", run_id)
        return str(value) if value else None

    async def save_notice(self, run_id: int, *, front_ref: dict[str, Any]) -> None:
        await self._pool.execute(
            "INSERT INTO run_notices (run_id, front_ref) VALUES ($1, $2::jsonb)"
            " ON CONFLICT (run_id) DO UPDATE SET front_ref = EXCLUDED.front_ref",
            run_id, json.dumps(front_ref))

    async def set_eta(self, run_id: int, *, eta: str, by: str,
                      front_ref: dict[str, Any]) -> None:
        """Record the fix ETA announced in the run's stakeholder notice."""
        await self._pool.execute(
            "INSERT INTO run_notices (run_id, front_ref, eta, eta_set_by) VALUES"
            " ($1, $4::jsonb, $2, $3) ON CONFLICT (run_id) DO UPDATE SET eta = EXCLUDED.eta,"
            " eta_set_by = EXCLUDED.eta_set_by, updated_at = now()",
            run_id, eta, by, json.dumps(front_ref))

    async def eta(self, run_id: int) -> str:
        value = await self._pool.fetchval("SELECT eta FROM run_notices WHERE run_id = $1",
                                          run_id)
        return str(value) if value else "TBD"

    # --- audit -------------------------------------------------------------------------------

    async def audit(self, *, environment: str, actor: str, kind: str, run_id: int | None = None,
                    host: str = "", command: str = "", detail: str = "") -> int:
        """One audit row. Commands and details are stored redacted: the log is read widely."""
        command, detail = redact(command), redact(detail)
        return int(await self._pool.fetchval(
            "INSERT INTO audit_log (run_id, environment, actor, kind, host, command, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            run_id, environment, actor, kind, host, command, detail))

    async def link_audit(self, entry_ids: list[int], *, run_id: int) -> None:
        """Attach entries written before their run existed (pre-flight's reads) to that run."""
        await self._pool.execute(
            "UPDATE audit_log SET run_id = $2 WHERE id = ANY($1::bigint[]) AND run_id IS NULL",
            entry_ids, run_id)

    async def audit_result(self, entry_id: int, *, exit_status: int | None, duration_s: float,
                           detail: str = "") -> None:
        await self._pool.execute(
            "UPDATE audit_log SET exit_status = $2, duration_ms = $3,"
            " detail = CASE WHEN $4 = '' THEN detail ELSE $4 END WHERE id = $1",
            entry_id, exit_status, round(duration_s * 1000), redact(detail))

    async def audit_entries(self, *, run_id: int | None = None, environment: str | None = None,
                            limit: int = 500) -> list[AuditEntry]:
        rows = await self._pool.fetch(
            "SELECT * FROM audit_log WHERE ($1::bigint IS NULL OR run_id = $1)"
            " AND ($2::text IS NULL OR environment = $2) ORDER BY id LIMIT $3",
            run_id, environment, limit)
        return [
            AuditEntry(at=r["at"], run_id=r["run_id"], environment=r["environment"],
                       actor=r["actor"], kind=r["kind"], host=r["host"], command=r["command"],
                       exit_status=r["exit_status"], detail=r["detail"])
            for r in rows
        ]


def step_recorder(store: Store) -> Observer:
    """An engine observer that records each step as it starts and ends."""

    async def record(event: RunEvent) -> None:
        if isinstance(event, StepStarted):
            await store.step_started(event.run_id, position=event.step.index,
                                     key=event.step.key, title=event.step.title,
                                     destructive=event.step.destructive,
                                     started_at=datetime.now(UTC), host=event.step.host)
        elif isinstance(event, StepFinished):
            await store.step_finished(event.run_id, position=event.step.index,
                                      result=event.result, destructive=event.step.destructive,
                                      host_state=event.host_state)
        elif isinstance(event, RunFinished):
            for i, step in enumerate(event.outcome.steps):
                if step.started_at is None:
                    await store.step_finished(event.run_id, position=i, result=step,
                                              destructive=False, host_state="")
    return record


async def _active_holder(pool: asyncpg.Pool, env: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT id, requested_by, created_at, to_version FROM runs"
        " WHERE environment = $1 AND state = ANY($2::text[])", env, list(_ACTIVE))


async def _take_lock(pool: asyncpg.Pool, dsn: str, env: str) -> EnvironmentLock:
    """The environment's lock, or ``RunLocked`` naming the run that holds it."""
    deadline = time.monotonic() + _LOCK_SETTLE_S
    while True:
        try:
            lock = await EnvironmentLock.take(dsn, env)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"cannot reach the rollbot database: {exc}") from None
        if lock is not None:
            return lock
        if (holder := await _active_holder(pool, env)) is not None:
            raise _locked(env, holder)
        # Held, but no run row yet: another process is between its lock and its insert.
        if time.monotonic() > deadline:
            raise StoreError(f"another rollbot process holds {env}'s lock but shows no run; "
                             "nothing was changed. Try again in a few seconds.")
        await asyncio.sleep(0.1)


def _locked(environment: str, holder: asyncpg.Record) -> RunLocked:
    return RunLocked(environment=environment, run_id=int(holder["id"]),
                     requested_by=str(holder["requested_by"]), since=holder["created_at"],
                     target=str(holder["to_version"] or "the previous version"))


def _checks_json(checks: tuple[Check, ...]) -> str:
    return json.dumps([asdict(c) for c in checks])


def _record(row: asyncpg.Record, steps: list[asyncpg.Record]) -> RunRecord:
    return RunRecord(
        id=int(row["id"]), environment=row["environment"],
        procedure=ProcedureName(row["procedure"]), status=RunStatus(row["state"]),
        requested_by=row["requested_by"], reason=row["reason"],
        from_version=row["from_version"], to_version=row["to_version"], backup=row["backup"],
        created_at=row["created_at"], finished_at=row["finished_at"],
        host_state=row["host_state"], message=row["message"],
        steps=tuple(_step(s) for s in steps),
        live_message_url=row["live_message_url"],
    )


def _step(s: Any) -> StepResult:
    return StepResult(key=s["key"], title=s["title"], status=StepStatus(s["state"]),
                      started_at=s["started_at"], finished_at=s["finished_at"],
                      summary=s["summary"], output_tail=s["output_tail"], error=s["error"],
                      host=s["host"])
