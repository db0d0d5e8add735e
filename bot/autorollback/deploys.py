"""Deploys announced by CI (watch and countdown state) and the quarantine of rolled-back versions.

Every state change is a conditional UPDATE: the countdown's timer, a "Roll back now" click and
another replica cannot start two rollbacks for one deploy. The watch and the countdown move the
deploy only while their replica holds its lease (``leases.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg


class DeployState(StrEnum):
    WATCHING = "watching"
    HEALTHY = "healthy"
    COUNTDOWN = "countdown"
    OFFERED = "offered"  # CI's failure report, untrusted: buttons only, no countdown
    ROLLING_BACK = "rolling_back"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


@dataclass(frozen=True)
class Deploy:
    id: int
    environment: str
    version: str
    previous_version: str
    stage: str
    commit: str
    actor: str
    run_url: str
    state: DeployState
    detail: str
    deadline: datetime | None
    decided_by: str | None
    front_ref: dict[str, Any]


@dataclass(frozen=True)
class Quarantined:
    environment: str
    version: str
    by: str
    reason: str
    at: datetime


class DeployStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, *, environment: str, version: str, previous_version: str,
                     stage: str, commit: str, actor: str, run_url: str) -> tuple[Deploy, bool]:
        """The deploy, and whether it is new (the same deploy sent twice is watched once)."""
        row = await self._pool.fetchrow(
            "INSERT INTO deploys (environment, version, previous_version, stage, commit, actor,"
            " run_url, state) VALUES ($1, $2, $3, $4, $5, $6, $7, 'watching')"
            " ON CONFLICT DO NOTHING RETURNING *",
            environment, version, previous_version, stage, commit, actor, run_url)
        if row is not None:
            return _deploy(row), True
        row = await self._pool.fetchrow(
            "SELECT * FROM deploys WHERE environment = $1 AND version = $2 AND"
            " previous_version = $3 AND stage = $4 AND commit = $5",
            environment, version, previous_version, stage, commit)
        return _deploy(row), False

    async def get(self, deploy_id: int) -> Deploy:
        row = await self._pool.fetchrow("SELECT * FROM deploys WHERE id = $1", deploy_id)
        if row is None:
            raise LookupError(f"no deploy #{deploy_id}")
        return _deploy(row)

    async def find(self, *, environment: str, version: str, previous_version: str, stage: str,
                   commit: str) -> Deploy | None:
        """The deploy already received with these facts, if any."""
        row = await self._pool.fetchrow(
            "SELECT * FROM deploys WHERE environment = $1 AND version = $2 AND"
            " previous_version = $3 AND stage = $4 AND commit = $5",
            environment, version, previous_version, stage, commit)
        return _deploy(row) if row else None

    async def last_deployed(self, environment: str, *, other_than: str = "") -> str | None:
        """The version of the newest deploy CI reported as deployed and not rolled back."""
        return await self._pool.fetchval(  # type: ignore[no-any-return]
            "SELECT version FROM deploys WHERE environment = $1 AND stage = 'deployed' AND"
            " state <> 'rolled_back' AND version <> $2 ORDER BY created_at DESC, id DESC"
            " LIMIT 1", environment, other_than)

    async def set_front_ref(self, deploy_id: int, front_ref: dict[str, Any]) -> None:
        await self._pool.execute("UPDATE deploys SET front_ref = $2::jsonb WHERE id = $1",
                                 deploy_id, json.dumps(front_ref))

    async def move(self, deploy_id: int, frm: tuple[DeployState, ...], to: DeployState, *,
                   detail: str | None = None, by: str | None = None,
                   countdown_s: float | None = None, holder: str | None = None) -> bool:
        """Change state only from one of ``frm`` (and, given ``holder``, only while it holds
        the deploy's lease); True when this call made the change."""
        row = await self._pool.fetchval(
            "UPDATE deploys SET state = $3, detail = COALESCE($4, detail),"
            " decided_by = COALESCE($5, decided_by),"
            " deadline = CASE WHEN $6::float8 IS NULL THEN deadline"
            " ELSE now() + make_interval(secs => $6::float8) END"
            " WHERE id = $1 AND state = ANY($2::text[])"
            " AND ($7::text IS NULL OR lease_holder = $7) RETURNING true",
            deploy_id, [s.value for s in frm], to.value, detail, by, countdown_s, holder)
        return bool(row)

    async def countdown_left(self, deploy_id: int) -> float | None:
        """Seconds until the countdown's deadline (negative: past it), by the database's clock."""
        left = await self._pool.fetchval(
            "SELECT EXTRACT(EPOCH FROM deadline - now()) FROM deploys WHERE id = $1", deploy_id)
        return None if left is None else float(left)

    async def watch_left(self, deploy_id: int, *, watch_s: float) -> tuple[float, bool]:
        """Seconds left of the watch, and whether it starts now (its end was not set yet)."""
        row = await self._pool.fetchrow(
            "WITH old AS (SELECT watch_until FROM deploys WHERE id = $1)"
            " UPDATE deploys SET watch_until = COALESCE(deploys.watch_until,"
            " now() + make_interval(secs => $2::float8)) FROM old WHERE id = $1"
            " RETURNING EXTRACT(EPOCH FROM deploys.watch_until - now()) AS left,"
            " old.watch_until IS NULL AS fresh", deploy_id, watch_s)
        assert row is not None, f"no deploy #{deploy_id}"
        return float(row["left"]), bool(row["fresh"])

    async def attach_run(self, deploy_id: int, run_id: int) -> None:
        await self._pool.execute("UPDATE deploys SET run_id = $2 WHERE id = $1",
                                 deploy_id, run_id)

    async def first_sighting(self, signature: str) -> bool:
        """True the first time a (fresh, valid) signature is seen by any process."""
        async with self._pool.acquire() as conn, conn.transaction():
            # Signatures older than the 5-minute freshness window can never be valid again.
            await conn.execute("DELETE FROM hook_signatures WHERE seen_at < now() - interval"
                               " '15 minutes'")
            return bool(await conn.fetchval(
                "INSERT INTO hook_signatures (signature) VALUES ($1) ON CONFLICT DO NOTHING"
                " RETURNING true", signature))

    # --- quarantine -----------------------------------------------------------------------

    async def quarantine(self, *, environment: str, version: str, by: str, reason: str,
                         run_id: int | None) -> None:
        await self._pool.execute(
            "INSERT INTO quarantine (environment, version, by, reason, run_id) VALUES"
            " ($1, $2, $3, $4, $5) ON CONFLICT (environment, version) DO UPDATE SET"
            " by = EXCLUDED.by, reason = EXCLUDED.reason, at = now(), run_id = EXCLUDED.run_id",
            environment, version, by, reason, run_id)

    async def quarantined(self, environment: str, version: str) -> Quarantined | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM quarantine WHERE environment = $1 AND version = $2",
            environment, version)
        return Quarantined(row["environment"], row["version"], row["by"], row["reason"],
                           row["at"]) if row else None

    async def quarantined_in(self, environment: str) -> list[Quarantined]:
        """Every quarantined version of the environment ("previous" skips them)."""
        rows = await self._pool.fetch(
            "SELECT * FROM quarantine WHERE environment = $1 ORDER BY at", environment)
        return [Quarantined(r["environment"], r["version"], r["by"], r["reason"], r["at"])
                for r in rows]

    async def lift(self, environment: str, version: str) -> bool:
        return bool(await self._pool.fetchval(
            "DELETE FROM quarantine WHERE environment = $1 AND version = $2 RETURNING true",
            environment, version))


def _deploy(row: asyncpg.Record) -> Deploy:
    return Deploy(id=row["id"], environment=row["environment"], version=row["version"],
                  previous_version=row["previous_version"], stage=row["stage"],
                  commit=row["commit"], actor=row["actor"], run_url=row["run_url"],
                  state=DeployState(row["state"]), detail=row["detail"],
                  deadline=row["deadline"], decided_by=row["decided_by"],
                  front_ref=json.loads(row["front_ref"]))
