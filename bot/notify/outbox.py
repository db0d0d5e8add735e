"""The outbox table (migration 0017): events written when they happen, claimed for delivery.

Every change is conditional: a row is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease, so two
replicas never send it at once, and its outcome is recorded only by the lease's holder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from bot.notify.notices import Notice


@dataclass(frozen=True)
class Delivery:
    """One claimed row: an event for one webhook, and how many tries it had before."""

    id: int
    event_id: str
    event: str
    url: str
    environment: str
    run_id: int | None
    payload: dict[str, Any]
    attempts: int


class Outbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, notice: Notice, urls: list[str]) -> int:
        """Write ``notice`` once per webhook (again for the same happening: nothing); new rows."""
        if not urls:
            return 0
        run_id = notice.run.id if notice.run is not None else None
        rows = await self._pool.fetch(
            "INSERT INTO notify_outbox (event_id, event, dedupe_key, url, environment, run_id,"
            " payload) SELECT $1, $2, $3, u, $5, $6, $7::jsonb FROM unnest($4::text[]) AS u"
            " ON CONFLICT (dedupe_key, url) DO NOTHING RETURNING id",
            notice.id, notice.event, notice.key, urls, notice.environment, run_id,
            json.dumps(notice.payload()))
        return len(rows)

    async def claim(self, *, holder: str, urls: list[str], lease_s: float,
                    limit: int = 10) -> list[Delivery]:
        """Due rows for ``urls`` nobody holds (or whose holder's lease ran out), now ours."""
        rows = await self._pool.fetch(
            "UPDATE notify_outbox SET lease_holder = $1,"
            " lease_until = now() + make_interval(secs => $2::float8)"
            " WHERE id IN (SELECT id FROM notify_outbox WHERE state = 'pending'"
            " AND next_attempt_at <= now() AND url = ANY($3::text[])"
            " AND (lease_until IS NULL OR lease_until < now())"
            " ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, event_id, event, url, environment, run_id, payload, attempts",
            holder, lease_s, urls, limit)
        return sorted((Delivery(id=r["id"], event_id=r["event_id"], event=r["event"],
                                url=r["url"], environment=r["environment"],
                                run_id=r["run_id"], payload=json.loads(r["payload"]),
                                attempts=r["attempts"]) for r in rows), key=lambda d: d.id)

    async def delivered(self, row_id: int, *, holder: str, status: int) -> bool:
        return await self._finish(row_id, holder=holder, state="delivered", status=status,
                                  error="")

    async def gave_up(self, row_id: int, *, holder: str, status: int | None,
                      error: str) -> bool:
        return await self._finish(row_id, holder=holder, state="gave_up", status=status,
                                  error=error)

    async def _finish(self, row_id: int, *, holder: str, state: str, status: int | None,
                      error: str) -> bool:
        return bool(await self._pool.fetchval(
            "UPDATE notify_outbox SET state = $3, attempts = attempts + 1, last_status = $4,"
            " last_error = $5, finished_at = now(), lease_until = NULL"
            " WHERE id = $1 AND lease_holder = $2 AND state = 'pending' RETURNING true",
            row_id, holder, state, status, error))

    async def retry_later(self, row_id: int, *, holder: str, after_s: float,
                          status: int | None, error: str) -> bool:
        """A failed try: the row is due again in ``after_s`` seconds, for any replica."""
        return bool(await self._pool.fetchval(
            "UPDATE notify_outbox SET attempts = attempts + 1, last_status = $3,"
            " last_error = $4, lease_until = NULL,"
            " next_attempt_at = now() + make_interval(secs => $5::float8)"
            " WHERE id = $1 AND lease_holder = $2 AND state = 'pending' RETURNING true",
            row_id, holder, status, error, after_s))

    async def release_held(self, *, holder: str) -> None:
        """Hand back every row ``holder`` claimed and did not finish: due again at once."""
        await self._pool.execute(
            "UPDATE notify_outbox SET lease_until = NULL WHERE lease_holder = $1"
            " AND state = 'pending' AND lease_until IS NOT NULL", holder)

    async def due_count(self, urls: list[str], *, holder: str) -> int:
        """Rows due now for ``urls`` that nobody else is sending."""
        return int(await self._pool.fetchval(
            "SELECT count(*) FROM notify_outbox WHERE state = 'pending'"
            " AND url = ANY($1::text[]) AND next_attempt_at <= now()"
            " AND (lease_until IS NULL OR lease_until < now() OR lease_holder = $2)",
            urls, holder))

    async def prune(self, *, keep_days: float) -> int:
        """Forget events delivered or given up more than ``keep_days`` ago; how many."""
        rows = await self._pool.fetch(
            "DELETE FROM notify_outbox WHERE state <> 'pending'"
            " AND finished_at < now() - make_interval(secs => $1::float8) RETURNING id",
            keep_days * 86400)
        return len(rows)
