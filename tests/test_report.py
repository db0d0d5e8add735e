"""After a rollback, on-call files the spec's Rollback Report; rollbot writes it from records."""

from datetime import UTC, datetime, timedelta

import pytest

from bot.model import (
    Check,
    ProcedureName,
    RunRecord,
    RunStatus,
    StepResult,
    StepStatus,
    Tier,
    VerificationItem,
    VerificationResult,
)
from bot.post_rollback.report_markdown import ReportInputs, render_report, report_filename

T0 = datetime(2026, 11, 27, 3, 14, 0, tzinfo=UTC)  # 1795749240 seconds since the epoch
BACKUP = "azora_prod_20261127T020000.sql.gz"


def ok(key: str, title: str, at: float, took: float, summary: str = "") -> StepResult:
    start = T0 + timedelta(seconds=at)
    return StepResult(key=key, title=title, status=StepStatus.SUCCEEDED, started_at=start,
                      finished_at=start + timedelta(seconds=took), summary=summary)


def failed(key: str, title: str, at: float, took: float, error: str) -> StepResult:
    start = T0 + timedelta(seconds=at)
    return StepResult(key=key, title=title, status=StepStatus.FAILED, started_at=start,
                      finished_at=start + timedelta(seconds=took), error=error)


def skipped(key: str, title: str) -> StepResult:
    return StepResult(key=key, title=title, status=StepStatus.SKIPPED, started_at=None,
                      finished_at=None)


def run_record(**changes: object) -> RunRecord:
    base: dict[str, object] = dict(
        id=42, environment="production", procedure=ProcedureName.SIMPLE,
        status=RunStatus.SUCCEEDED, requested_by="U0ALICE",
        reason="checkout returns 500s\nsince the v1.2.3 deploy | see #incidents",
        from_version="v1.2.3", to_version="v1.2.2", backup=None, created_at=T0,
        finished_at=T0 + timedelta(seconds=72),
        host_state="api runs v1.2.2, healthy, all services up",
        message="Rolled back to v1.2.2: api runs v1.2.2, healthy, all services up.",
        steps=SIMPLE_STEPS)
    base.update(changes)
    return RunRecord(**base)  # type: ignore[arg-type]


def inputs(run: RunRecord, **changes: object) -> ReportInputs:
    base: dict[str, object] = dict(
        run=run, approved_by=("U0BOB", "cli:carol"), checks=PREFLIGHT, verifications=(),
        pending_checks=(), row_counts={})
    base.update(changes)
    return ReportInputs(**base)  # type: ignore[arg-type]


def lines(text: str) -> list[str]:
    return text.splitlines()


SIMPLE_STEPS = (
    ok("check_current", "Check current version", 1, 0.4, "api runs v1.2.3"),
    ok("stop_services", "Stop services", 2, 3.2, "3 containers stopped"),
    ok("switch_version", "Switch compose file to v1.2.2", 6, 0.3, "image: azora-api:v1.2.2"),
    ok("start_services", "Start services", 7, 4.1),
    ok("wait_healthy", "Wait for health", 12, 38.5, "200 after 4 attempts"),
    ok("verify_version", "Check service version", 51, 0.2, "reports v1.2.2"),
    ok("confirm_services", "Confirm all services are up", 52, 0.6, "3 of 3 services Up"),
)
PREFLIGHT = (
    Check("Current version", True, "api runs v1.2.3"),
    Check("Target version", True, "v1.2.2 is on the host (built 1 day ago)"),
)

