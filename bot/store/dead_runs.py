"""Runs whose rollbot process died: marked interrupted with the host state they last recorded.

Whoever notices first (the next rollback's ``begin_run``, or any ``rollbot serve``'s sweep) marks
the run with one conditional UPDATE, so it happens once; telling a front about it is claimed
separately, also once, so a finding made by the terminal is still shown in Slack by a replica.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from bot.store.run_lock import DEAD_RUNS_SQL

log = logging.getLogger(__name__)

ACTIVE = ("preflight", "running")


@dataclass(frozen=True)
class StepTrace:
    """What a dead run's step row says."""

    position: int
    title: str
    state: str
    host_state: str
    destructive: bool
    host: str = ""


@dataclass(frozen=True)
class Interruption:
    """A run marked interrupted because its process died, and what it had recorded."""

    run_id: int
    environment: str
    host_state: str
    message: str
    found_by: str


def interruption_words(*, environment: str, owner: str, last_seen: datetime | None,
                       steps: Sequence[StepTrace]) -> tuple[str, str]:
    """The dead run's host state (the last one it recorded) and the sentence that explains it.

    ``steps`` are in the order they ended (running ones last).
    """
    recorded = [s for s in steps if s.state in ("succeeded", "failed") and s.host_state]
    running = [s for s in steps if s.state == "running"]
    half_done = next((s for s in running if s.destructive), None)
    last = recorded[-1] if recorded else None
    if last is not None:
        host_state = last.host_state
    elif half_done is not None:
        host_state = f"unknown: rollbot died during step {_named(half_done)}"
    else:
        host_state = "unchanged: rollbot died before any step changed the host"
    seen = f" (last seen alive at {last_seen:%H:%M:%S} UTC)" if last_seen else ""
    text = (f"Interrupted: the rollbot process running this rollback ({owner}) died{seen}; its "
            f"database session ended, which freed {environment}'s lock.")
    if last is not None:
        text += f" The last host state it recorded, after step {_named(last)}: {host_state}."
    else:
        text += " No step had finished."
    changed = half_done is not None or any(s.destructive for s in recorded)
    if half_done is not None:
        text += (f" Step {_named(half_done)} was running when it died and may be half done, "
                 "so the host may be mid-procedure: check it before trusting this state.")
    elif changed:
        text += " The host may be mid-procedure: check it before trusting this state."
    else:
        text += " Nothing had changed the host yet."
    return host_state, text


def _named(step: StepTrace) -> str:
    where = f" on {step.host}" if step.host else ""
    return f"{step.position + 1} '{step.title}'{where}"


async def dead_runs(conn: asyncpg.Connection | asyncpg.Pool) -> list[int]:
    """Active runs whose environment's lock no session holds: their process is gone."""
    return [int(r["id"]) for r in await conn.fetch(DEAD_RUNS_SQL, list(ACTIVE))]


async def mark_interrupted(conn: asyncpg.Connection, run_id: int, *,
                           found_by: str) -> Interruption | None:
    """Mark an active run interrupted, once whoever asks; None when it is no longer active.

    Call it only for a run whose lock is free (``dead_runs``, or with the lock in hand).
    """
    async with conn.transaction():
        run = await conn.fetchrow(
            "SELECT environment, owner, heartbeat_at FROM runs"
            " WHERE id = $1 AND state = ANY($2::text[]) FOR NO KEY UPDATE", run_id,
            list(ACTIVE))
        if run is None:
            return None  # another process marked it first, or it ended
        rows = await conn.fetch(
            "SELECT position, title, state, host_state, destructive, host FROM run_steps"
            " WHERE run_id = $1 ORDER BY finished_at NULLS LAST, position", run_id)
        steps = [StepTrace(position=r["position"], title=r["title"], state=r["state"],
                           host_state=r["host_state"], destructive=r["destructive"],
                           host=r["host"]) for r in rows]
        host_state, message = interruption_words(
            environment=run["environment"], owner=run["owner"], last_seen=run["heartbeat_at"],
            steps=steps)
        await conn.execute(
            "UPDATE runs SET state = 'interrupted', finished_at = now(), host_state = $2,"
            " message = $3 WHERE id = $1", run_id, host_state, message)
        await conn.execute(
            "INSERT INTO run_interruptions (run_id, environment, host_state, found_by)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (run_id) DO NOTHING",
            run_id, run["environment"], host_state, found_by)
        await conn.execute(
            "INSERT INTO audit_log (run_id, environment, actor, kind, detail)"
            " VALUES ($1, $2, $3, 'run', $4)",
            run_id, run["environment"], f"rollbot:{found_by}", f"interrupted: {message}")
        # An automatic rollback's deploy waits for this run to end: it ended, not rolled back
        # (else it would read "rolling back" forever, and be gauged so).
        await conn.execute("UPDATE deploys SET state = 'failed' WHERE run_id = $1"
                           " AND state = 'rolling_back'", run_id)
    log.warning("run #%s in %s: %s", run_id, run["environment"], message)
    return Interruption(run_id=run_id, environment=run["environment"], host_state=host_state,
                        message=message, found_by=found_by)


async def claim_untold(pool: asyncpg.Pool, *, by: str) -> list[Interruption]:
    """The interruptions no front was told of yet, now claimed by ``by`` (each once)."""
    rows = await pool.fetch(
        "UPDATE run_interruptions i SET announced_by = $1, announced_at = now() FROM runs r"
        " WHERE r.id = i.run_id AND i.announced_at IS NULL"
        " RETURNING i.run_id, i.environment, i.host_state, i.found_by, r.message", by)
    return [Interruption(run_id=int(r["run_id"]), environment=r["environment"],
                         host_state=r["host_state"], message=r["message"],
                         found_by=r["found_by"]) for r in sorted(rows, key=lambda r: r["run_id"])]
