"""After the rollback, people finish its report: Impact, Root Cause and the dashboards' verdict.

No production host is involved: the run is in rollbot's database, the report on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.model import ProcedureName, RollbackRequest, RunOutcome, RunStatus, Tier
from bot.post_rollback.report import Reporter
from bot.post_rollback.verification import VerificationStore
from bot.store.runs import Store

EXAMPLE = Path(__file__).parent / "data" / "rollbot.example.toml"


async def finished_run(store: Store) -> int:
    request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                              target=None, requested_by="U0ALICE", reason="checkout 500s")
    run_id = await store.begin_run(request, owner="test")
    await store.start_run(run_id, from_version="v1.2.3", to_version="v1.2.2", backup=None,
                          checks=())
    await store.finish_run(RunOutcome(run_id=run_id, status=RunStatus.SUCCEEDED,
                                      host_state="api runs v1.2.2", message="Rolled back."))
    return run_id


def rollbot_cli(dsn: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROLLBOT_CONFIG": str(EXAMPLE), "DATABASE_URL": dsn, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


async def revision(reporter: Reporter, run_id: int) -> int:
    saved = await reporter.saved(run_id)
    return saved.revision if saved else 0


async def test_on_call_fills_in_impact_and_root_cause_from_the_terminal(
    store: Store, tmp_path: Path
) -> None:
    run_id = await finished_run(store)
    reporter = Reporter(store=store, directory=tmp_path / "incident-logs")
    await reporter.write(run_id)  # what the run's finished-hook writes
    assert await revision(reporter, run_id) == 1

    out = rollbot_cli(store.dsn, "report", str(run_id), "--impact",
                      "about 1,200 users saw failed checkouts", "--root-cause",
                      "the v1.2.3 cache key change", "--as", "bob", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Report of run #{run_id} rewritten: " in out.stdout
    assert "- Impact: about 1,200 users saw failed checkouts" in out.stdout
    assert "## Root Cause\nthe v1.2.3 cache key change\n" in out.stdout
    assert "(last edited by cli:bob at " in out.stdout
    saved = await reporter.saved(run_id)
    assert saved is not None and saved.revision == 2  # one write for one change
    assert saved.path == (tmp_path / "incident-logs" / saved.path.name)
    assert saved.path.read_text() == saved.markdown
    assert "- Impact: about 1,200 users saw failed checkouts" in saved.markdown

    # Only the root cause this time: the impact stays as written.
    out = rollbot_cli(store.dsn, "report", str(run_id), "--root-cause",
                      "a cache key changed without a migration", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    saved = await reporter.saved(run_id)
    assert saved is not None and saved.revision == 3
    assert "- Impact: about 1,200 users saw failed checkouts" in saved.markdown
    assert "a cache key changed without a migration" in saved.markdown
    edits = [a for a in await store.audit_entries(run_id=run_id) if a.kind == "report"]
    assert [(a.actor, a.detail) for a in edits] == [
        ("cli:bob", "wrote the report's Impact and Root Cause"),
        (edits[1].actor, "wrote the report's Root Cause")]


@pytest.mark.parametrize(("args", "says"), [
    (("report", "99", "--impact", "lots"), "There is no run #99; no report was changed."),
    (("report", "{run}", "--root-cause", "x" * 3001),
     "The Root Cause is 3001 characters long; keep it under 3000"),
    (("report", "{run}", "--impact", "y" * 501), "The Impact is 501 characters long"),
])
async def test_bad_edits_are_explained_change_nothing_and_are_audited(
    store: Store, tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    run_id = await finished_run(store)
    reporter = Reporter(store=store, directory=tmp_path / "incident-logs")
    await reporter.write(run_id)
    before = await reporter.saved(run_id)
    out = rollbot_cli(store.dsn, *(a.format(run=run_id) for a in args), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in " ".join(out.stdout.split())
    assert await reporter.saved(run_id) == before
    assert await reporter.notes(run_id) is None
    refusals = [a for a in await store.audit_entries() if a.kind == "refusal"]
    assert len(refusals) == 1 and says[:30] in refusals[0].detail


async def test_dashboard_verdicts_go_into_the_report_with_who_and_when(
    store: Store, tmp_path: Path
) -> None:
    run_id = await finished_run(store)
    verification = VerificationStore(store.pool)
    reporter = Reporter(store=store, directory=tmp_path)
    assert await verification.record_verdict(run_id=run_id, check_id=0, tier=Tier.IMMEDIATE,
                                             verdict="regressed", by="U0CAROL")
    assert not await verification.record_verdict(run_id=run_id, check_id=4242,
                                                 tier=Tier.IMMEDIATE, verdict="healthy",
                                                 by="U0BOB")  # not a check of this run
    _, markdown = await reporter.write(run_id)
    [line] = [ln for ln in markdown.splitlines() if "Dashboards" in ln]
    assert line.startswith("- 👎 Dashboards: Regressed, said U0CAROL at 20")
    assert line.endswith("(on an on-demand Immediate check)")
