"""Writes a run's Rollback Report from its records: on disk, in the database, refreshed later.

One writer per change: the run finishing (a finished-hook), each scheduled check (a
VerificationSchedule hook), a verdict and an edit of Impact / Root Cause each call ``write`` (or
``fill_in``) once; the fronts only show what was written (``saved``).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.config import Runbook
from bot.errors import InvalidInput
from bot.model import Tier
from bot.post_rollback.report_markdown import ReportInputs, render_report, report_filename
from bot.post_rollback.verification import VerificationStore
from bot.redaction import redact
from bot.store.runs import Store

MAX_IMPACT = 500        # one line in the Summary
MAX_ROOT_CAUSE = 3000   # one paragraph


@dataclass(frozen=True)
class ReportNotes:
    """What people wrote into the report, and who wrote it last."""

    impact: str
    root_cause: str
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class SavedReport:
    """The report as last written: where, what, and how many writes so far."""

    path: Path
    markdown: str
    revision: int


class Reporter:
    def __init__(self, *, store: Store, directory: Path, runbook: Runbook | None = None) -> None:
        self._store = store
        self._verification = VerificationStore(store.pool)
        self._dir = directory
        self._runbook = runbook  # names a fleet's hosts (a one-host report lists none)

    def _hosts(self, environment: str) -> tuple[str, ...]:
        env = self._runbook.environments.get(environment) if self._runbook else None
        return tuple(name for name, _ in env.members) if env is not None and env.hosts else ()

    async def render(self, run_id: int) -> tuple[str, str]:
        """(file name, markdown) of the run's report as of now."""
        run = await self._store.get_run(run_id)
        if run is None:
            raise InvalidInput(f"There is no run #{run_id}.")
        pending = tuple((Tier(p["tier"]), p["due_at"])
                        for p in await self._verification.pending(run.environment)
                        if p["run_id"] == run_id)
        notes = await self.notes(run_id)
        inputs = ReportInputs(
            run=run, approved_by=await self._store.approvers(run_id),
            checks=await self._store.run_checks(run_id),
            verifications=tuple(await self._verification.results(run_id)),
            pending_checks=pending, row_counts=await self._verification.baseline(run_id),
            impact=(notes.impact if notes else "") or "unknown",
            root_cause=notes.root_cause if notes else "",
            notes_by=notes.updated_by if notes else "",
            notes_at=notes.updated_at if notes else None,
            verdicts=tuple(await self._verification.verdicts(run_id)),
            hosts=self._hosts(run.environment),
            step_states=tuple(r["host_state"] for r in await self._store.pool.fetch(
                "SELECT host_state FROM run_steps WHERE run_id = $1 ORDER BY position",
                run_id)))
        # The report is uploaded and kept: whatever reached the records, no secret leaves here.
        return report_filename(run), redact(render_report(inputs,
                                                          generated_at=datetime.now(UTC)))

    async def write(self, run_id: int) -> tuple[Path, str]:
        """Render, write atomically to ``incident_logs_dir``, keep a copy in the database."""
        name, markdown = await self.render(run_id)
        path = (self._dir / name).absolute()  # the database says where, whatever the cwd
        await asyncio.to_thread(_write_atomic, path, markdown)
        await self._store.save_report(run_id, path=str(path), markdown=markdown)
        return path, markdown

    async def saved(self, run_id: int) -> SavedReport | None:
        """The report as last written, or None if it never was."""
        row = await self._store.pool.fetchrow(
            "SELECT path, markdown, revision FROM run_reports WHERE run_id = $1", run_id)
        if row is None:
            return None
        return SavedReport(path=Path(row["path"]), markdown=row["markdown"],
                           revision=int(row["revision"]))

    async def notes(self, run_id: int) -> ReportNotes | None:
        row = await self._store.pool.fetchrow(
            "SELECT impact, root_cause, updated_by, updated_at FROM report_notes"
            " WHERE run_id = $1", run_id)
        return ReportNotes(**dict(row)) if row else None

    async def fill_in(self, run_id: int, *, impact: str | None, root_cause: str | None,
                      by: str) -> tuple[Path, str]:
        """A person writes Impact and/or Root Cause (None keeps it); the report is rewritten."""
        run = await self._store.get_run(run_id)
        problem = check_notes(impact=impact, root_cause=root_cause)
        if run is None:
            problem = f"There is no run #{run_id}; no report was changed."
        if problem:
            environment = run.environment if run else "(unknown run)"
            await self._store.audit(environment=environment, actor=by, kind="refusal",
                                    run_id=run.id if run else None,
                                    detail=f"edit report of run #{run_id}: {problem}")
            raise InvalidInput(problem)
        assert run is not None
        await self._store.pool.execute(
            "INSERT INTO report_notes (run_id, impact, root_cause, updated_by) VALUES"
            " ($1, COALESCE($2, ''), COALESCE($3, ''), $4) ON CONFLICT (run_id) DO UPDATE SET"
            " impact = COALESCE($2, report_notes.impact),"
            " root_cause = COALESCE($3, report_notes.root_cause),"
            " updated_by = $4, updated_at = now()",
            run_id, _tidy(impact), _tidy(root_cause), by)
        changed = " and ".join(name for name, value in (("Impact", impact),
                                                        ("Root Cause", root_cause))
                               if value is not None)
        await self._store.audit(environment=run.environment, actor=by, kind="report",
                                run_id=run_id, detail=f"wrote the report's {changed}")
        return await self.write(run_id)


def check_notes(*, impact: str | None, root_cause: str | None) -> str:
    """Why these notes cannot go into the report, or "" when they can."""
    if impact is None and root_cause is None:
        return "Nothing to write: give the Impact, the Root Cause, or both."
    for name, value, limit in (("The Impact", impact, MAX_IMPACT),
                               ("The Root Cause", root_cause, MAX_ROOT_CAUSE)):
        if value is not None and len(value.strip()) > limit:
            return (f"{name} is {len(value.strip())} characters long; keep it under {limit} "
                    "(link to a longer write-up instead). Nothing was changed.")
    return ""


def _tidy(text: str | None) -> str | None:
    return None if text is None else text.strip()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
