"""The home tab's Block Kit, pure: every section, buttons only for allowed people, ≤100 blocks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.autorollback.deploys import DeployState, Quarantined
from bot.dashboard import (
    Dashboard,
    EnvironmentState,
    PendingCheck,
    RunningVersion,
    RunSummary,
    WatchedDeploy,
)
from bot.model import ProcedureName, RunStatus
from handlers.blocks.home import MAX_HOME_BLOCKS, home_view, parse_plan_form
from handlers.ids import Action, HomeAction, HomeBlock, HomeField
from slack_emulator import Emulator, home_view_problems

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def run(run_id: int, env: str, status: RunStatus = RunStatus.SUCCEEDED) -> RunSummary:
    return RunSummary(id=run_id, environment=env, procedure=ProcedureName.SIMPLE, status=status,
                      requested_by="U0ALICE", from_version="v1.2.3", to_version="v1.2.2",
                      created_at=NOW, finished_at=None if status is RunStatus.RUNNING else NOW,
                      live_message_url=f"https://slack.com/archives/C0INCIDENTS/p{run_id}")


def environment(name: str, *, busy: bool = False, quarantined: int = 1) -> EnvironmentState:
    return EnvironmentState(
        name=name, running=RunningVersion("v1.2.2", NOW, "seen running"),
        active_run=run(99, name, RunStatus.RUNNING) if busy else None,
        deploys=(WatchedDeploy(id=7, environment=name, version="v1.2.4",
                               previous_version="v1.2.2", state=DeployState.COUNTDOWN,
                               deadline=NOW + timedelta(seconds=30)),) if busy else (),
        quarantined=tuple(Quarantined(name, f"v1.2.{3 + i}", "U0BOB", "rolled back", NOW)
                          for i in range(quarantined)),
        pending_checks=(PendingCheck(check_id=1, run_id=1, tier="immediate",
                                     due_at=NOW + timedelta(minutes=5)),),
        last_runs=tuple(run(i, name) for i in range(5, 0, -1)))


def text_of(view: dict[str, object]) -> str:
    return str(view)


def buttons(view: dict[str, object]) -> list[str]:
    found = []
    for block in view["blocks"]:  # type: ignore[attr-defined]
        elements = block.get("elements", []) if block["type"] == "actions" else []
        accessory = [block["accessory"]] if "accessory" in block else []
        # the numbers after an action_id keep it unique in the view; the listener ignores them
        found += [re.sub(r"(\.[0-9]+)+$", "", e["action_id"])
                  for e in [*elements, *accessory] if e["type"] == "button"]
    return found


def test_every_section_with_buttons_for_an_allowed_person() -> None:
    board = Dashboard(environments=(environment("production", busy=True),),
                      default_environment="production", read_at=NOW)
    view = home_view(board, may_act=True)
    shown = text_of(view)
    for words in ("*Runs now:* `v1.2.2`", "🔒 rollback #99", "|live message>", "Countdown",
                  "`v1.2.3` by <@U0BOB>", "Immediate check of rollback #1 due",
                  "*Last 5 runs:*", "#5 v1.2.3 → v1.2.2"):
        assert words in shown, words
    assert buttons(view) == [HomeAction.PLAN, HomeAction.ASSESS, Action.AUTO_ROLL_BACK_NOW,
                             Action.AUTO_CANCEL, HomeAction.UNQUARANTINE]
    assert home_view_problems(view) == []


def test_someone_not_allowed_sees_the_same_state_without_a_button() -> None:
    board = Dashboard(environments=(environment("production", busy=True),),
                      default_environment="production", read_at=NOW)
    allowed, not_allowed = home_view(board, may_act=True), home_view(board, may_act=False)
    assert buttons(not_allowed) == []
    assert "Read-only" in text_of(not_allowed)
    for words in ("🔒 rollback #99", "Countdown", "`v1.2.3` by <@U0BOB>", "*Last 5 runs:*"):
        assert words in text_of(not_allowed) and words in text_of(allowed)


async def test_many_environments_stay_within_100_blocks_and_say_what_was_left_out() -> None:
    envs = tuple(environment(f"env{i:03d}", busy=i % 7 == 0, quarantined=8)
                 for i in range(400))
    board = Dashboard(environments=envs, default_environment="env000", read_at=NOW)
    view = home_view(board, may_act=True)
    assert len(view["blocks"]) <= MAX_HOME_BLOCKS
    assert home_view_problems(view) == []
    shown = text_of(view)
    assert "more environments, in short" in shown and "Left out (no room in the tab)" in shown
    assert "Also quarantined:" in shown  # more than five quarantined versions: one line
    # Slack (the emulator, over HTTP) takes it as it is
    async with Emulator(token="xoxb-t") as emu:
        emu.add_user("U0ALICE", "alice")
        answer = await AsyncWebClient(token="xoxb-t", base_url=emu.api_url).views_publish(
            user_id="U0ALICE", view=view)
        assert answer["ok"]
    fewer = home_view(Dashboard(environments=envs[:20], default_environment="env000",
                                read_at=NOW), may_act=False)
    assert len(fewer["blocks"]) <= MAX_HOME_BLOCKS and "Left out" not in text_of(fewer)
    assert "more environments, in short" in text_of(fewer)


def test_the_plan_form_is_checked_field_by_field() -> None:
    def values(version: str, reason: str = "v1.2.3 fails health") -> dict[str, object]:
        return {
            HomeBlock.PLAN_ENVIRONMENT.value: {HomeField.ENVIRONMENT.value: {
                "type": "static_select", "selected_option": {"value": "production"}}},
            HomeBlock.PLAN_VERSION.value: {HomeField.VERSION.value: {"value": version}},
            HomeBlock.PLAN_PROCEDURE.value: {HomeField.PROCEDURE.value: {
                "type": "static_select", "selected_option": {"value": "simple"}}},
            HomeBlock.PLAN_REASON.value: {HomeField.REASON.value: {"value": reason}},
        }
    form, errors = parse_plan_form(values("v1.2.2"))
    assert errors == {} and form is not None and str(form.target) == "v1.2.2"
    form, _ = parse_plan_form(values("previous"))
    assert form is not None and form.target is None
    form, errors = parse_plan_form(values("1.2.2; rm -rf /", reason=""))
    assert form is None
    assert "is not a release version" in errors[HomeBlock.PLAN_VERSION.value]
    assert HomeBlock.PLAN_REASON.value in errors
