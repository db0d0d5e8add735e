"""Where each run's live message is in a front (Slack), and its permalink."""

from __future__ import annotations

import asyncpg


async def set_live_message(pool: asyncpg.Pool, run_id: int, *, channel: str, ts: str,
                           url: str | None) -> None:
    """Record it on the run; ``RunRecord.live_message_url`` reads it back."""
    await pool.execute(
        "UPDATE runs SET live_channel = $2, live_ts = $3, live_message_url = $4 WHERE id = $1",
        run_id, channel, ts, url)
