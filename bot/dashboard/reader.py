"""Reads the dashboard from the database in a few set-based queries, and its fingerprint in one.

The fingerprint is what every replica polls (about once a second): a change made by any replica
(a run starting, a quarantine lifted, a check done) changes it, so the home tabs are republished
without in-process hooks. It hashes only what the tab shows, at the precision it shows it (a
sighting to the minute), so a busy host does not republish every second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from bot.autorollback.deploys import DeployState, Quarantined
from bot.dashboard.state import (
    LAST_RUNS,
    OPEN_DEPLOY_STATES,
    Dashboard,
    EnvironmentState,
    PendingCheck,
    RunningVersion,
    RunSummary,
    WatchedDeploy,
)
from bot.model import ProcedureName, RunStatus

_OPEN = [s.value for s in OPEN_DEPLOY_STATES]
_ACTIVE = [RunStatus.PREFLIGHT.value, RunStatus.RUNNING.value]

_FINGERPRINT = """
SELECT md5(concat_ws('|',
  (SELECT concat(max(id), ':', max(finished_at), ':', count(live_message_url), ':',
                 string_agg(id || state, ',' ORDER BY id) FILTER (WHERE state = ANY($2::text[])))
     FROM runs),
  (SELECT string_agg(id || state || coalesce(deadline::text, ''), ',' ORDER BY id)
     FROM deploys WHERE state = ANY($1::text[])),
  (SELECT string_agg(environment || '/' || version || '/' || at, ',' ORDER BY environment, version)
     FROM quarantine),
  (SELECT string_agg(id || '/' || due_at, ',' ORDER BY id)
     FROM verification_checks WHERE state = 'pending'),
  (SELECT string_agg(environment || '/' || version || '/' || date_trunc('minute', last_seen), ','
                     ORDER BY environment)
     FROM (SELECT DISTINCT ON (environment) environment, version, last_seen
             FROM version_sightings ORDER BY environment, last_seen DESC) s)
))
"""


class DashboardReader:
    """The dashboard's reads; ``environments`` is the runbook's list, default first."""

    def __init__(self, pool: asyncpg.Pool, *, environments: Sequence[str],
                 default_environment: str) -> None:
        self._pool = pool
        self._environments = tuple(environments)
        self._default = default_environment

    async def fingerprint(self) -> str:
        """A hash of everything the tab shows: equal hashes, equal tabs."""
        return str(await self._pool.fetchval(_FINGERPRINT, _OPEN, _ACTIVE))

    async def read(self) -> Dashboard:
        async with self._pool.acquire() as conn:
            sightings = await conn.fetch(
                "SELECT DISTINCT ON (environment) environment, version, last_seen"
                " FROM version_sightings ORDER BY environment, last_seen DESC")
            runs = await conn.fetch(
                "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY environment"
                " ORDER BY created_at DESC, id DESC) AS n FROM runs) r"
                " WHERE n <= $1 OR state = ANY($2::text[]) ORDER BY created_at DESC, id DESC",
                LAST_RUNS, _ACTIVE)
            deploys = await conn.fetch(
                "SELECT id, environment, version, previous_version, state, deadline"
                " FROM deploys WHERE state = ANY($1::text[]) ORDER BY id", _OPEN)
            quarantine = await conn.fetch("SELECT * FROM quarantine ORDER BY at DESC")
            checks = await conn.fetch(
                "SELECT id, run_id, environment, tier, due_at FROM verification_checks"
                " WHERE state = 'pending' ORDER BY due_at")
            now = await conn.fetchval("SELECT now()")
        states = []
        for env in self._environments:
            summaries = [_summary(r) for r in runs if r["environment"] == env]
            active = next((r for r in summaries if r.active), None)
            last = tuple(r for r in summaries if r.id != (active.id if active else 0))
            seen = next((s for s in sightings if s["environment"] == env), None)
            states.append(EnvironmentState(
                name=env, running=_running(seen, last), active_run=active,
                deploys=tuple(WatchedDeploy(id=d["id"], environment=env, version=d["version"],
                                            previous_version=d["previous_version"],
                                            state=DeployState(d["state"]),
                                            deadline=d["deadline"])
                              for d in deploys if d["environment"] == env),
                quarantined=tuple(Quarantined(q["environment"], q["version"], q["by"],
                                              q["reason"], q["at"])
                                  for q in quarantine if q["environment"] == env),
                pending_checks=tuple(PendingCheck(check_id=c["id"], run_id=c["run_id"],
                                                  tier=c["tier"], due_at=c["due_at"])
                                     for c in checks if c["environment"] == env),
                last_runs=last[:LAST_RUNS]))
        # Where something needs eyes first; otherwise the runbook's order, default first.
        order = {name: i for i, name in enumerate(self._environments)}
        states.sort(key=lambda s: (not s.busy, s.name != self._default, order[s.name]))
        return Dashboard(environments=tuple(states), default_environment=self._default,
                         read_at=now if isinstance(now, datetime) else datetime.now(UTC))


def _summary(r: asyncpg.Record) -> RunSummary:
    return RunSummary(id=int(r["id"]), environment=r["environment"],
                      procedure=ProcedureName(r["procedure"]), status=RunStatus(r["state"]),
                      requested_by=r["requested_by"], from_version=r["from_version"],
                      to_version=r["to_version"], created_at=r["created_at"],
                      finished_at=r["finished_at"], live_message_url=r["live_message_url"])


def _running(seen: asyncpg.Record | None, runs: Sequence[RunSummary]) -> RunningVersion | None:
    """What the host was seen running, unless a rollback to another version ended since then."""
    done = next((r for r in runs if r.status is RunStatus.SUCCEEDED and r.to_version
                 and r.finished_at), None)
    if seen is not None and (done is None or done.finished_at is None
                             or seen["version"] == done.to_version
                             or seen["last_seen"] >= done.finished_at):
        return RunningVersion(version=seen["version"], seen_at=seen["last_seen"],
                              source="seen running")
    if done is not None and done.to_version and done.finished_at:
        return RunningVersion(version=done.to_version, seen_at=done.finished_at,
                              source="rolled back to")
    return None
