"""A dead run's live message: interrupted, the last recorded host state, the offers if down."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from slack_sdk.web.async_client import AsyncWebClient

from bot.approvals import ApprovalService
from bot.model import ProcedureName, RunRecord, RunStatus, StepResult, StepStatus
from bot.recovery.offers import interrupted_offer
from handlers.blocks.run import interrupted_message
from handlers.front.interrupted import SlackInterruptions
from slack_emulator import block_kit_problems
from tests.slack_world import button_labels, header, message_text

STOPPED = "services STOPPED; compose file still names v1.2.3"
NOW = datetime(2026, 11, 29, 3, 12, 44, tzinfo=UTC)


def step(key: str, title: str, status: StepStatus) -> StepResult:
    return StepResult(key=key, title=title, status=status, started_at=NOW, finished_at=NOW)


def dead_run(*steps: StepResult) -> RunRecord:
    return RunRecord(id=4, environment="production", procedure=ProcedureName.SIMPLE,
                     status=RunStatus.INTERRUPTED, requested_by="U0ALICE", reason="bad deploy",
                     from_version="v1.2.3", to_version="v1.2.2", backup=None, created_at=NOW,
                     finished_at=NOW, host_state=STOPPED,
                     message="Interrupted: the rollbot process running this rollback (web-1:42) "
                             "died. The host may be mid-procedure.", steps=steps)


DOWN = (step("check_current", "Check current version", StepStatus.SUCCEEDED),
        step("stop_services", "Stop services", StepStatus.SUCCEEDED),
        step("switch_version", "Switch compose file to v1.2.2", StepStatus.RUNNING))


class Slack:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    async def chat_update(self, **kw: Any) -> None:
        self.updates.append(kw)


class Shown:
    async def front_ref_for_run(self, run_id: int) -> dict[str, Any] | None:
        return {"channel": "C0INCIDENTS", "ts": "1700000000.000100"} if run_id == 4 else None


def test_the_message_says_rollbot_died_names_the_state_and_the_half_done_step() -> None:
    blocks = interrupted_message(dead_run(*DOWN), down=False)
    assert block_kit_problems(blocks, surface="message") == []
    text = "\n".join(b["text"]["text"] for b in blocks if isinstance(b.get("text"), dict))
    assert blocks[0]["text"]["text"] == "⚠️ Rollback interrupted: production v1.2.3 → v1.2.2"
    assert "✅ 2. Stop services" in text
    assert "⚠️ 3. Switch compose file to v1.2.2: was running when rollbot died" in text
    assert "The rollbot process running this rollback died" in text
    assert f"*Host state (last recorded):* {STOPPED}" in text


async def test_a_dead_run_that_left_production_down_offers_resume_and_put_back() -> None:
    run = dead_run(*DOWN)
    offer = interrupted_offer(run, host_state=STOPPED, facts="{}")
    assert offer is not None and offer.done_steps == ("check_current", "stop_services")
    slack = Slack()
    front = SlackInterruptions(client=cast(AsyncWebClient, slack),
                               approvals=cast(ApprovalService, Shown()))
    await front.interrupted(run, offer)
    [update] = slack.updates
    assert block_kit_problems(update["blocks"], surface="message") == []  # Slack takes it
    assert update["ts"] == "1700000000.000100"
    assert update["text"] == "🔴 Rollback interrupted: production is DOWN"

    class Msg:
        blocks = update["blocks"]
        text = update["text"]
    shown: Any = Msg()
    assert header(shown) == "🔴 Rollback interrupted: production is DOWN"
    assert button_labels(shown) == ["Resume rollback", "Put back what ran before"]
    assert "Production is DOWN.* The host is left: " + STOPPED in message_text(shown)


def test_no_offer_when_production_was_not_left_down_or_for_a_fleet() -> None:
    started = (*DOWN[:2], step("switch_version", "Switch", StepStatus.SUCCEEDED),
               step("start_services", "Start services", StepStatus.SUCCEEDED))
    assert interrupted_offer(dead_run(*started), host_state="up", facts="{}") is None
    assert interrupted_offer(dead_run(*DOWN[:1]), host_state="untouched", facts="{}") is None
    fleet = tuple(StepResult(**{**s.__dict__, "host": "web-1"}) for s in DOWN)
    assert interrupted_offer(dead_run(*fleet), host_state=STOPPED, facts="{}") is None