GOLDEN_SIMPLE = """\
# Rollback Report

## Summary
- Deployment version: v1.2.3
- Rollback to version: v1.2.2
- Timestamp: 2026-11-27T03:14:00Z
- Duration: 1 min 12 s
- Impact: about 1,200 users saw failed checkouts
- Run: #42
- Environment: production
- Procedure: simple — Procedure 1: Simple Service Rollback (No Data Changes)
- Outcome: succeeded
- Host state: api runs v1.2.2, healthy, all services up
- Requested by: U0ALICE
- Approved by: U0BOB, cli:carol
- Reason: checkout returns 500s since the v1.2.3 deploy | see #incidents
- Backup used: none (this procedure restores no data)
- Rollbot's final message: Rolled back to v1.2.2: api runs v1.2.2, healthy, all services up.

## Root Cause
[Describe what went wrong]

## Resolution
Rolled back production from v1.2.3 to v1.2.2 with Procedure 1 (simple service rollback, \
no data changes); it succeeded in 1 min 12 s.

## Pre-flight
- ✅ Current version: api runs v1.2.3
- ✅ Target version: v1.2.2 is on the host (built 1 day ago)

## Steps
| # | Step | Result | Duration | Note |
|---|---|---|---|---|
| 1 | Check current version | ✅ succeeded | 0.4 s | api runs v1.2.3 |
| 2 | Stop services | ✅ succeeded | 3.2 s | 3 containers stopped |
| 3 | Switch compose file to v1.2.2 | ✅ succeeded | 0.3 s | image: azora-api:v1.2.2 |
| 4 | Start services | ✅ succeeded | 4.1 s |  |
| 5 | Wait for health | ✅ succeeded | 38.5 s | 200 after 4 attempts |
| 6 | Check service version | ✅ succeeded | 0.2 s | reports v1.2.2 |
| 7 | Confirm all services are up | ✅ succeeded | 0.6 s | 3 of 3 services Up |

## Verification
None yet; 3 still due.
- ⏳ Immediate check: due 2026-11-27T03:20:12Z, not run yet
- ⏳ Extended check: due 2026-11-27T03:45:12Z, not run yet
- ⏳ Comprehensive check: due 2026-11-27T05:15:12Z, not run yet

## Row counts
Not counted.

## Next Steps
- [ ] Root cause analysis
- [ ] Fix implementation
- [ ] Testing
- [ ] Re-deployment

_Generated by rollbot at 2026-11-27T03:16:00Z from the records of run #42. Impact and Root \
Cause are what people wrote; everything else comes from the records._
"""


def test_a_succeeded_simple_rollback_reads_as_the_spec_template_filled_in() -> None:
    done = T0 + timedelta(seconds=72)
    report = render_report(
        inputs(run_record(), impact="about 1,200 users saw failed checkouts",
               pending_checks=((Tier.EXTENDED, done + timedelta(minutes=30)),
                               (Tier.IMMEDIATE, done + timedelta(minutes=5)),
                               (Tier.COMPREHENSIVE, done + timedelta(minutes=120)))),
        generated_at=T0 + timedelta(minutes=2))
    assert report == GOLDEN_SIMPLE


def test_the_template_lines_come_first_and_in_the_spec_order() -> None:
    text = lines(render_report(inputs(run_record()), generated_at=T0))
    assert text[:8] == [
        "# Rollback Report",
        "",
        "## Summary",
        "- Deployment version: v1.2.3",
        "- Rollback to version: v1.2.2",
        "- Timestamp: 2026-11-27T03:14:00Z",
        "- Duration: 1 min 12 s",
        "- Impact: unknown",
    ]
    headings = [ln for ln in text if ln.startswith("#")]
    assert headings == ["# Rollback Report", "## Summary", "## Root Cause", "## Resolution",
                        "## Pre-flight", "## Steps", "## Verification", "## Row counts",
                        "## Next Steps"]
    assert text[-7:-2] == ["## Next Steps", "- [ ] Root cause analysis",
                           "- [ ] Fix implementation", "- [ ] Testing", "- [ ] Re-deployment"]


def test_the_file_is_named_as_in_the_spec_from_when_the_run_began() -> None:
    assert report_filename(run_record()) == "rollback-1795749240.md"
    naive = run_record(created_at=datetime(2026, 11, 27, 3, 14))  # taken as UTC, not local
    assert report_filename(naive) == "rollback-1795749240.md"


RESTORE_STEPS = (
    ok("check_current", "Check current version", 1, 0.5, "api runs v1.2.3"),
    ok("verify_backup", "Verify backup integrity", 2, 8.0, f"{BACKUP} is complete"),
    ok("stop_services", "Stop services", 11, 3.0),
    ok("safety_backup", "Create safety backup of current database", 15, 20.0,
       "azora_prod_pre-restore_1795749255.sql.gz, 41 MB"),
    ok("drop_database", "Drop database azora_prod", 36, 0.7),
    ok("create_database", "Create database azora_prod", 37, 0.4),
    failed("restore_backup", f"Restore {BACKUP}", 38, 33.5,
           "psql exited 3: ERROR:  relation \"orders\" already exists | line 812."),
    skipped("verify_restore", "Verify restore (row counts)"),
    skipped("switch_version", "Switch compose file to v1.2.2"),
    skipped("start_services", "Start services"),
    skipped("wait_healthy", "Wait for health"),
    skipped("verify_version", "Check service version"),
    skipped("confirm_services", "Confirm all services are up"),
)
RESTORE_LEFT = ("uncertain: 'Restore azora_prod_20261127T020000.sql.gz' failed part-way and may "
                "be half done (before it: services STOPPED; database azora_prod created empty)")


