"""The environment's run lock: a session-level advisory lock held by the run's own connection.

A run takes ``pg_advisory_lock`` on (``_LOCK_SPACE``, ``hashtext(environment)``) on a database
session of its own, before its row is written, and keeps that session until its row says it
ended. So an active row whose lock is free belongs to a process that died (or lost its session):
PostgreSQL frees a session's locks the moment the session ends, and nobody waits for a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg

log = logging.getLogger(__name__)

# The first key of every run lock ("runl"); the second is hashtext(environment). Two-key advisory
# locks do not share a key space with one-key ones such as the migrations' lock.
_LOCK_SPACE = 0x72756E6C
VERIFY_TIMEOUT_S = 5.0
# When rollbot's host vanishes (no FIN, no RST), the server ends the session after these probes
# rather than after the kernel's two hours: the lock is free again within about 11 s.
_KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
               "tcp_keepalives_count": "3", "application_name": "rollbot run lock"}

# The active runs whose environment's lock no session holds (in this database).
DEAD_RUNS_SQL = (
    "SELECT r.id FROM runs r WHERE r.state = ANY($1::text[]) AND r.holds_session_lock"
    " AND NOT EXISTS ("
    " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND l.classid = {_LOCK_SPACE}::oid AND l.objid = hashtext(r.environment)::oid"
    " AND l.objsubid = 2) ORDER BY r.id")

LOCK_LOST = ("rollbot lost the database session that held {environment}'s lock ({detail}), so "
             "another rollbot process may now take the environment. It stopped here rather "
             "than go on without the lock.")


class Guarded(Protocol):
    """A run (``bot.engine.Run``): asks its gate before each step, and can be stopped."""

    run_id: int
    gate: Callable[[], Awaitable[str | None]] | None

    def stop(self, why: str) -> None: ...


class EnvironmentLock:
    """One environment's run lock, held for a run's whole life by a session of its own."""

    def __init__(self, conn: asyncpg.Connection, environment: str) -> None:
        self._conn = conn
        self.environment = environment
        self.lost: str | None = None  # why the lock is no longer ours, once it is not
        self._released = False
        self._listeners: list[Callable[[str], None]] = []
        self._query = asyncio.Lock()  # the gate and the heartbeat share one session
        conn.add_termination_listener(self._terminated)

    @classmethod
    async def take(cls, dsn: str, environment: str) -> EnvironmentLock | None:
        """The lock on a new session, or None when another session holds it (never waits)."""
        conn = await asyncpg.connect(dsn, timeout=10, command_timeout=VERIFY_TIMEOUT_S,
                                     server_settings=_KEEPALIVES)
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))",
                                      _LOCK_SPACE, environment)
        except BaseException:
            conn.terminate()
            raise
        if not got:
            await conn.close()
            return None
        return cls(conn, environment)

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(why)`` once the lock is lost (at once if it already is)."""
        self._listeners.append(callback)
        if self.lost is not None:
            callback(self.lost)

    def guard(self, run: Guarded) -> None:
        """Before each step the run checks the session; once it is lost, the run stops."""
        run.gate = self.verify
        self.on_lost(run.stop)

    async def verify(self) -> str | None:
        """None while the session (and so the lock) is alive; else why it is lost."""
        if self.lost is None and not self._released:
            try:
                async with self._query:
                    await asyncio.wait_for(self._conn.fetchval("SELECT 1"),
                                           timeout=VERIFY_TIMEOUT_S)
            except Exception as exc:  # whatever the failure, the lock is no longer proven ours
                self._lose(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return self.lost

    async def release(self) -> None:
        """End the session: PostgreSQL frees the lock with it."""
        if self._released:
            return
        self._released = True
        try:
            await asyncio.wait_for(self._conn.close(), timeout=VERIFY_TIMEOUT_S)
        except Exception:
            self._conn.terminate()

    def _terminated(self, _conn: object) -> None:
        if not self._released:
            self._lose("the connection to the database was closed")

    def _lose(self, detail: str) -> None:
        if self.lost is not None:
            return
        self.lost = LOCK_LOST.format(environment=self.environment, detail=detail)
        log.error("%s", self.lost)
        # Make sure the session really ends if the server still has it: the lock must not
        # outlive our belief that we lost it.
        self._conn.terminate()
        for callback in self._listeners:
            try:
                callback(self.lost)
            except Exception:
                log.exception("a lost-lock listener of %s failed", self.environment)
