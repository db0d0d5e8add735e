"""Every message and modal rollbot builds is what a person needs, and within Block Kit limits."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.approvals import Pending, PendingState
from bot.config import load_runbook
from bot.engine import step_infos
from bot.model import (
    Backup,
    Check,
    ProcedureName,
    RollbackRequest,
    RunOutcome,
    RunStatus,
    StepResult,
    StepStatus,
)
from bot.preflight import Preflight
from bot.procedures.catalog import ProcedureInputs, build
from bot.service import Plan
from bot.versions import parse_version
from handlers.blocks import Blocks
from handlers.blocks.cards import card_body, card_facts, card_state, plan_message, restore_modal
from handlers.blocks.run import LiveState, eta_modal, live_message, notice_failure, notice_success
from handlers.metadata import NoticeRef
from slack_emulator.limits import block_kit_problems, modal_view_problems

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
ENV = load_runbook(Path(__file__).parent / "data" / "rollbot.example.toml").environments[
    "production"]
BACKUP = Backup(name="azora_prod_20261127T020000.sql.gz", path="/backups/x.sql.gz", size=10**6,
                modified=datetime(2026, 11, 27, 2, tzinfo=UTC))
LONG = "x" * 5000


def plan(procedure: ProcedureName, *, ok: bool = True, reason: str = "users see 500s") -> Plan:
    request = RollbackRequest(environment="production", procedure=procedure,
                              target=parse_version("v1.2.2"), requested_by="U0ALICE",
                              reason=reason)
    proc = build(procedure, ProcedureInputs(env=ENV, current="v1.2.3", target="v1.2.2",
                                            epoch=1, backup=BACKUP))
    checks = (Check("Target image present", True, "azora-api:v1.2.2 present"),
              Check("Lock", ok, "free" if ok else "held by U0BOB: run #7 since 09:58:00 UTC"))
    return Plan(request=request, preflight=Preflight(checks=checks, current="v1.2.3",
                                                     target="v1.2.2", backup=BACKUP),
                title=proc.title, steps=step_infos(proc))


def pending(p: Plan, state: PendingState = PendingState.AWAITING_CONFIRMATION) -> Pending:
    return Pending(id="abcdef0123456789", request=p.request, state=state, created_at=NOW,
                   expires_at=NOW + timedelta(minutes=15), confirmed_by="U0ALICE",
                   approved_by=None, cancelled_by=None, run_id=None, front_ref={})


def posted_card(p: Plan, pend: Pending, *, now: datetime) -> Blocks:
    """The card as the front posts it: its body, then its state (buttons, status line)."""
    return [*card_body(p), *card_state(card_facts(p), pend, now=now)]


def buttons(blocks: Blocks) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def text_of(blocks: Blocks) -> str:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out.extend(e.get("text", "") for e in b.get("elements", []) if isinstance(e.get("text"),
                                                                                   str))
    return "\n".join(out)


def test_card_shows_the_way_and_has_one_primary_button() -> None:
    blocks = posted_card(plan(ProcedureName.SIMPLE), pending(plan(ProcedureName.SIMPLE)), now=NOW)
    assert block_kit_problems(blocks) == []
    text = text_of(blocks)
    assert "Rollback production: v1.2.3 → v1.2.2" in text
    assert "users see 500s" in text and "<@U0ALICE>" in text
    assert "Stop services" in text and "✅ *Lock*: free" in text
    styles = [b.get("style") for b in buttons(blocks)]
    assert styles.count("primary") == 1
    assert [b["text"]["text"] for b in buttons(blocks)] == ["Roll back to v1.2.2", "Cancel"]


def test_card_with_the_lock_held_has_no_primary_button() -> None:
    p = plan(ProcedureName.SIMPLE, ok=False)
    blocks = posted_card(p, pending(p), now=NOW)
    assert "held by U0BOB" in text_of(blocks)
    assert all(b.get("style") != "primary" for b in buttons(blocks))
    assert [b["text"]["text"] for b in buttons(blocks)] == ["Dismiss"]


def test_restore_card_shows_the_data_loss_window_and_a_danger_button_with_confirm() -> None:
    p = plan(ProcedureName.RESTORE)
    blocks = posted_card(p, pending(p), now=NOW)
    assert "writes since 2026-11-27 02:00 UTC will be lost" in text_of(blocks)
    go = buttons(blocks)[0]
    assert go["style"] == "danger" and "confirm" in go
    assert all(b.get("style") != "primary" for b in buttons(blocks))
    waiting = posted_card(p, pending(p, PendingState.AWAITING_SECOND_APPROVAL), now=NOW)
    assert [b["text"]["text"] for b in buttons(waiting)] == ["Approve restore", "Cancel"]
    assert block_kit_problems(waiting) == []


def test_emergency_card_says_so() -> None:
    p = plan(ProcedureName.EMERGENCY)
    assert "EMERGENCY" in text_of(posted_card(p, pending(p), now=NOW))


def test_expired_and_cancelled_cards_have_no_buttons() -> None:
    p = plan(ProcedureName.SIMPLE)
    assert buttons(posted_card(p, pending(p), now=NOW + timedelta(minutes=16))) == []
    cancelled = Pending(**{**pending(p).__dict__, "state": PendingState.CANCELLED,
                           "cancelled_by": "U0BOB"})
    assert buttons(posted_card(p, cancelled, now=NOW)) == []


def test_user_text_cannot_mention_everyone_or_forge_links() -> None:
    p = plan(ProcedureName.SIMPLE, reason="<!channel> see <https://evil|docs>")
    text = text_of(posted_card(p, pending(p), now=NOW))
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text


def live_state(steps: int = 13) -> LiveState:
    p = plan(ProcedureName.RESTORE)
    state = LiveState(run_id=12, environment="production", procedure=ProcedureName.RESTORE,
                         from_version="v1.2.3", to_version="v1.2.2", requested_by="U0ALICE",
                         confirmed_by=("U0ALICE", "U0BOB"), reason=LONG, started_at=NOW,
                         steps=list(p.steps[:steps]))
    return state


def test_live_message_stays_within_limits_even_with_huge_output() -> None:
    s = live_state()
    for i in range(len(s.steps)):
        s.status[i] = StepStatus.SUCCEEDED
        s.took[i] = 1.5
    s.status[5] = StepStatus.FAILED
    s.failure = "step 6 'Restore': " + LONG
    s.failure_tail = LONG + "```"
    s.host_state = LONG
    s.outcome = RunOutcome(run_id=12, status=RunStatus.FAILED, host_state=LONG, message=LONG,
                           steps=(StepResult("k", "t", StepStatus.FAILED, NOW, NOW),))
    blocks = live_message(s, now=NOW + timedelta(seconds=30))
    assert block_kit_problems(blocks) == []
    assert len(blocks) <= 50


def test_live_message_while_running_offers_cancel() -> None:
    s = live_state()
    s.status[0] = StepStatus.SUCCEEDED
    s.took[0] = 0.4
    s.status[1] = StepStatus.RUNNING
    s.began[1] = NOW
    blocks = live_message(s, now=NOW + timedelta(seconds=3))
    text = text_of(blocks)
    assert "✅ 1. Check current version (0.4 s)" in text
    assert "⏳ 2. Verify backup integrity (3 s…)" in text
    assert [b["text"]["text"] for b in buttons(blocks)] == ["Cancel run"]


def test_notices() -> None:
    ok = notice_success(version="v1.2.2", eta="TBD", run_id=12)
    assert ("Rollback completed. Service restored to v1.2.2. Investigating root cause. "
            "ETA for fix: TBD") in text_of(ok)
    assert block_kit_problems(ok) == []
    failed = notice_failure(RunOutcome(run_id=12, status=RunStatus.FAILED,
                                          host_state="services STOPPED", message="Step 4 failed",
                                          to_version="v1.2.2"), environment="production")
    assert [b["text"]["text"] for b in buttons(failed)] == [
        "Emergency rollback to v1.2.2", "Restore database from backup"]
    assert block_kit_problems(failed) == []


@pytest.mark.parametrize("procedure", [p for p in ProcedureName
                                       if p is not ProcedureName.PUT_BACK])  # not planned
def test_plan_message_lists_every_command(procedure: ProcedureName) -> None:
    p = plan(procedure)
    blocks = plan_message(p)
    assert block_kit_problems(blocks) == []
    assert "docker-compose.yml down" in text_of(blocks)


def test_modals_are_valid() -> None:
    assert modal_view_problems(restore_modal(pending_id="abcdef0123456789",
                                                database="azora_prod",
                                                environment="production")) == []
    notice = NoticeRef(run=12, channel="C0INCIDENTS", ts="1795776389.866742")
    assert modal_view_problems(eta_modal(notice=notice, current="TBD")) == []


def test_a_migrations_card_names_what_migrate_down_undoes_and_waits_for_a_second_person() -> None:
    p = plan(ProcedureName.MIGRATIONS)
    p = replace(p, preflight=replace(p.preflight, migrations=(
        "004_add_orders_index (applied 2026-11-27 01:00:00+00)",)))
    card = posted_card(p, pending(p), now=NOW)
    assert block_kit_problems(card) == []
    assert ("`migrate_down` undoes `004_add_orders_index (applied 2026-11-27 01:00:00+00)`"
            in text_of(card))
    assert "coordinate with the DBA" in text_of(card)
    assert "coordinate with the DBA" in text_of(plan_message(p))
    waiting = card_state(card_facts(p), pending(p, PendingState.AWAITING_SECOND_APPROVAL),
                            now=NOW)
    assert block_kit_problems(waiting) == []
    assert "confirmed the migration rollback. *Waiting for a second approver*" in text_of(
        waiting)
    assert [b["text"]["text"] for b in buttons(waiting)] == ["Approve migration rollback",
                                                             "Cancel"]
    # a simple rollback has no such warning
    assert "DBA" not in text_of(posted_card(plan(ProcedureName.SIMPLE),
                                        pending(plan(ProcedureName.SIMPLE)), now=NOW))