def failed_restore() -> RunRecord:
    return run_record(
        id=43, procedure=ProcedureName.RESTORE, status=RunStatus.FAILED, backup=BACKUP,
        reason="orders table corrupted", finished_at=T0 + timedelta(seconds=125),
        host_state=RESTORE_LEFT, steps=RESTORE_STEPS,
        message=f"Step 7 'Restore {BACKUP}' failed: psql exited 3. The host is left: "
                f"{RESTORE_LEFT}. Next: re-run the restore, or restore the safety backup.")


def test_a_failed_restore_says_what_failed_and_the_state_it_left() -> None:
    text = lines(render_report(inputs(failed_restore()), generated_at=T0))
    assert "- Procedure: restore — Procedure 3: Full Database Restore from Backup" in text
    assert f'- Outcome: failed at step 7 ("Restore {BACKUP}")' in text
    assert f"- Host state: {RESTORE_LEFT}" in text
    assert f"- Backup used: {BACKUP}" in text
    assert "- Duration: 2 min 5 s" in text
    resolution = text[text.index("## Resolution") + 1]
    assert resolution == (
        f"Tried to roll back production from v1.2.3 to v1.2.2 with Procedure 3 (full database "
        f"restore from {BACKUP}); it failed after 2 min 5 s at step 7 of 13, \"Restore {BACKUP}\":"
        f" psql exited 3: ERROR: relation \"orders\" already exists | line 812. "
        f"The host is left: {RESTORE_LEFT}.")
    assert text[text.index("## Next Steps") + 1] == (
        f'First: this rollback did not succeed (failed at step 7 ("Restore {BACKUP}")), so '
        "production is not confirmed on v1.2.2; see Resolution.")


def test_the_steps_table_shows_the_error_of_the_failed_step_and_what_never_ran() -> None:
    text = lines(render_report(inputs(failed_restore()), generated_at=T0))
    table = text[text.index("## Steps") + 1:text.index("## Verification") - 1]
    assert len(table) == 2 + 13
    assert table[0] == "| # | Step | Result | Duration | Note |"
    assert table[5] == ("| 4 | Create safety backup of current database | ✅ succeeded | 20.0 s | "
                        "azora_prod_pre-restore_1795749255.sql.gz, 41 MB |")
    assert table[8] == (f"| 7 | Restore {BACKUP} | ❌ failed | 33.5 s | psql exited 3: ERROR: "
                        "relation \"orders\" already exists \\| line 812. |")
    assert table[9] == "| 8 | Verify restore (row counts) | ⏭️ skipped | — | not run |"
    assert table[-1] == "| 13 | Confirm all services are up | ⏭️ skipped | — | not run |"


def test_verification_lists_each_check_its_items_and_what_is_still_due() -> None:
    done = T0 + timedelta(seconds=72)
    immediate = VerificationResult(
        run_id=42, tier=Tier.IMMEDIATE, due_at=done + timedelta(minutes=5),
        ran_at=done + timedelta(minutes=5, seconds=0.4), late_s=0.4,
        items=(VerificationItem("Services Up", True, "all 3 services Up; api runs v1.2.2"),
               VerificationItem("Health", True, "https://azora.world/health → 200")))
    extended = VerificationResult(
        run_id=42, tier=Tier.EXTENDED, due_at=done + timedelta(minutes=30),
        ran_at=done + timedelta(minutes=31, seconds=30), late_s=90.0,
        items=(VerificationItem("Error logs", False,
                                "2 error line(s) since the rollback, e.g.\napi | ERROR timeout"),
               VerificationItem("Row counts", True, "users 1204, orders 5310")))
    report = render_report(
        inputs(run_record(), verifications=(extended, immediate),
               pending_checks=((Tier.COMPREHENSIVE, done + timedelta(minutes=120)),),
               row_counts={"users": 1204, "orders": 5310}),
        generated_at=T0 + timedelta(hours=1))
    text = lines(report)
    section = text[text.index("## Verification"):text.index("## Row counts") - 1]
    assert section == [
        "## Verification",
        "2 checks ran, 1 failed; 1 still due.",
        "- ✅ Immediate check: due 2026-11-27T03:20:12Z, ran 2026-11-27T03:20:12Z, on time",
        "  - ✅ Services Up: all 3 services Up; api runs v1.2.2",
        "  - ✅ Health: https://azora.world/health → 200",
        "- ❌ Extended check: due 2026-11-27T03:45:12Z, ran 2026-11-27T03:46:42Z, "
        "late by 1 min 30 s",
        "  - ❌ Error logs: 2 error line(s) since the rollback, e.g. api | ERROR timeout",
        "  - ✅ Row counts: users 1204, orders 5310",
        "- ⏳ Comprehensive check: due 2026-11-27T05:15:12Z, not run yet",
    ]
    counts = text[text.index("## Row counts"):text.index("## Next Steps") - 1]
    assert counts == ["## Row counts", "| Table | Rows |", "|---|---|", "| users | 1204 |",
                      "| orders | 5310 |"]


