"""Writes a run's Rollback Report from its records: on disk, in the database, refreshed later."""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bot.errors import InvalidInput
from bot.model import Tier
from bot.redaction import redact
from bot.report import ReportInputs, render_report, report_filename
from bot.store import Store
from bot.verification import VerificationStore


class Reporter:
    def __init__(self, *, store: Store, directory: Path) -> None:
        self._store = store
        self._verification = VerificationStore(store.pool)
        self._dir = directory

    async def render(self, run_id: int) -> tuple[str, str]:
        """(file name, markdown) of the run's report as of now."""
        run = await self._store.get_run(run_id)
        if run is None:
            raise InvalidInput(f"There is no run #{run_id}.")
        pending = tuple((Tier(p["tier"]), p["due_at"])
                        for p in await self._verification.pending(run.environment)
                        if p["run_id"] == run_id)
        inputs = ReportInputs(
            run=run, approved_by=await self._store.approvers(run_id),
            checks=await self._store.run_checks(run_id),
            verifications=tuple(await self._verification.results(run_id)),
            pending_checks=pending, row_counts=await self._verification.baseline(run_id))
        # The report is uploaded and kept: whatever reached the records, no secret leaves here.
        return report_filename(run), redact(render_report(inputs,
                                                          generated_at=datetime.now(UTC)))

    async def write(self, run_id: int) -> tuple[Path, str]:
        """Render, write atomically to ``incident_logs_dir``, keep a copy in the database."""
        name, markdown = await self.render(run_id)
        path = self._dir / name
        await asyncio.to_thread(_write_atomic, path, markdown)
        await self._store.save_report(run_id, path=str(path), markdown=markdown)
        return path, markdown


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
