"""``run_recoveries`` in PostgreSQL: one offer per cancelled-while-down run, one choice each."""

from __future__ import annotations

import asyncpg

from bot.model import ProcedureName
from bot.recovery.offers import ABANDONED_CHOICE_S, Claim, RecoveryChoice, RecoveryOffer


class RecoveryStore:
    """``run_recoveries``: one offer per cancelled-while-down run, one choice per offer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def offer(self, o: RecoveryOffer) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Only the newest offer of an environment describes production as it is.
            await conn.execute(
                "UPDATE run_recoveries SET state = 'superseded' WHERE environment = $1"
                " AND state = 'offered' AND run_id <> $2", o.environment, o.run_id)
            await conn.execute(
                "INSERT INTO run_recoveries (run_id, environment, procedure, from_version,"
                " to_version, backup, backup_size, backup_modified, done_steps, host_state,"
                " facts, put_back_refusal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                " $11::jsonb, $12) ON CONFLICT (run_id) DO NOTHING",
                o.run_id, o.environment, o.procedure.value, o.from_version, o.to_version,
                o.backup, o.backup_size, o.backup_modified, list(o.done_steps), o.host_state,
                o.facts, o.put_back_refusal)

    async def keep_facts(self, run_id: int, facts: str) -> None:
        """What the run's steps learned so far (RunFacts as JSON), kept on its row."""
        await self._pool.execute("UPDATE runs SET facts = $2::jsonb WHERE id = $1", run_id, facts)

    async def facts(self, run_id: int) -> str:
        """The facts a run kept ('{}' when none)."""
        raw = await self._pool.fetchval("SELECT facts FROM runs WHERE id = $1", run_id)
        return str(raw) if raw else "{}"

    async def get(self, run_id: int) -> RecoveryOffer | None:
        row = await self._pool.fetchrow("SELECT * FROM run_recoveries WHERE run_id = $1", run_id)
        return _offer(row) if row is not None else None

    async def claim(self, run_id: int, *, choice: RecoveryChoice, by: str) -> Claim:
        """Take the offer for ``choice``: exactly one click ever moves it."""
        row = await self._pool.fetchrow(
            "UPDATE run_recoveries o SET state = 'chosen', choice = $2, chosen_by = $3,"
            " chosen_at = now() WHERE o.run_id = $1 AND (o.state = 'offered'"
            # a choice whose run never began (its rollbot died in between) is not a lock forever
            "   OR (o.state = 'chosen' AND o.continuation IS NULL"
            "       AND o.chosen_at < now() - make_interval(secs => $4)))"
            " AND ($2 <> 'put_back' OR o.put_back_refusal = '')"
            " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.environment = o.environment"
            "   AND r.id > o.run_id AND r.state <> 'refused'"
            "   AND r.continues_run IS DISTINCT FROM o.run_id)"
            " RETURNING *", run_id, choice.value, by, ABANDONED_CHOICE_S)
        if row is not None:
            return Claim(_offer(row), True)
        current = await self.get(run_id)
        return Claim(current, False, _not_offered(run_id, current, choice))

    async def release(self, run_id: int) -> None:
        """The chosen action changed nothing (refused, lock held): offer the choice again."""
        await self._pool.execute(
            "UPDATE run_recoveries SET state = 'offered', choice = NULL, chosen_by = NULL,"
            " chosen_at = NULL, continuation = NULL WHERE run_id = $1 AND state = 'chosen'",
            run_id)

    async def attach(self, run_id: int, continuation: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE runs SET continues_run = $2 WHERE id = $1",
                               continuation, run_id)
            await conn.execute("UPDATE run_recoveries SET continuation = $2 WHERE run_id = $1",
                               run_id, continuation)


def _not_offered(run_id: int, o: RecoveryOffer | None, choice: RecoveryChoice) -> str:
    if o is None:
        return (f"Run #{run_id} did not leave production down, so there is nothing to resume "
                "or put back.")
    if o.state == "chosen":
        label = o.choice.label if o.choice else "an action"
        then = f" (run #{o.continuation})" if o.continuation else ""
        return f"{o.chosen_by} already chose “{label}” for run #{run_id}{then}; it runs once."
    if o.state == "superseded":
        return (f"A later run in {o.environment} was cancelled with production down; use the "
                "buttons of that one.")
    if choice is RecoveryChoice.PUT_BACK and o.put_back_refusal:
        return o.put_back_refusal
    return (f"Another rollback ran in {o.environment} after run #{run_id}, so production is no "
            "longer as that run left it; nothing was run. Check `/rollback status` and start a "
            "fresh rollback.")


def _offer(row: asyncpg.Record) -> RecoveryOffer:
    return RecoveryOffer(
        run_id=int(row["run_id"]), environment=row["environment"],
        procedure=ProcedureName(row["procedure"]), from_version=row["from_version"],
        to_version=row["to_version"], backup=row["backup"], backup_size=row["backup_size"],
        backup_modified=row["backup_modified"], done_steps=tuple(row["done_steps"]),
        host_state=row["host_state"], facts=row["facts"],
        put_back_refusal=row["put_back_refusal"], state=row["state"],
        choice=RecoveryChoice(row["choice"]) if row["choice"] else None,
        chosen_by=row["chosen_by"], continuation=row["continuation"])