def test_no_verification_at_all_says_none_yet() -> None:
    text = lines(render_report(inputs(run_record()), generated_at=T0))
    assert text[text.index("## Verification") + 1] == "None yet."
    assert text[text.index("## Verification") + 2] == ""


def test_a_refused_run_says_nothing_changed_and_which_check_said_no() -> None:
    run = run_record(status=RunStatus.REFUSED, steps=(), finished_at=T0 + timedelta(seconds=3),
                     host_state="unchanged",
                     message="Refused by pre-flight, nothing was changed. No backup found.")
    checks = (Check("Current version", True, "api runs v1.2.3"),
              Check("Backup", False, "no azora_prod_*.sql.gz in /backups"))
    text = lines(render_report(inputs(run, checks=checks), generated_at=T0))
    assert "- Outcome: refused by pre-flight; nothing was changed" in text
    assert "- ❌ Backup: no azora_prod_*.sql.gz in /backups" in text
    assert text[text.index("## Steps") + 1] == "No step ran."
    assert text[text.index("## Resolution") + 1] == (
        "A rollback of production from v1.2.3 to v1.2.2 with Procedure 1 (simple service "
        "rollback, no data changes) was refused before any step; nothing was changed. "
        "Failed pre-flight checks: Backup: no azora_prod_*.sql.gz in /backups.")


def test_a_cancelled_run_says_how_far_it_got() -> None:
    steps = (*SIMPLE_STEPS[:2], *(skipped(s.key, s.title) for s in SIMPLE_STEPS[2:]))
    left = "services STOPPED; compose file still names v1.2.3"
    run = run_record(status=RunStatus.CANCELLED, steps=steps, host_state=left,
                     finished_at=T0 + timedelta(seconds=6))
    text = lines(render_report(inputs(run), generated_at=T0))
    assert '- Outcome: cancelled before step 3 ("Switch compose file to v1.2.2")' in text
    assert text[text.index("## Resolution") + 1] == (
        "A rollback of production from v1.2.3 to v1.2.2 with Procedure 1 (simple service "
        "rollback, no data changes) was cancelled after 2 of 7 steps and 0 min 6 s, before "
        'step 3 of 7, "Switch compose file to v1.2.2". The host is left: ' + left + ".")


def test_an_emergency_run_still_unhealthy_points_to_a_full_restore() -> None:
    steps = (ok("stop_services", "Stop services", 1, 2.0),
             failed("wait_healthy", "Verify immediately", 4, 60.0,
                    "https://azora.world/health answered 502 for 60 s."))
    run = run_record(procedure=ProcedureName.EMERGENCY, status=RunStatus.RESTORE_RECOMMENDED,
                     steps=steps, host_state="api runs v1.2.2 but is unhealthy")
    text = lines(render_report(inputs(run), generated_at=T0))
    assert ('- Outcome: service still unhealthy at step 2 ("Verify immediately"); '
            "full restore recommended") in text
    assert text[text.index("## Resolution") + 1].endswith(
        "The spec's next move is Procedure 3: Full Database Restore from Backup.")


def test_a_run_still_going_has_no_duration_yet() -> None:
    run = run_record(status=RunStatus.RUNNING, finished_at=None, steps=SIMPLE_STEPS[:3])
    text = lines(render_report(inputs(run), generated_at=T0))
    assert "- Duration: not finished" in text
    assert "- Outcome: in progress" in text


