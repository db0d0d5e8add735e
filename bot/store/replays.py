"""Signed requests already taken, shared by every rollbot process through the database.

The ack path asks ``first_sighting`` once per signed request: one indexed insert into an unlogged
table. It runs on the ack path's own event loop, so it has a small pool of its own (asyncpg pools
belong to the loop that made them); ``prune`` runs periodically, never on the ack path.
"""

from __future__ import annotations

import asyncpg

from bot.errors import StoreError

# A request is fresh for 5 minutes either side of its timestamp: its signature can come back for
# up to 10 minutes after it was first seen, and never after.
KEEP_S = 600


class SeenSignatures:
    """The ``slack_replays`` table: owns its pool; whoever opens it closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, *, size: int = 2) -> SeenSignatures:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, timeout=10,
                                             command_timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"cannot reach the rollbot database: {exc}") from None
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def first_sighting(self, signature: str) -> bool:
        """True the first time any process sees ``signature``; False for a replay."""
        try:
            return bool(await self._pool.fetchval(
                "INSERT INTO slack_replays (signature) VALUES ($1) ON CONFLICT DO NOTHING"
                " RETURNING true", signature))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"cannot reach the rollbot database: {exc}") from None

    async def prune(self, *, keep_s: float = KEEP_S) -> int:
        """Forget signatures older than ``keep_s``; how many were forgotten."""
        status = await self._pool.execute(
            "DELETE FROM slack_replays WHERE seen_at < now() - make_interval(secs => $1)",
            float(keep_s))
        return int(str(status).rsplit(" ", 1)[-1])
