"""The live message after a cancel: production DOWN, in plain words, with the two ways out."""

from datetime import UTC, datetime

from bot.model import ProcedureName, RunOutcome, RunStatus, StepResult, StepStatus
from handlers.blocks import Blocks
from handlers.blocks.run import LiveState, live_message
from slack_emulator.limits import block_kit_problems

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def state(*done: str, status: RunStatus = RunStatus.CANCELLED,
          procedure: ProcedureName = ProcedureName.SIMPLE, **kw: object) -> LiveState:
    steps = tuple(StepResult(key=k, title=k, status=StepStatus.SUCCEEDED, started_at=NOW,
                             finished_at=NOW) for k in done)
    s = LiveState(run_id=12, environment="production", procedure=procedure,
                     from_version="v1.2.3", to_version="v1.2.2", requested_by="U0ALICE",
                     confirmed_by=("U0ALICE",), reason="bad deploy", started_at=NOW,
                     **kw)  # type: ignore[arg-type]
    s.outcome = RunOutcome(run_id=12, status=status, steps=steps,
                           host_state="services STOPPED; compose file still names v1.2.3",
                           message="Cancelled by U0BOB before 'Switch compose file to v1.2.2'.")
    return s


def labels(blocks: Blocks) -> list[str]:
    return [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def text(blocks: Blocks) -> str:
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in blocks)


def test_cancel_after_stop_says_production_is_down_with_both_buttons() -> None:
    blocks = live_message(state("check_current", "stop_services"), now=NOW)
    assert block_kit_problems(blocks) == []
    assert blocks[0]["text"]["text"] == "🔴 Rollback cancelled: production is DOWN"
    assert ("Production is DOWN.* The host is left: services STOPPED; compose file still names "
            "v1.2.3") in text(blocks)
    assert labels(blocks) == ["Resume rollback", "Put back what ran before"]
    assert all(e.get("confirm") for b in blocks if b["type"] == "actions" for e in b["elements"])


def test_cancel_before_anything_stopped_is_as_today() -> None:
    blocks = live_message(state("check_current"), now=NOW)
    assert blocks[0]["text"]["text"].startswith("🛑 Rollback cancelled: production v1.2.3")
    assert labels(blocks) == []


def test_after_a_migration_was_rolled_back_only_resume_is_offered_and_why() -> None:
    blocks = live_message(state("stop_services", "migration_status", "migrate_down",
                                   procedure=ProcedureName.MIGRATIONS), now=NOW)
    assert labels(blocks) == ["Resume rollback"]
    assert "already rolled back a database migration" in text(blocks)


def test_a_put_back_that_is_up_but_unhealthy_says_so_and_offers_the_rollback_again() -> None:
    s = state("put_back_compose", "start_services", "confirm_services",
              status=RunStatus.FAILED, procedure=ProcedureName.PUT_BACK, continues=12,
              started_down=True)
    assert s.outcome is not None
    s.outcome = RunOutcome(
        run_id=13, status=RunStatus.FAILED,
        steps=(*s.outcome.steps, StepResult(key="wait_healthy", title="Check health",
                                            status=StepStatus.FAILED, started_at=NOW,
                                            finished_at=NOW)),
        host_state="api is back up on v1.2.3 (all services running) but NOT healthy",
        message="Step 4 'Check health' failed.")
    s.from_version, s.to_version = "v1.2.2", "v1.2.3"
    s.recovery_versions = ("v1.2.3", "v1.2.2")
    blocks = live_message(s, now=NOW)
    assert block_kit_problems(blocks) == []
    assert blocks[0]["text"]["text"] == "⚠️ v1.2.3 is back up in production but NOT healthy"
    assert labels(blocks) == ["Roll back to v1.2.2 again"]
