"""Signed requests already taken, shared by every rollbot process through the database.

The ack path asks ``first_sighting`` once per signed request: an indexed insert into an unlogged
table. Requests that arrive together share one insert (one round trip for the batch), so 50
concurrent senders do not queue behind one another for the pool's connections. It runs on the ack
path's own event loop, so it has a small pool of its own (asyncpg pools belong to the loop that
made them); ``prune`` runs periodically, never on the ack path.
"""

from __future__ import annotations

import asyncio

import asyncpg

from bot.errors import StoreError

# A request is fresh for 5 minutes either side of its timestamp: its signature can come back for
# up to 10 minutes after it was first seen, and never after.
KEEP_S = 600


class SeenSignatures:
    """The ``slack_replays`` table: owns its pool; whoever opens it closes it."""

    def __init__(self, pool: asyncpg.Pool, *, parallel: int = 2) -> None:
        self._pool = pool
        self._parallel = parallel  # batches in flight at once: one per pooled connection
        self._waiting: dict[str, list[asyncio.Future[bool]]] = {}
        self._flushers: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, dsn: str, *, size: int = 2) -> SeenSignatures:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, timeout=10,
                                             command_timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"cannot reach the rollbot database: {exc}") from None
        return cls(pool, parallel=size)

    async def close(self) -> None:
        await self._pool.close()

    async def first_sighting(self, signature: str) -> bool:
        """True the first time any process sees ``signature``; False for a replay."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(signature, []).append(answer)
        if len(self._flushers) < self._parallel:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await answer

    async def _flush(self) -> None:
        """Insert what is waiting, one batch per round trip, until nothing waits."""
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                rows = await self._pool.fetch(
                    "INSERT INTO slack_replays (signature) SELECT unnest($1::text[])"
                    " ON CONFLICT DO NOTHING RETURNING signature", list(batch))
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                error = StoreError(f"cannot reach the rollbot database: {exc}")
                for w in (w for waiters in batch.values() for w in waiters if not w.done()):
                    w.set_exception(error)
                continue
            new = {r["signature"] for r in rows}
            for signature, waiters in batch.items():
                for i, w in enumerate(waiters):  # the same one twice at once: one is first
                    if not w.done():
                        w.set_result(signature in new and i == 0)

    async def prune(self, *, keep_s: float = KEEP_S) -> int:
        """Forget signatures older than ``keep_s``; how many were forgotten."""
        status = await self._pool.execute(
            "DELETE FROM slack_replays WHERE seen_at < now() - make_interval(secs => $1)",
            float(keep_s))
        return int(str(status).rsplit(" ", 1)[-1])
