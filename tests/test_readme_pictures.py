"""The README's pictures of the Home tab and the shortcut's card are what rollbot renders.

Each picture is built from the real Block Kit builders with fixed example values, and drawn by the
Slack emulator's renderer (what a reader sees: mentions by name, links by label, buttons in
brackets). A change to the tab or the card that the README does not follow fails here; run
``python -m tests.test_readme_pictures`` to print the pictures again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.autorollback.deploys import DeployState, Quarantined
from bot.dashboard.state import (
    Dashboard,
    EnvironmentState,
    PendingCheck,
    RunningVersion,
    RunSummary,
    WatchedDeploy,
)
from bot.events import StepInfo
from bot.model import Check, ProcedureName, RollbackRequest, RunStatus
from bot.preflight import Preflight
from bot.release_before import History, choose_release_before
from bot.service import Plan
from bot.versions import parse_version
from handlers.blocks.cards import card_body
from handlers.blocks.home import home_view
from handlers.front.shortcut import NAME, with_target_source
from slack_emulator.render import render_block
from slack_emulator.state import Identity, Workspace

README = Path(__file__).resolve().parents[1] / "README.md"
AT = datetime(2026, 11, 29, 14, 5, tzinfo=UTC)
LINK = "https://azora.slack.com/archives/C0INCIDENTS/p1764425100000100"


def _workspace() -> Workspace:
    ws = Workspace(Identity())
    for uid, name in (("U0ALICE", "alice"), ("U0BOB", "bob"), ("U0CIBOT", "ci")):
        ws.add_user(uid, name)
    return ws


def _run(run_id: int, frm: str, to: str, *, status: RunStatus, by: str, ago_min: int,
         environment: str = "production") -> RunSummary:
    started = AT - timedelta(minutes=ago_min)
    return RunSummary(id=run_id, environment=environment, procedure=ProcedureName.SIMPLE,
                      status=status, requested_by=by, from_version=frm, to_version=to,
                      created_at=started,
                      finished_at=None if status is RunStatus.RUNNING else started,
                      live_message_url=LINK)


def example_dashboard() -> Dashboard:
    """Production just rolled back and under watch; staging counting down on a bad deploy."""
    production = EnvironmentState(
        name="production",
        running=RunningVersion("v1.2.2", AT - timedelta(minutes=3), "seen running"),
        active_run=None, deploys=(),
        quarantined=(Quarantined("production", "v1.2.3", "U0ALICE", "users see 500s on /api",
                                 AT - timedelta(minutes=12)),),
        pending_checks=(PendingCheck(7, 12, "extended", AT + timedelta(minutes=21)),),
        last_runs=(_run(12, "v1.2.3", "v1.2.2", status=RunStatus.SUCCEEDED, by="U0ALICE",
                        ago_min=14),))
    staging = EnvironmentState(
        name="staging",
        running=RunningVersion("v1.3.0", AT - timedelta(minutes=1), "seen running"),
        active_run=None,
        deploys=(WatchedDeploy(4, "staging", "v1.3.0", "v1.2.9", DeployState.COUNTDOWN,
                               AT + timedelta(minutes=2)),),
        quarantined=(), pending_checks=(), last_runs=())
    return Dashboard(environments=(staging, production), default_environment="production",
                     read_at=AT)


def home_tab_picture(*, may_act: bool = True) -> str:
    ws = _workspace()
    view = home_view(example_dashboard(), may_act=may_act)
    return "\n".join(line for block in view["blocks"] for line in render_block(ws, block))


def shortcut_card_picture() -> str:
    """CI's message, the shortcut, and the card rollbot posts (its facts; buttons below them)."""
    ws = _workspace()
    request = RollbackRequest(environment="production", procedure=ProcedureName.SIMPLE,
                              target=parse_version("v1.2.2"), requested_by="U0BOB",
                              reason=f"{NAME}: “Deployed v1.2.3 to production”")
    checks = (Check("Current version", True, "v1.2.3 (api)"),
              Check("Target image present", True, "azora-api:v1.2.2 on the host"),
              Check("Lock", True, "free: no rollback is running in production"))
    steps = tuple(StepInfo(index=i, key=f"step{i}", title=title, destructive=False, shows=())
                  for i, title in enumerate((  # the simple procedure's, as the spec has them
                      "Check current version", "Stop services", "Switch compose file to v1.2.2",
                      "Start services", "Wait for health", "Check service version",
                      "Confirm all services are up")))
    plan = Plan(request=request, preflight=Preflight(checks=checks, current="v1.2.3",
                                                     target="v1.2.2", backup=None),
                title="Simple rollback", steps=steps)
    found = choose_release_before(
        environment="production", image="azora-api", named=parse_version("v1.2.3"),
        history=History(deploy_previous=(("v1.2.2", AT - timedelta(hours=2)),),
                        named_known=True),
        tags=("v1.2.1", "v1.2.2", "v1.2.3"), quarantined=())
    card = card_body(with_target_source(plan, found))
    lines = ["ci: Deployed v1.2.3 to production ✅",
             "    ⋯ → Roll back this deploy   (bob)",
             "rollbot:"]
    lines += [f"  {line}" for block in card for line in render_block(ws, block)]
    lines.append("  [Roll back to v1.2.2] [Cancel]")
    return "\n".join(lines)


def test_the_readme_shows_the_home_tab_as_rollbot_renders_it() -> None:
    picture = home_tab_picture()
    assert f"```text\n{picture}\n```" in README.read_text()
    assert "[Plan a rollback] [Assess]" in picture and "[Unquarantine]" in picture


def test_the_read_only_tab_is_the_same_state_without_a_button() -> None:
    read_only = home_tab_picture(may_act=False)
    assert "[" not in read_only.replace("[Plan", "").split("# staging", 1)[1]
    assert "v1.2.2" in read_only and "users see 500s on /api" in read_only


def test_the_readme_shows_the_shortcuts_card_as_rollbot_renders_it() -> None:
    picture = shortcut_card_picture()
    assert f"```text\n{picture}\n```" in README.read_text()
    assert "the release before v1.2.3" in picture


if __name__ == "__main__":
    print(home_tab_picture(), end="\n\n")
    print(shortcut_card_picture())
