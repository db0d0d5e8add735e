"""After a rollback, for the fronts: its notice and ETA, checks, verdicts, report and checklist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.errors import InvalidInput
from bot.model import RunRecord, RunStatus, Tier, VerificationResult
from bot.post_rollback.checklist import ChecklistStore, Tick, automatic_ticks
from bot.post_rollback.report import Reporter, ReportNotes
from bot.post_rollback.schedule import VerificationSchedule
from bot.store.runs import Store


class FollowUp:
    """Reads and records what follows a run; a front only renders what this returns."""

    def __init__(self, *, store: Store, verifier: VerificationSchedule, reporter: Reporter,
                 default_environment: str) -> None:
        self._store = store
        self._verifier = verifier
        self._reporter = reporter
        self._checklist = ChecklistStore(store.pool)
        self._default_env = default_environment

    # --- the stakeholder notice and its ETA ---------------------------------------------

    async def save_notice(self, run_id: int, *, front_ref: dict[str, Any]) -> None:
        await self._store.save_notice(run_id, front_ref=front_ref)

    async def eta(self, run_id: int) -> str:
        return await self._store.eta(run_id)

    async def set_eta(self, run_id: int, *, eta: str, by: str,
                      front_ref: dict[str, Any]) -> RunRecord | None:
        """Record the fix ETA of a successful run; None (nothing recorded) for any other."""
        record = await self._store.get_run(run_id)
        if record is None or record.status is not RunStatus.SUCCEEDED:
            return None
        await self._store.set_eta(run_id, eta=eta, by=by, front_ref=front_ref)
        return record

    # --- verification checks and the dashboards' verdict --------------------------------

    async def pending_checks(self, environment: str) -> list[dict[str, Any]]:
        return await self._verifier.store.pending(environment)

    async def check_now(self, run_id: int, tier: Tier) -> tuple[VerificationResult, RunRecord]:
        return await self._verifier.check_now(run_id, tier)

    async def record_verdict(self, *, run_id: int, check_id: int, tier: Tier, verdict: str,
                             by: str) -> tuple[Path, str]:
        """A person's Healthy/Regressed, audited; the report is rewritten with it.

        Raises InvalidInput (audited) when the check is not one of the run's.
        """
        if not await self._verifier.store.record_verdict(
                run_id=run_id, check_id=check_id, tier=tier, verdict=verdict, by=by):
            reason = f"Check {check_id} is not one of rollback #{run_id}'s; nothing recorded."
            await self._store.audit(environment=self._default_env, actor=by, kind="refusal",
                                    detail=f"verdict {verdict}: {reason}")
            raise InvalidInput(reason)
        await self._store.audit(environment=self._default_env, actor=by, kind="verdict",
                                run_id=run_id, detail=f"{tier.value} check: {verdict}")
        return await self._reporter.write(run_id)

    # --- the report ----------------------------------------------------------------------

    async def report_for_thread(self, run_id: int) -> tuple[Path, str]:
        """The report as last written (written now if its writer failed)."""
        saved = await self._reporter.saved(run_id)
        if saved is None:  # its writer failed (logged there): the thread still gets one
            return await self._reporter.write(run_id)
        return saved.path, saved.markdown

    async def report_notes(self, run_id: int) -> ReportNotes | None:
        return await self._reporter.notes(run_id)

    async def fill_in_report(self, run_id: int, *, impact: str | None, root_cause: str | None,
                             by: str) -> tuple[Path, str]:
        return await self._reporter.fill_in(run_id, impact=impact, root_cause=root_cause, by=by)

    # --- the checklist -------------------------------------------------------------------

    async def checklist(self, run_id: int) -> dict[str, Tick] | None:
        """The run's checklist, with what rollbot did ticked; None when there is no such run."""
        run = await self._store.get_run(run_id)
        if run is None:
            return None
        done = automatic_ticks(
            run, checks=await self._store.run_checks(run_id),
            notified=await self._store.notice_posted(run_id),
            documented=await self._store.report(run_id) is not None,
            verifications=tuple(await self._verifier.store.results(run_id)))
        await self._checklist.tick_automatic(run_id, done)
        return await self._checklist.ticks(run_id)

    async def toggle(self, run_id: int, item: str, *, by: str) -> bool:
        """A person ticks or unticks a human item (InvalidInput for one rollbot ticks)."""
        try:
            return await self._checklist.toggle(run_id, item, by=by)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    async def checklist_message(self, run_id: int) -> dict[str, Any] | None:
        return await self._checklist.message(run_id)

    async def save_checklist_message(self, run_id: int, front_ref: dict[str, Any]) -> None:
        await self._checklist.save_message(run_id, front_ref)
