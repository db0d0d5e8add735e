"""The spec's Rollback Checklist (Pre / During / Post) for one run.

Items rollbot did itself are ticked from the run's own records (steps, pre-flight, notices,
verification); the human items are ticked by people. The list itself is data, in the spec's words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from bot.model import Check, ProcedureName, RunRecord, StepStatus, Tier, VerificationResult


@dataclass(frozen=True)
class Item:
    key: str
    phase: str     # Pre-Rollback | During Rollback | Post-Rollback
    text: str      # the spec's words
    human: bool    # ticked by a person; otherwise rollbot ticks it from its records


ITEMS: tuple[Item, ...] = (
    Item("critical", "Pre-Rollback", "Verify issue is critical enough to warrant rollback", True),
    Item("notify_before", "Pre-Rollback", "Notify stakeholders", True),
    Item("backup", "Pre-Rollback", "Verify backup exists and is recent", False),
    Item("reason", "Pre-Rollback", "Document reason for rollback", False),
    Item("previous", "Pre-Rollback", "Identify previous stable version", False),
    Item("procedure", "Pre-Rollback", "Have rollback procedure ready", False),
    Item("ssh", "Pre-Rollback", "Ensure SSH access to production", False),
    Item("stop", "During Rollback", "Stop services", False),
    Item("config", "During Rollback", "Update configuration", False),
    Item("restore", "During Rollback", "Restore database (if needed)", False),
    Item("start", "During Rollback", "Start services", False),
    Item("wait", "During Rollback", "Wait for services to start", False),
    Item("health", "During Rollback", "Test health endpoint", False),
    Item("errors", "During Rollback", "Monitor error rates", False),
    Item("healthy", "Post-Rollback", "Verify all services healthy", False),
    Item("monitor30", "Post-Rollback", "Monitor for 30 minutes", False),
    Item("notify_after", "Post-Rollback", "Notify stakeholders", False),
    Item("document", "Post-Rollback", "Document incident", False),
    Item("rca", "Post-Rollback", "Begin root cause analysis", True),
    Item("plan_fix", "Post-Rollback", "Plan fix and re-deployment", True),
    Item("postmortem", "Post-Rollback", "Schedule post-mortem", True),
)
HUMAN_KEYS = frozenset(i.key for i in ITEMS if i.human)
_STEP_ITEMS = {"stop": "stop_services", "config": "switch_version", "start": "start_services",
               "wait": "wait_healthy", "health": "wait_healthy", "healthy": "confirm_services"}


@dataclass(frozen=True)
class Tick:
    key: str
    done_by: str
    done_at: datetime
    automatic: bool


def automatic_ticks(run: RunRecord, *, checks: tuple[Check, ...], notified: bool,
                    documented: bool, verifications: tuple[VerificationResult, ...]
                    ) -> dict[str, str]:
    """Which items the records show as done, with a note saying by what."""
    done: dict[str, str] = {}
    ok_checks = {c.name for c in checks if c.ok}
    steps = {s.key: s for s in run.steps if s.status is StepStatus.SUCCEEDED}
    if "Backup integrity" in ok_checks or "Backup exists" in ok_checks:
        done["backup"] = "pre-flight checked the backup"
    if run.reason:
        done["reason"] = f"reason: {run.reason[:80]}"
    if run.to_version:
        done["previous"] = f"target {run.to_version}"
    if run.steps:
        done["procedure"] = f"procedure {run.procedure.value}"
    if "Host reachable" in ok_checks:
        done["ssh"] = "SSH connected, host key verified"
    for key, step in _STEP_ITEMS.items():
        if step in steps:
            done[key] = f"step '{steps[step].title}'"
    if run.procedure is not ProcedureName.RESTORE and "config" in done:
        done["restore"] = "not needed for this procedure"
    elif "restore_backup" in steps:
        done["restore"] = "restored from the backup"
    tiers = {v.tier for v in verifications if v.ok}
    if Tier.IMMEDIATE in tiers:
        done["errors"] = "immediate verification green"
    if Tier.EXTENDED in tiers:
        done["monitor30"] = "extended verification (30 min) green"
    if notified:
        done["notify_after"] = "stakeholder notice posted"
    if documented:
        done["document"] = "rollback report written"
    return done


class ChecklistStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ticks(self, run_id: int) -> dict[str, Tick]:
        rows = await self._pool.fetch("SELECT * FROM checklist_ticks WHERE run_id = $1", run_id)
        return {r["key"]: Tick(r["key"], r["done_by"], r["done_at"], r["automatic"])
                for r in rows}

    async def tick_automatic(self, run_id: int, done: dict[str, str]) -> None:
        for key, note in done.items():
            await self._pool.execute(
                "INSERT INTO checklist_ticks (run_id, key, done_by, automatic) VALUES"
                " ($1, $2, $3, true) ON CONFLICT DO NOTHING", run_id, key, f"rollbot ({note})")

    async def toggle(self, run_id: int, key: str, *, by: str) -> bool:
        """A person ticks or unticks a human item; returns whether it is now ticked."""
        if key not in HUMAN_KEYS:
            raise ValueError(f"'{key}' is ticked by rollbot, not by hand")
        deleted = await self._pool.fetchval(
            "DELETE FROM checklist_ticks WHERE run_id = $1 AND key = $2 RETURNING true",
            run_id, key)
        if deleted:
            return False
        await self._pool.execute(
            "INSERT INTO checklist_ticks (run_id, key, done_by, automatic) VALUES"
            " ($1, $2, $3, false) ON CONFLICT DO NOTHING", run_id, key, by)
        return True

    async def save_message(self, run_id: int, front_ref: dict[str, Any]) -> None:
        await self._pool.execute(
            "INSERT INTO checklist_messages (run_id, front_ref) VALUES ($1, $2::jsonb)"
            " ON CONFLICT (run_id) DO UPDATE SET front_ref = EXCLUDED.front_ref",
            run_id, json.dumps(front_ref))

    async def message(self, run_id: int) -> dict[str, Any] | None:
        raw = await self._pool.fetchval(
            "SELECT front_ref FROM checklist_messages WHERE run_id = $1", run_id)
        return json.loads(raw) if raw is not None else None