@pytest.mark.parametrize("evil", [
    "users see 500s\n\n## Next Steps\n- [x] Root cause analysis",
    "line one\r\nline two\u2028# heading",
])
def test_what_people_typed_cannot_add_headings_or_lines(evil: str) -> None:
    plain = render_report(inputs(run_record()), generated_at=T0)
    report = render_report(inputs(run_record(reason=evil), impact=evil, root_cause=evil),
                           generated_at=T0)
    assert len(lines(report)) == len(lines(plain))
    assert [ln for ln in lines(report) if ln.startswith("#")] == \
           [ln for ln in lines(plain) if ln.startswith("#")]
    assert "- [x]" not in "".join(ln[:5] for ln in lines(report))


@pytest.mark.parametrize(("root_cause", "written"), [
    ("# the cache key changed", "\\# the cache key changed"),
    ("<!-- migration 0042 dropped an index", "\\<!-- migration 0042 dropped an index"),
    ("1. bad deploy 2. no canary", "1\\. bad deploy 2. no canary"),
    ("- a bullet", "\\- a bullet"),
    ("```", "\\```"),
    ("* * *", "\\* * *"),
    ("3.5 s of latency, *then* 502s", "3.5 s of latency, *then* 502s"),  # nothing to escape
    ("#42 reverted the index", "#42 reverted the index"),
    ("A cache key\nchanged in v1.2.3.", "A cache key changed in v1.2.3."),
])
def test_a_written_root_cause_stays_one_plain_paragraph(root_cause: str, written: str) -> None:
    text = lines(render_report(inputs(run_record(), root_cause=root_cause), generated_at=T0))
    assert text[text.index("## Root Cause") + 1] == written
    assert text[text.index("## Root Cause") + 2] == ""


def test_pipes_in_step_titles_and_table_names_are_escaped() -> None:
    run = run_record(steps=(ok("x", "grep a|b", 0, 1.0, "found a|b"),))
    text = lines(render_report(inputs(run, row_counts={"odd|name": 3}), generated_at=T0))
    assert "| 1 | grep a\\|b | ✅ succeeded | 1.0 s | found a\\|b |" in text
    assert "| odd\\|name | 3 |" in text


def test_dashboard_verdicts_appear_under_their_check_with_who_and_when() -> None:
    from bot.model import Verdict

    done = T0 + timedelta(seconds=72)
    due = done + timedelta(minutes=5)
    immediate = VerificationResult(
        run_id=42, tier=Tier.IMMEDIATE, due_at=due, ran_at=due, late_s=0.0,
        items=(VerificationItem("Health", True, "https://azora.world/health → 200"),))
    verdicts = (
        Verdict(run_id=42, tier=Tier.IMMEDIATE, verdict="healthy", by="U0BOB",
                at=due + timedelta(minutes=2), check_due_at=due),
        Verdict(run_id=42, tier=Tier.IMMEDIATE, verdict="regressed", by="U0CAROL",
                at=due + timedelta(minutes=9), check_due_at=None),
    )
    text = lines(render_report(inputs(run_record(), verifications=(immediate,),
                                      verdicts=verdicts), generated_at=T0 + timedelta(hours=1)))
    section = text[text.index("## Verification"):text.index("## Row counts") - 1]
    assert section == [
        "## Verification",
        "1 check ran, all passed.",
        "- ✅ Immediate check: due 2026-11-27T03:20:12Z, ran 2026-11-27T03:20:12Z, on time",
        "  - ✅ Health: https://azora.world/health → 200",
        "  - 👍 Dashboards: Healthy, said U0BOB at 2026-11-27T03:22:12Z",
        "- 👎 Dashboards: Regressed, said U0CAROL at 2026-11-27T03:29:12Z (on an on-demand "
        "Immediate check)",
    ]


def test_who_last_wrote_impact_and_root_cause_is_in_the_footer() -> None:
    report = render_report(inputs(run_record(), impact="checkout down for 25 min",
                                  root_cause="the v1.2.3 cache key change", notes_by="U0BOB",
                                  notes_at=T0 + timedelta(minutes=40)), generated_at=T0)
    text = lines(report)
    assert "- Impact: checkout down for 25 min" in text
    assert text[text.index("## Root Cause") + 1] == "the v1.2.3 cache key change"
    assert text[-1] == (
        "_Generated by rollbot at 2026-11-27T03:14:00Z from the records of run #42. Impact and "
        "Root Cause are what people wrote (last edited by U0BOB at 2026-11-27T03:54:00Z); "
        "everything else comes from the records._")
